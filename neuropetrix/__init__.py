"""NeuroPETRIX: DICOM node and HL7/FHIR integration engine for PET/CT."""
