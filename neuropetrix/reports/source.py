"""What the reports say about the patient and the order, read once from the source PET datasets.

HL7, FHIR and the PDF all print the same patient and order, so they read it from one place. DICOM
dates and times carry no zone; Turkish sites record local time, UTC+3 all year (Europe/Istanbul), unless
the dataset says otherwise in TimezoneOffsetFromUTC.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from neuropetrix.analysis.results import AnalysisResult
from neuropetrix.reports.errors import require

log = logging.getLogger(__name__)

_ISTANBUL = timezone(timedelta(hours=3))


@dataclass(frozen=True)
class StudyInfo:
    """Patient, order and study attributes as the hospital's systems know them."""

    patient_id: str
    issuer_of_patient_id: str | None
    patient_family_name: str
    patient_given_name: str
    patient_birth_date: str | None      # YYYYMMDD
    patient_sex: str | None             # M, F, O
    accession_number: str
    placer_order_number: str | None
    filler_order_number: str | None
    requested_procedure_id: str | None
    admission_id: str | None
    referring_physician: str | None     # DICOM PN, family^given
    institution_name: str | None
    study_description: str | None
    study_datetime: datetime            # zone-aware
    study_instance_uid: str
    radiopharmaceutical: str | None

    @property
    def patient_name_display(self) -> str:
        return " ".join(p for p in (self.patient_given_name, self.patient_family_name) if p)

    @property
    def is_tckn(self) -> bool:
        return is_valid_tckn(self.patient_id)


def is_valid_tckn(value: str) -> bool:
    """The T.C. Kimlik No check: 11 digits, first not 0, two check digits (FACTS.md)."""
    if len(value) != 11 or not value.isdigit() or value[0] == "0":
        return False
    d = [int(c) for c in value]
    return (7 * sum(d[0:9:2]) - sum(d[1:8:2])) % 10 == d[9] and sum(d[:10]) % 10 == d[10]


def procedure_code(info: StudyInfo) -> Code:
    """The procedure reported (SR, HL7 OBR-4, FHIR): PET/CT FDG of the whole body when the tracer is
    FDG, PET of the whole body otherwise."""
    tracer = (info.radiopharmaceutical or "").lower()
    if "fluorodeoxyglucose" in tracer or "fdg" in tracer:
        return codes.SCT.PETCTFDGImagingOfWholeBody
    return codes.SCT.PositronEmissionTomographyOfWholeBody


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def _dicom_datetime(ds: Dataset) -> datetime:
    date = _text(ds, "StudyDate") or _text(ds, "SeriesDate") or _text(ds, "AcquisitionDate")
    require(date, "the PET series has no StudyDate, SeriesDate or AcquisitionDate")
    time = (_text(ds, "StudyTime") or _text(ds, "SeriesTime") or "000000").split(".")[0].ljust(6, "0")
    zone = _ISTANBUL
    offset = _text(ds, "TimezoneOffsetFromUTC")
    if offset and len(offset) == 5 and offset[0] in "+-" and offset[1:].isdigit():
        sign = 1 if offset[0] == "+" else -1
        zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:])))
    return datetime.strptime(date + time, "%Y%m%d%H%M%S").replace(tzinfo=zone)


def study_info(result: AnalysisResult, pet_datasets: list[Dataset]) -> StudyInfo:
    """Read the patient and order from the first PET instance; refuse when identity is missing."""
    require(pet_datasets, "no PET datasets were given")
    ds = pet_datasets[0]
    require(ds.get("StudyInstanceUID") == result.study_instance_uid,
            f"the PET datasets belong to study {ds.get('StudyInstanceUID')}, "
            f"not the analysed study {result.study_instance_uid}")
    patient_id = _text(ds, "PatientID")
    require(patient_id, "the PET series has no PatientID")
    accession = _text(ds, "AccessionNumber")
    require(accession, "the PET series has no AccessionNumber: the order cannot be identified")
    name = ds.get("PatientName")
    require(name is not None and str(name).strip("^ "), "the PET series has no PatientName")
    family, given = str(name.family_name).strip(), str(name.given_name).strip()
    if not is_valid_tckn(patient_id):
        log.warning("study %s: PatientID is not a valid T.C. Kimlik No (foreign patient or newborn?)",
                    result.study_instance_uid)
    request = ds.RequestAttributesSequence[0] if ds.get("RequestAttributesSequence") else Dataset()
    rp_seq = ds.get("RadiopharmaceuticalInformationSequence")
    radiopharmaceutical = None
    if rp_seq:
        codes = rp_seq[0].get("RadiopharmaceuticalCodeSequence")
        radiopharmaceutical = (_text(codes[0], "CodeMeaning") if codes else None) or _text(
            rp_seq[0], "Radiopharmaceutical")
    sex = _text(ds, "PatientSex")
    return StudyInfo(
        patient_id=patient_id,
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
        patient_family_name=family,
        patient_given_name=given,
        patient_birth_date=_text(ds, "PatientBirthDate"),
        patient_sex=sex if sex in ("M", "F", "O") else None,
        accession_number=accession,
        placer_order_number=_text(ds, "PlacerOrderNumberImagingServiceRequest")
        or _text(request, "PlacerOrderNumberImagingServiceRequest"),
        filler_order_number=_text(ds, "FillerOrderNumberImagingServiceRequest")
        or _text(request, "FillerOrderNumberImagingServiceRequest"),
        requested_procedure_id=_text(request, "RequestedProcedureID"),
        admission_id=_text(ds, "AdmissionID"),
        referring_physician=_text(ds, "ReferringPhysicianName"),
        institution_name=_text(ds, "InstitutionName"),
        study_description=_text(ds, "StudyDescription"),
        study_datetime=_dicom_datetime(ds),
        study_instance_uid=result.study_instance_uid,
        radiopharmaceutical=radiopharmaceutical,
    )
