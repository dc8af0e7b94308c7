"""Reports of one analysis for the hospital's systems and people: DICOM SEG and SR, HL7 v2 ORU, FHIR R4,
a MIP, a PDF and its DICOM Encapsulated PDF. `writer.write_reports` writes them all; each module builds
one object and raises `errors.ReportError` when the analysis lacks what that object needs.

Nothing here touches the network or the database: `engine` delivers what these modules write.
"""
