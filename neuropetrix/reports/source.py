"""What the reports say about the patient and the order, read once from the source PET datasets.

HL7, FHIR and the PDF all print the same patient and order, so they read it from one place. DICOM
dates and times carry no zone; Turkish sites record local time, UTC+3 all year (Europe/Istanbul), unless
the dataset says otherwise in TimezoneOffsetFromUTC.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone, tzinfo

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
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
    # The procedure the HBYS ordered, as the scanner copied it (ProcedureCodeSequence or the request's
    # RequestedProcedureCodeSequence): echoed in OBR-4 so the result files under its order.
    requested_procedure: Code | None = None
    # from the HBYS order (engine/orders.py), when the study was reconciled with one
    identifier_type: str | None = None          # PID-3.5 as the HBYS sent it (NNTUR, PI, …)
    placer_authority: str | None = None         # ORC-2.2
    sut_procedure: Code | None = None           # OBR-44: the SUT (national billing) code
    ordering_physician: str | None = None       # DICOM PN, family^given
    other_identifiers: tuple[tuple[str, ...], ...] = ()   # further PID-3 repetitions, CX components as sent

    @property
    def patient_name_display(self) -> str:
        return " ".join(p for p in (self.patient_given_name, self.patient_family_name) if p)

    @property
    def is_tckn(self) -> bool:
        return is_valid_tckn(self.patient_id)


@dataclass(frozen=True)
class OrderFacts:
    """The HBYS's record of the order and its patient: what results carry instead of what the
    scanner's console typed (engine/orders.py reads it from the database)."""

    patient_id: str
    issuer_of_patient_id: str | None
    identifier_type: str | None
    patient_family_name: str
    patient_given_name: str
    patient_birth_date: str | None
    patient_sex: str | None
    accession_number: str
    placer_order_number: str
    placer_authority: str | None
    filler_order_number: str | None
    requested_procedure_id: str | None
    procedure_code: str | None
    procedure_text: str | None
    procedure_system: str | None
    sut_code: str | None
    sut_text: str | None
    ordering_physician: str | None
    referring_physician: str | None
    admission_id: str | None
    other_identifiers: tuple[tuple[str, ...], ...] = ()   # PID-3 repetitions besides patient_id


def with_order(info: StudyInfo, order: OrderFacts | None) -> StudyInfo:
    """`info` with the patient and order as the HBYS knows them (unchanged without an order)."""
    if order is None:
        return info
    ordered = (Code(order.procedure_code, order.procedure_system or "LN", order.procedure_text or order.procedure_code)
               if order.procedure_code else None)
    sut = Code(order.sut_code, "SUT", order.sut_text or order.sut_code) if order.sut_code else None
    return replace(
        info, patient_id=order.patient_id, issuer_of_patient_id=order.issuer_of_patient_id,
        patient_family_name=order.patient_family_name, patient_given_name=order.patient_given_name,
        patient_birth_date=order.patient_birth_date or info.patient_birth_date,
        patient_sex=order.patient_sex or info.patient_sex, accession_number=order.accession_number,
        placer_order_number=order.placer_order_number,
        filler_order_number=order.filler_order_number or info.filler_order_number,
        requested_procedure_id=order.requested_procedure_id or info.requested_procedure_id,
        admission_id=order.admission_id or info.admission_id,
        referring_physician=order.referring_physician or info.referring_physician,
        identifier_type=order.identifier_type, placer_authority=order.placer_authority,
        requested_procedure=ordered or info.requested_procedure, sut_procedure=sut,
        ordering_physician=order.ordering_physician,
        other_identifiers=order.other_identifiers)


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


def ordered_procedure(info: StudyInfo) -> Code:
    """The Universal Service Identifier of the result (OBR-4): the ordered procedure when the images
    carry it, else the procedure reported."""
    return info.requested_procedure or procedure_code(info)


