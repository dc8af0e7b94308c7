"""The Modality Worklist a scanner's console reads (Modality Worklist Information Model – FIND).

Each open order (scheduled, arrived, in progress) is one worklist item with one Scheduled Procedure
Step; cancelled, discontinued and completed orders are not offered. Matching follows PS3.4 C.2.2.2
and K.6.1.2: an empty key matches everything (universal), `*` and `?` are wildcards in string keys,
DA/TM keys take ranges (`A-B`, `-B`, `A-`) and the SPS start date and time together form one
date-time range, UID keys take a list, and keys inside the Scheduled Procedure Step Sequence match
the step. Every key the scanner asked for comes back, empty when the order has no value for it, with
the Specific Character Set configured for the calling AE (ISO_IR 148 for consoles that show only
Latin-5, ISO_IR 192 otherwise).

The provider has the shape node/scp/find.py's FindProvider expects: (identifier, calling AE) →
matching datasets, made one at a time, so a C-CANCEL stops the query between two of them.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.store.orders_models import ARRIVED, IN_PROGRESS, OPEN_STATES, SCHEDULED, HbysPatient, Order

SPS = "ScheduledProcedureStepSequence"
# order state → Scheduled Procedure Step Status (PS3.3 C.4.10)
SPS_STATUS = {SCHEDULED: "SCHEDULED", ARRIVED: "ARRIVED", IN_PROGRESS: "STARTED"}
_DATE_TIME = ("ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime")


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning[:64]
    return item


def worklist_item(order: Order, patient: HbysPatient) -> Dataset:
    """Everything the node can say about one order, as a worklist item (before key selection)."""
    ds = Dataset()
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = patient.issuer
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.AccessionNumber = order.accession_number
    ds.StudyInstanceUID = order.study_uid
    ds.RequestedProcedureID = order.requested_procedure_id
    ds.RequestedProcedureDescription = (order.procedure_text or order.sut_text)[:64]
    codes = [c for c in ((order.procedure_code, order.procedure_system or "LN", order.procedure_text),
                         (order.sut_code, "SUT", order.sut_text)) if c[0]]
    ds.RequestedProcedureCodeSequence = Sequence([_code_item(*c) for c in codes])
    ds.ReferringPhysicianName = order.referring_physician
    ds.RequestingPhysician = order.ordering_physician
    ds.AdmissionID = order.admission_id
    ds.PlacerOrderNumberImagingServiceRequest = order.placer_number
    ds.FillerOrderNumberImagingServiceRequest = order.filler_number
    ds.ReferencedStudySequence = Sequence()
    ds.ReferencedPatientSequence = Sequence()
    step = Dataset()
    step.ScheduledStationAETitle = order.station_ae
    step.ScheduledProcedureStepStartDate = order.scheduled_start[:8]
    step.ScheduledProcedureStepStartTime = order.scheduled_start[8:14]
    step.Modality = order.modality
    step.ScheduledPerformingPhysicianName = ""
    step.ScheduledProcedureStepDescription = ds.RequestedProcedureDescription
    step.ScheduledProcedureStepID = order.sps_id
    step.ScheduledProcedureStepStatus = SPS_STATUS.get(order.status, "SCHEDULED")
    step.ScheduledProtocolCodeSequence = Sequence([_code_item(*c) for c in codes])
    step.ScheduledStationName = ""
    step.ScheduledProcedureStepLocation = ""
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def _fold(text: str) -> str:
    """Case-insensitive comparison of names, Turkish dotted and dotless I included."""
    return text.replace("İ", "i").replace("I", "ı").lower()


def _wildcard(pattern: str) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(f"^{body}$", re.DOTALL)


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _range(query: str) -> tuple[str, str] | None:
    return tuple(query.split("-", 1)) if "-" in query else None   # type: ignore[return-value]


def _in_range(value: str, query: str, width: int) -> bool:
    bounds = _range(query)
    if bounds is None:
        return value[:len(query)] == query if width == 6 else value == query
    low, high = bounds
    return (not low or value >= low.ljust(width, "0")[:width]) and (not high or value <= high.ljust(width, "9")[:width])


def _matches(key: str, query, value) -> bool:
    """One key of PS3.4 C.2.2.2 matching; an empty query matches anything."""
    q = _text(query)
    if q in ("", "*"):
        return True
    v = _text(value)
    vr = dictionary_VR(key)
    if vr == "DA":
        return bool(v) and _in_range(v, q.replace(".", ""), 8)
    if vr == "TM":
        return bool(v) and _in_range(v.replace(":", "").split(".")[0], q.replace(":", "").split(".")[0], 6)
    if vr == "UI":
        return v in q.split("\\")
    if vr == "PN":
        return bool(_wildcard(_fold(q)).match(_fold(v))) if "*" in q or "?" in q else _fold(q) == _fold(v)
    if "*" in q or "?" in q:
        return bool(_wildcard(q).match(v))
    return q in v.split("\\") if "\\" in v else q == v


def _step_matches(query: Dataset, step: Dataset) -> bool:
    date, time = (_text(query.get(k)) for k in _DATE_TIME)
    if date and time and "-" in date and "-" in time:          # one date-time range (K.6.1.2.2)
        low_d, high_d = _range(date)
        low_t, high_t = _range(time)
        start = step.ScheduledProcedureStepStartDate + step.ScheduledProcedureStepStartTime
        low = (low_d + low_t.ljust(6, "0")) if low_d else ""
        high = (high_d + high_t.ljust(6, "9")) if high_d else ""
        if (low and start < low) or (high and start > high):
            return False
        skip = set(_DATE_TIME)
    else:
        skip = set()
    for element in query:
        key = element.keyword
        if key in skip or not key or element.VR == "SQ":
            continue
        if not _matches(key, element.value, step.get(key)):
            return False
    return True


def matches(query: Dataset, item: Dataset) -> bool:
    """Does the worklist `item` answer `query` (the C-FIND identifier)?"""
    for element in query:
        key = element.keyword
        if not key or key == "SpecificCharacterSet":
            continue
        if key == SPS:
            if element.value and not any(_step_matches(q, s) for q in element.value[:1]
                                         for s in item.ScheduledProcedureStepSequence):
                return False
            continue
        if element.VR == "SQ":
            continue                               # other sequences: returned, not matched
        if not _matches(key, element.value, item.get(key)):
            return False
    return True


def _empty(element: DataElement) -> DataElement:
    return DataElement(element.tag, element.VR, Sequence() if element.VR == "SQ" else None)


def response(query: Dataset, item: Dataset, charset: str) -> Dataset:
    """The requested keys (and only those), with the item's values; empty when it has none."""
    out = Dataset()
    out.SpecificCharacterSet = charset
    for element in query:
        if element.keyword == "SpecificCharacterSet":
            continue
        have = item.get(element.tag)
        if element.VR == "SQ" and have is not None and element.value:
            asked = element.value[0]
            out.add(DataElement(element.tag, "SQ", Sequence([
                _select(asked, sub) for sub in have.value])))
        elif have is not None:
            out.add(DataElement(element.tag, have.VR, have.value))
        else:
            out.add(_empty(element))
    return out


