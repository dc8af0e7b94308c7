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

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.engine import find_matching
from neuropetrix.engine.find_matching import range_of, text_of
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


def _step_matches(query: Dataset, step: Dataset) -> bool:
    date, time = (text_of(query.get(k)) for k in _DATE_TIME)
    if date and time and "-" in date and "-" in time:          # one date-time range (K.6.1.2.2)
        low_d, high_d = range_of(date)
        low_t, high_t = range_of(time)
        start = step.ScheduledProcedureStepStartDate + step.ScheduledProcedureStepStartTime
        low = (low_d + low_t.ljust(6, "0")) if low_d else ""
        high = (high_d + high_t.ljust(6, "9")) if high_d else ""
        if (low and start < low) or (high and start > high):
            return False
        return find_matching.matches(query, step, skip=_DATE_TIME)
    return find_matching.matches(query, step)


def matches(query: Dataset, item: Dataset) -> bool:
    """Does the worklist `item` answer `query` (the C-FIND identifier)? Its Scheduled Procedure Step
    Sequence key is matched against the item's steps."""
    if not find_matching.matches(query, item):
        return False
    asked = query.get(SPS)                  # the step's keys: the sequence's one item
    return not asked or any(_step_matches(asked[0], step) for step in item.ScheduledProcedureStepSequence)


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
                yield find_matching.response(identifier, item, charset)