def _first_code(*sequences: object) -> Code | None:
    """The first complete code item of the given code sequences."""
    for seq in sequences:
        for item in seq or ():
            value = _text(item, "CodeValue") or _text(item, "LongCodeValue")
            scheme, meaning = _text(item, "CodingSchemeDesignator"), _text(item, "CodeMeaning")
            if value and scheme and meaning:
                return Code(value, scheme, meaning)
    return None


def _text(ds: Dataset, keyword: str) -> str | None:
    """A text value as the sender wrote it: a backslash read as pydicom's value separator is put back
    (an order number "A\\4" is one identifier, not two values)."""
    value = ds.get(keyword)
    if isinstance(value, MultiValue):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip() if value is not None else ""
    return text or None


def _dicom_datetime(ds: Dataset) -> datetime:
    date = _text(ds, "StudyDate") or _text(ds, "SeriesDate") or _text(ds, "AcquisitionDate")
    require(date, "the PET series has no StudyDate, SeriesDate or AcquisitionDate")
    time = (_text(ds, "StudyTime") or _text(ds, "SeriesTime") or "000000").split(".")[0].ljust(6, "0")
    return datetime.strptime(date + time, "%Y%m%d%H%M%S").replace(tzinfo=site_zone(ds))


def site_zone(ds: Dataset) -> tzinfo:
    """The zone of the dataset's local dates and times: its TimezoneOffsetFromUTC, else UTC+3."""
    offset = _text(ds, "TimezoneOffsetFromUTC")
    if offset and len(offset) == 5 and offset[0] in "+-" and offset[1:].isdigit():
        sign = 1 if offset[0] == "+" else -1
        return timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:])))
    return _ISTANBUL


def study_info(result: AnalysisResult, pet_datasets: list[Dataset], require_accession: bool = True,
               order: OrderFacts | None = None) -> StudyInfo:
    """Read the patient and order from the first PET instance, the HBYS's `order` over them when the
    study was reconciled with one; refuse when identity is missing.

    `require_accession=False` for the objects that do not file a result against an order (SEG, SR, PDF):
    the accession number is then "" when the study has none.
    """
    require(pet_datasets, "no PET datasets were given")
    ds = pet_datasets[0]
    require(ds.get("StudyInstanceUID") == result.study_instance_uid,
            f"the PET datasets belong to study {ds.get('StudyInstanceUID')}, "
            f"not the analysed study {result.study_instance_uid}")
    patient_id = _text(ds, "PatientID")
    require(patient_id, "the PET series has no PatientID")
    accession = _text(ds, "AccessionNumber") or (order.accession_number if order else None)
    require(accession or not require_accession, "the PET series has no AccessionNumber: the order cannot be identified")
    name = ds.get("PatientName")
    require(name is not None and str(name).strip("^ "), "the PET series has no PatientName")
    family, given = str(name.family_name).strip(), str(name.given_name).strip()
    if order is None and not is_valid_tckn(patient_id):
        log.warning("study %s: the PatientID is not a valid T.C. Kimlik No (foreign patient or newborn?); "
                    "it is reported as a hospital record number", result.study_instance_uid)
    request = ds.RequestAttributesSequence[0] if ds.get("RequestAttributesSequence") else Dataset()
    rp_seq = ds.get("RadiopharmaceuticalInformationSequence")
    radiopharmaceutical = None
    if rp_seq:
        codes = rp_seq[0].get("RadiopharmaceuticalCodeSequence")
        radiopharmaceutical = (_text(codes[0], "CodeMeaning") if codes else None) or _text(
            rp_seq[0], "Radiopharmaceutical")
    sex = _text(ds, "PatientSex")
    return with_order(StudyInfo(
        patient_id=patient_id,
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
        patient_family_name=family,
        patient_given_name=given,
        patient_birth_date=_text(ds, "PatientBirthDate"),
        patient_sex=sex if sex in ("M", "F", "O") else None,
        accession_number=accession or "",
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
        requested_procedure=_first_code(ds.get("ProcedureCodeSequence"),
                                        request.get("RequestedProcedureCodeSequence")),
    ), order)