def _select(asked: Dataset, item: Dataset) -> Dataset:
    sub = Dataset()
    for element in asked:
        have = item.get(element.tag)
        if element.VR == "SQ" and have is not None:
            sub.add(DataElement(element.tag, "SQ", Sequence([_select(element.value[0], x) for x in have.value])
                                if element.value else have.value))
        else:
            sub.add(DataElement(element.tag, have.VR, have.value) if have is not None else _empty(element))
    return sub


@dataclass
class Worklist:
    """The MWL C-FIND provider: `worklist(identifier, calling_ae)` yields the matching items."""

    sessions: sessionmaker[Session]
    default_charset: str = "ISO_IR 192"
    charsets: Mapping[str, str] | None = None      # calling AE → Specific Character Set

    def charset_for(self, calling_ae: str) -> str:
        return (self.charsets or {}).get(calling_ae.strip(), self.default_charset)

    def items(self) -> list[Dataset]:
        with self.sessions() as s:
            # a merge (ADT^A40) moves orders to the surviving patient, so each order's patient is current
            rows = s.execute(select(Order, HbysPatient).join(HbysPatient, HbysPatient.id == Order.patient_pk)
                             .where(Order.status.in_(OPEN_STATES)).order_by(Order.scheduled_start, Order.id)).all()
            return [worklist_item(order, patient) for order, patient in rows]

    def __call__(self, identifier: Dataset, calling_ae: str) -> Iterator[Dataset]:
        charset = self.charset_for(calling_ae)
        for item in self.items():
            if matches(identifier, item):
                yield response(identifier, item, charset)
