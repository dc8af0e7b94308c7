"""The PDF report as a DICOM Encapsulated PDF, so the PACS shows it beside the images.

highdicom 0.28 has no Encapsulated PDF class, so the IOD (PS3.3 A.45.1) is assembled with pydicom:
Patient and General Study copied from the PET, Encapsulated Document Series (modality DOC), General and SC
Equipment, Encapsulated Document and SOP Common. Its UIDs derive from the analysis like the SEG's and SR's;
its creation time and character set follow the SEG's and SR's rule (`stamp`).
"""
from __future__ import annotations

from datetime import datetime

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian

from neuropetrix.analysis.results import AnalysisResult
from neuropetrix.dicom_uids import sign_file_meta
from neuropetrix.reports.errors import require
from neuropetrix.reports.seg import MANUFACTURER, software_version
from neuropetrix.reports.source import site_zone
from neuropetrix.reports.stamp import settle_charset, stamp_created
from neuropetrix.reports.uids import derived_uid
from neuropetrix.reports.version import AUTOMATIC, ResultVersion

SERIES_NUMBER = 903
_COPIED = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
           "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
           "AccessionNumber", "StudyDescription")
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")


def build_encapsulated_pdf(result: AnalysisResult, source: Dataset, pdf: bytes,
                           references: list[Dataset], now: datetime | None = None,
                           version: ResultVersion = AUTOMATIC) -> FileDataset:
    """An Encapsulated PDF instance of `pdf` in the study of `source`; `references` are the SR/SEG it
    summarises (Source Instance Sequence)."""
    require(pdf.startswith(b"%PDF-"), "the report is not a PDF document")
    require(source.get("StudyInstanceUID") == result.study_instance_uid,
            "the source dataset is not from the analysed study")
    zone = site_zone(source)
    now = (now or datetime.now(zone)).astimezone(zone)
    sop_instance_uid = derived_uid(result, "pdf", "instance", *version.uid_suffix)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sign_file_meta(meta)
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = sop_instance_uid
    for keyword in _TYPE2:
        setattr(ds, keyword, None)
    for keyword in _COPIED:
        if keyword in source:
            setattr(ds, keyword, source[keyword].value)
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = derived_uid(result, "pdf", "series")
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = "NeuroPETRIX PET report"
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MANUFACTURER
    ds.SoftwareVersions = software_version(result)
    ds.ConversionType = "WSD"
    ds.InstanceNumber = version.version
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = None
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = "PET/CT quantitative report"
    ds.ConceptNameCodeSequence = Sequence()
    ds.SourceInstanceSequence = Sequence()
    for ref in references:
        item = Dataset()
        item.ReferencedSOPClassUID = ref.SOPClassUID
        item.ReferencedSOPInstanceUID = ref.SOPInstanceUID
        ds.SourceInstanceSequence.append(item)
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    stamp_created(ds, zone, now)
    settle_charset(ds, source.get("SpecificCharacterSet"))
    return ds
