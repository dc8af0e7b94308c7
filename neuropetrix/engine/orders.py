"""Orders from the HBYS: HL7 intake (ADT, ORM^O01, OMG^O19), order state, and reconciliation of
arriving studies with their orders.

Intake: each message is stored as received (its own commit) before anything else; it is applied and
its ACK recorded in one transaction, so a message acknowledged AA has been applied exactly once, and
one sent again with the same MSH-10 by the same sender gets the same ACK without being applied again
(dcm4chee-arc does the same). Content the node cannot use is answered AE with the field in ERR.

Reconciliation (dcm4chee-arc's order, IHE SWF): Accession Number, else Study Instance UID, else the
one open order of the same patient, day and modality. A study with no order, more than one candidate,
or patient data that differ from the order's goes on the reconcile list and, with
`hbys.hold_unmatched`, is routed only after a technologist links it or confirms it as unordered.
Patient data in results come from the HBYS record of the order, never from the scanner's typing.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from hl7apy.exceptions import HL7apyException
from pydicom.uid import generate_uid
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.config.settings import HbysSettings, RetrySettings
from neuropetrix.engine import hl7in
from neuropetrix.engine.hl7in import Header, Refusal, components, content_error, first, value
from neuropetrix.engine.order_status import queue_status
from neuropetrix.reports.source import OrderFacts, is_valid_tckn
from neuropetrix.store import eventlog as events
from neuropetrix.store.db import utcnow
from neuropetrix.store.eventlog import EventKind
from neuropetrix.store.files import InvalidUID, check_uid
from neuropetrix.store.models import Patient, ProcedureStep, Series, Study
from neuropetrix.store.orders_models import (
    ARRIVED,
    CANCELLED,
    COMPLETED,
    DISCONTINUED,
    IN_PROGRESS,
    LINKED,
    MATCHED,
    MISMATCH,
    OPEN_STATES,
    SCHEDULED,
    SETTLED,
    UNMATCHED,
    UNORDERED,
    HbysPatient,
    Hl7Message,
    Order,
    StudyOrder,
)

log = logging.getLogger("neuropetrix.engine.orders")
CONSUMER = "orders"
_ISTANBUL = timezone(timedelta(hours=3))
_RANK = {SCHEDULED: 0, ARRIVED: 1, IN_PROGRESS: 2, COMPLETED: 3}
ADT_PATIENT = ("A01", "A04", "A05", "A08", "A28", "A31")
# ORC-5 order status (HL7 table 0038) → our state
_ORC5 = {"SC": SCHEDULED, "IP": IN_PROGRESS, "CM": COMPLETED, "CA": CANCELLED, "DC": DISCONTINUED,
         "HD": SCHEDULED}
SH = 16                                 # DICOM SH: accession, requested procedure and step ids


@dataclass(frozen=True)
class Outcome:
    """What applying a message did: for MSA-3 (warnings) and the log."""

    summary: str
    warning: str = ""


def _pn(parts: list[str], offset: int = 0) -> str:
    """XPN/XCN components (family at `offset`) as a DICOM PN family^given^middle."""
    names = [p.strip() for p in parts[offset:offset + 3]] + ["", "", ""]
    return "^".join(names[:3]).rstrip("^")


def _date(raw: str) -> str:
    digits = "".join(c for c in raw if c.isdigit())
    return digits[:8] if len(digits) >= 8 else ""


def _timestamp(raw: str) -> str:
    digits = "".join(c for c in raw.split("+")[0].split("-")[0].split(".")[0] if c.isdigit())
    return digits[:14].ljust(14, "0") if len(digits) >= 8 else ""


class Intake:
    """HL7 messages from the HBYS → stored, applied, acknowledged. `receive` is what the MLLP listener
    calls for each frame (in a worker thread)."""

    def __init__(self, sessions: sessionmaker[Session], settings: HbysSettings,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.sessions = sessions
        self.listen = settings.mllp_listen
        self.clock = clock

    def receive(self, raw: bytes, peer: str) -> bytes:
        """The ACK bytes for one received message (original acknowledgment mode)."""
        try:
            header = hl7in.read_header(raw)
        except Refusal as refusal:
            self._store(raw, peer, None, "", "AR", hl7in.build_ack(None, "AR", refusal.text, refusal), refusal.text)
            log.warning("HL7 message from %s refused (AR): %s", peer, refusal.text)
            return hl7in.build_ack(None, "AR", refusal.text, refusal).encode("ascii")
        codec = hl7in.CODECS_IN.get((header.charset or self._default(header)).upper(), "ascii")
        row_id = self._store(raw, peer, header, header.charset or self._default(header))
        earlier = self._answered(header, row_id)
        if earlier is not None:
            log.info("HL7 %s %s from %s already applied: acknowledged again (%s)", header.message_type,
                     header.control_id, header.sender, earlier.ack_code)
            self._finish_row(row_id, earlier.ack_code, earlier.ack, "", duplicate_of=earlier.id)
            return earlier.ack.encode(codec, "replace")
        try:
            text, _ = hl7in.decode(raw, header, self._default(header))
            message = hl7in.parse(text, header)
            with self.sessions.begin() as s:
                outcome = apply_message(s, message, header, self.clock())
                ack = hl7in.build_ack(header, "AA", outcome.warning)
                self._record(s, row_id, "AA", ack, "")
            log.info("HL7 %s %s from %s: %s", header.message_type, header.control_id, header.sender,
                     outcome.summary)
            return ack.encode(codec, "replace")
        except Refusal as refused:
            refusal = refused
        except Exception as exc:          # a bug or the database: AE, so the sender tries again
            log.exception("HL7 %s %s from %s could not be applied", header.message_type, header.control_id,
                          header.sender)
            refusal = Refusal("AE", f"internal error: {type(exc).__name__}", hl7in.INTERNAL_ERROR)
        ack = hl7in.build_ack(header, refusal.code, refusal.text, refusal)
        log.warning("HL7 %s %s from %s answered %s: %s", header.message_type, header.control_id, header.sender,
                    refusal.code, refusal.text)
        self._finish_row(row_id, refusal.code, ack, refusal.text)
        return ack.encode(codec, "replace")

    def _default(self, header: Header) -> str:
        return self.listen.sender_charsets.get(header.sending_application, self.listen.default_charset)

    def _store(self, raw: bytes, peer: str, header: Header | None, charset: str, ack_code: str = "",
               ack: str = "", error: str = "") -> int:
        with self.sessions.begin() as s:
            row = Hl7Message(received_at=self.clock(), peer=peer[:64], raw=raw, charset=charset,
                             sender=header.sender[:200] if header else "",
                             control_id=header.control_id[:64] if header else "",
                             message_type=header.message_type[:32] if header else "",
                             ack_code=ack_code, ack=ack, error=error)
            s.add(row)
            s.flush()
            return row.id

    def _answered(self, header: Header, row_id: int) -> Hl7Message | None:
        """The earlier receipt of this message that was applied (AA), if any."""
        with self.sessions() as s:
            return s.scalars(select(Hl7Message).where(
                Hl7Message.sender == header.sender[:200], Hl7Message.control_id == header.control_id[:64],
                Hl7Message.ack_code == "AA", Hl7Message.id != row_id, Hl7Message.duplicate_of.is_(None))
                .order_by(Hl7Message.id)).first()

    @staticmethod
    def _record(s: Session, row_id: int, code: str, ack: str, error: str, duplicate_of: int | None = None) -> None:
        s.execute(update(Hl7Message).where(Hl7Message.id == row_id).values(
            ack_code=code, ack=ack, error=error, duplicate_of=duplicate_of))

    def _finish_row(self, row_id: int, code: str, ack: str, error: str, duplicate_of: int | None = None) -> None:
        with self.sessions.begin() as s:
            self._record(s, row_id, code, ack, error, duplicate_of)


# --- applying messages ---------------------------------------------------------------------------

def apply_message(s: Session, message, header: Header, now: datetime) -> Outcome:
    """Apply one parsed message in the caller's transaction; Refusal when it cannot be."""
    kind, _, event = header.message_type.partition("^")
    if kind == "ADT" and event in ADT_PATIENT:
        patient, warning = upsert_patient(s, message, now)
        return Outcome(f"patient {patient.id} updated ({event})", warning)
    if kind == "ADT" and event == "A40":
        return merge_patients(s, message, now)
    if (kind, event) in (("ORM", "O01"), ("OMG", "O19")):
        return apply_orders(s, message, header, now)
    if kind in ("ADT", "ORM", "OMG"):
        raise Refusal("AR", f"event {event or '(none)'} of {kind} is not supported", hl7in.UNSUPPORTED_EVENT,
                      ("MSH", 9))
    raise Refusal("AR", f"message type {header.message_type or '(none)'} is not supported "
                  "(ADT^A01/A04/A05/A08/A28/A31/A40, ORM^O01, OMG^O19)", hl7in.UNSUPPORTED_MESSAGE_TYPE, ("MSH", 9))


def _identifier(message) -> tuple[str, str, str, list[list[str]]]:
    """The patient's identifier (the TCKN repetition when there is one), issuer, type, all repetitions."""
    pid = first(message, "PID")
    if pid is None:
        raise content_error("the message has no PID segment", "PID", 3)
    reps = [r for r in hl7in.repetitions(pid, 3) if r and r[0].strip()]
    if not reps:
        raise content_error("PID-3 (patient identifier list) is empty", "PID", 3)
    chosen = next((r for r in reps if len(r) > 4 and r[4].strip() == "NNTUR"), reps[0])
    issuer = chosen[3].split("&")[0].strip() if len(chosen) > 3 else ""
    kind = chosen[4].strip() if len(chosen) > 4 else ""
    return chosen[0].strip()[:64], issuer[:64], kind[:16], [[c.strip() for c in r] for r in reps]


def _survivor(s: Session, patient: HbysPatient) -> HbysPatient:
    seen = {patient.id}
    while patient.merged_into is not None and patient.merged_into not in seen:
        seen.add(patient.merged_into)
        patient = s.get(HbysPatient, patient.merged_into)
    return patient


def find_patient(s: Session, patient_id: str, issuer: str) -> HbysPatient | None:
    found = s.scalars(select(HbysPatient).where(HbysPatient.patient_id == patient_id,
                                                HbysPatient.issuer == issuer)).first()
    return _survivor(s, found) if found is not None else None


def upsert_patient(s: Session, message, now: datetime) -> tuple[HbysPatient, str]:
    """The PID's patient, created or updated with the HBYS's demographics; a warning (never a refusal)
    when a TCKN fails its check. The identifier itself is never logged."""
    patient_id, issuer, kind, reps = _identifier(message)
    pid = first(message, "PID")
    patient = find_patient(s, patient_id, issuer)
    if patient is None:
        patient = HbysPatient(patient_id=patient_id, issuer=issuer, updated_at=now)
        s.add(patient)
    patient.identifier_type = kind
    patient.identifiers = reps
    name = _pn(components(pid, 5))
    if name:
        patient.name = name[:324]
    birth = _date(value(pid, 7))
    if birth:
        patient.birth_date = birth
    sex = value(pid, 8).upper()
    if sex:
        patient.sex = sex[:16]
    patient.updated_at = now
    s.flush()
    warning = ""
    claims_tckn = kind == "NNTUR" or issuer.upper() == "TCKN"
    if (claims_tckn or (len(patient_id) == 11 and patient_id.isdigit())) and not is_valid_tckn(patient_id):
        warning = "PID-3 is not a valid T.C. Kimlik No (accepted: foreign patient or newborn?)"
        log.warning("patient %d: %s", patient.id, warning)
    return patient, warning


def merge_patients(s: Session, message, now: datetime) -> Outcome:
    """ADT^A40: the prior identifier's orders (worklist items) and studies move to the survivor."""
    survivor, warning = upsert_patient(s, message, now)
    mrg = first(message, "MRG")
    prior_id = value(mrg, 1)
    if not prior_id:
        raise content_error("MRG-1 (prior patient identifier) is empty", "MRG", 1)
    prior_issuer = value(mrg, 1, 4).split("&")[0]
    prior = s.scalars(select(HbysPatient).where(HbysPatient.patient_id == prior_id,
                                                HbysPatient.issuer == prior_issuer)).first()
    moved_orders = 0
    if prior is not None and prior.id != survivor.id:
        moved_orders = s.execute(update(Order).where(Order.patient_pk == prior.id)
                                 .values(patient_pk=survivor.id, updated_at=now)).rowcount
        prior.merged_into = survivor.id
        prior.updated_at = now
    moved_studies = 0
    for old in s.scalars(select(Patient).where(Patient.patient_id == prior_id)).all():
        target = s.scalars(select(Patient).where(Patient.patient_id == survivor.patient_id,
                                                 Patient.issuer == old.issuer)).first()
        if target is None:
            target = Patient(patient_id=survivor.patient_id, issuer=old.issuer, name=survivor.name,
                             birth_date=survivor.birth_date, sex=survivor.sex)
            s.add(target)
            s.flush()
        moved_studies += s.execute(update(Study).where(Study.patient_pk == old.id)
                                   .values(patient_pk=target.id)).rowcount
    return Outcome(f"patient {prior.id if prior else '?'} merged into {survivor.id}: {moved_orders} order(s), "
                   f"{moved_studies} study(ies) moved", warning)


def _order_start(message, orc, obr) -> str:
    tq1 = first(message, "TQ1")
    for raw in (value(tq1, 7), value(orc, 7, 4), value(obr, 27, 4), value(obr, 36), value(obr, 7)):
        stamp = _timestamp(raw)
        if stamp:
            return stamp
    return ""


def _procedure(obr) -> tuple[tuple[str, str, str], tuple[str, str]]:
    """(code, text, system) of the ordered procedure (OBR-4, LOINC) and the SUT code (OBR-44, or
    OBR-4's alternate when its system is SUT)."""
    parts = components(obr, 4) + [""] * 6
    primary = (parts[0].strip(), parts[1].strip(), parts[2].strip())
    sut = ("", "")
    obr44 = components(obr, 44) + ["", "", ""]
    if obr44[0].strip():
        sut = (obr44[0].strip(), obr44[1].strip())
    elif parts[5].strip().upper() == "SUT":
        sut = (parts[3].strip(), parts[4].strip())
    if primary[2].upper() == "SUT":             # only a SUT code was sent
        sut, primary = (primary[0], primary[1]), ("", "", "")
    return primary, sut


def apply_orders(s: Session, message, header: Header, now: datetime) -> Outcome:
    """ORM^O01 / OMG^O19: each ORC with its OBR is one order: NW new, XO change, CA cancel, DC
    discontinue, SC status change (ORC-5)."""
    children = list(message.children)
    orcs = [i for i, seg in enumerate(children) if seg.name == "ORC"]
    if not orcs:
        raise content_error("the message has no ORC segment", "ORC", 1)
    done, warning = [], ""
    for n, index in enumerate(orcs):
        end = orcs[n + 1] if n + 1 < len(orcs) else len(children)
        orc = children[index]
        obr = next((seg for seg in children[index:end] if seg.name == "OBR"), None)
        control = value(orc, 1).upper()
        placer = value(orc, 2) or value(obr, 2)
        if not placer:
            raise content_error("ORC-2 (placer order number) is empty", "ORC", 2)
        authority = (value(orc, 2, 2) or value(obr, 2, 2) or header.sending_application)[:64]
        order = s.scalars(select(Order).where(Order.placer_number == placer[:64],
                                              Order.placer_authority == authority)).first()
        if control in ("CA", "DC", "SC"):
            if order is None:
                raise Refusal("AE", f"ORC-1 {control}: no order with placer number in ORC-2 is known",
                              hl7in.UNKNOWN_KEY, ("ORC", 2))
            status = {"CA": CANCELLED, "DC": DISCONTINUED}.get(control) or _ORC5.get(value(orc, 5).upper())
            if status is None:
                raise content_error(f"ORC-5 {value(orc, 5)!r} is not an order status (SC, IP, CM, CA, DC)",
                                    "ORC", 5, hl7in.TABLE_VALUE_NOT_FOUND)
            set_status(s, order, status, now, force=True)
            done.append(f"order {order.id} {status}")
            continue
        if control not in ("NW", "XO"):
            raise content_error(f"ORC-1 {control!r} is not supported (NW, XO, CA, DC, SC)", "ORC", 1,
                                hl7in.TABLE_VALUE_NOT_FOUND)
        if obr is None:
            raise content_error("the order has no OBR segment", "OBR", 1)
        patient, warning = upsert_patient(s, message, now)
        order, created = _fill_order(s, order, message, header, orc, obr, placer, authority, patient, now)
        done.append(f"order {order.id} {'new' if created else 'changed'}")
    return Outcome(", ".join(done), warning)


def _fill_order(s: Session, order: Order | None, message, header: Header, orc, obr, placer: str,
                authority: str, patient: HbysPatient, now: datetime) -> tuple[Order, bool]:
    filler = value(orc, 3) or value(obr, 3)
    accession = value(obr, 18) or filler or placer
    if len(accession) > SH:
        raise content_error(f"the accession number (OBR-18) is longer than {SH} characters", "OBR", 18,
                            hl7in.DATA_TYPE_ERROR)
    created = order is None
    if order is None:
        order = Order(placer_number=placer[:64], placer_authority=authority, created_at=now, status=SCHEDULED,
                      study_uid="", patient_pk=patient.id)
        s.add(order)
    study_uid = value(first(message, "ZDS"), 1)
    if study_uid:
        try:
            order.study_uid = check_uid(study_uid, "ZDS-1 Study Instance UID")
        except InvalidUID:
            raise content_error("ZDS-1 is not a valid Study Instance UID", "ZDS", 1, hl7in.DATA_TYPE_ERROR) from None
    elif not order.study_uid:
        order.study_uid = generate_uid()
    (code, text, system), (sut_code, sut_text) = _procedure(obr)
    pv1 = first(message, "PV1")
    ordering = components(obr, 16) if value(obr, 16, 2) else components(orc, 12)
    order.patient_pk = patient.id
    order.filler_number = filler[:64]
    order.accession_number = accession
    order.requested_procedure_id = (value(obr, 19) or accession)[:SH]
    order.sps_id = (value(obr, 20) or accession)[:SH]
    order.procedure_code, order.procedure_text, order.procedure_system = code[:64], text[:200], system[:20]
    order.sut_code, order.sut_text = sut_code[:64], sut_text[:200]
    order.ordering_physician = _pn(ordering, 1)[:324]
    order.referring_physician = _pn(components(pv1, 8), 1)[:324]
    order.modality = (value(obr, 24) or order.modality or "PT")[:16]
    order.station_ae = (value(obr, 21) or order.station_ae)[:16]
    order.scheduled_start = _order_start(message, orc, obr) or order.scheduled_start or \
        datetime.now(_ISTANBUL).strftime("%Y%m%d%H%M%S")
    order.admission_id = value(pv1, 19)[:64]
    order.hl7_version = header.version
    order.updated_at = now
    if created or order.status in (CANCELLED, DISCONTINUED):
        order.status = SCHEDULED if created else order.status
    s.flush()
    return order, created


def set_status(s: Session, order: Order, status: str, now: datetime, force: bool = False) -> bool:
    """Move an order on (never back, unless the HBYS says so: `force`); records order.changed."""
    if order.status == status:
        return False
    if not force and (order.status not in _RANK or _RANK.get(status, -1) <= _RANK[order.status]):
        return False
    order.status = status
    order.updated_at = now
    events.record(s, EventKind.ORDER_CHANGED, None, {"order": order.id, "status": status})
    return True


# --- reconciliation ------------------------------------------------------------------------------

def _normalized(name: str) -> str:
    return "^".join(p.strip() for p in name.replace("İ", "I").replace("ı", "I").upper().split("^")[:2]).strip("^")


def differences(order_patient: HbysPatient, image_patient: Patient | None) -> list[str]:
    """DICOM attribute names where the images' patient differs from the order's."""
    if image_patient is None:
        return []
    diff = []
    if image_patient.patient_id != order_patient.patient_id:
        diff.append("PatientID")
    if image_patient.name and _normalized(image_patient.name) != _normalized(order_patient.name):
        diff.append("PatientName")
    if image_patient.birth_date and order_patient.birth_date and image_patient.birth_date != order_patient.birth_date:
        diff.append("PatientBirthDate")
    if image_patient.sex and order_patient.sex and image_patient.sex != order_patient.sex:
        diff.append("PatientSex")
    return diff


def _candidates(s: Session, study: Study, patient: Patient | None) -> tuple[list[Order], str]:
    live = Order.status.notin_((CANCELLED, DISCONTINUED))
    if study.accession_number:
        found = list(s.scalars(select(Order).where(Order.accession_number == study.accession_number, live)))
        if found:
            return found, "accession"
    found = list(s.scalars(select(Order).where(Order.study_uid == study.study_uid, live)))
    if found:
        return found, "study_uid"
    if patient is None or not study.study_date:
        return [], ""
    modalities = set(s.scalars(select(Series.modality).where(Series.study_pk == study.id)))
    hbys = [p.id for p in s.scalars(select(HbysPatient).where(HbysPatient.patient_id == patient.patient_id))]
    found = [o for o in s.scalars(select(Order).where(Order.patient_pk.in_(hbys), Order.status.in_(OPEN_STATES),
                                                      Order.scheduled_start.startswith(study.study_date)))
             if o.modality in modalities or not o.modality]
    return found, "patient_date_modality"


def reconcile(s: Session, study_uid: str, hold: bool, now: datetime) -> StudyOrder | None:
    """The study's reconciliation, decided the first time it is asked (None: no such study)."""
    row = s.scalars(select(StudyOrder).where(StudyOrder.study_uid == study_uid)).first()
    if row is not None:
        return row
    study = s.scalars(select(Study).where(Study.study_uid == study_uid)).first()
    if study is None:
        return None
    patient = s.get(Patient, study.patient_pk)
    found, how = _candidates(s, study, patient)
    order = found[0] if len(found) == 1 else None
    diff = differences(_survivor(s, s.get(HbysPatient, order.patient_pk)), patient) if order else []
    state = MATCHED if order is not None and not diff else (MISMATCH if order is not None else UNMATCHED)
    row = StudyOrder(study_uid=study_uid, order_pk=order.id if order else None, state=state,
                     matched_by=how if order else "", differences=diff, held=0, resolved_by="",
                     created_at=now, updated_at=now)
    try:
        with s.begin_nested():
            s.add(row)
    except IntegrityError:                  # decided meanwhile by another thread: take that
        return s.scalars(select(StudyOrder).where(StudyOrder.study_uid == study_uid)).one()
    if state == MATCHED:
        set_status(s, order, ARRIVED, now)
        log.info("study %s matches order %d by %s", study_uid, order.id, how)
    else:
        why = (f"{len(found)} candidate orders" if len(found) > 1 else
               f"differs from order {order.id} in {', '.join(diff)}" if order else "no order")
        log.warning("study %s goes to the reconcile list: %s%s", study_uid, why,
                    " (held until linked)" if hold else "")
    return row


def link(s: Session, study_uid: str, order_id: int | None, user: str, now: datetime) -> StudyOrder:
    """A technologist's decision: the study belongs to `order_id`, or (None) it has no order. A study
    held at completion is completed again, so the dispatcher routes it now. KeyError: unknown ids."""
    row = s.scalars(select(StudyOrder).where(StudyOrder.study_uid == study_uid)).first()
    study = s.scalars(select(Study).where(Study.study_uid == study_uid)).first()
    if row is None or study is None:
        raise KeyError(f"study {study_uid} is not on the reconcile list")
    order = None
    if order_id is not None:
        order = s.get(Order, order_id)
        if order is None:
            raise KeyError(f"no order {order_id}")
    row.order_pk = order.id if order else None
    row.state = LINKED if order else UNORDERED
    row.matched_by = "user" if order else ""
    row.resolved_by = user[:64]
    row.updated_at = now
    if order is not None:
        set_status(s, order, COMPLETED if study.state == "complete" else ARRIVED, now)
    if row.held and study.state == "complete":
        row.held = 0
        events.record(s, EventKind.STUDY_COMPLETE, study_uid, {"reason": "reconciled", "by": user})
    log.info("study %s %s by %s", study_uid, f"linked to order {order.id}" if order else "confirmed unordered", user)
    return row


def order_facts(s: Session, study_uid: str) -> OrderFacts | None:
    """What the results say about the order and the patient, from the HBYS's records (None: the
    study has no settled order)."""
    row = s.scalars(select(StudyOrder).where(StudyOrder.study_uid == study_uid)).first()
    if row is None or row.order_pk is None or row.state not in (MATCHED, LINKED):
        return None
    order = s.get(Order, row.order_pk)
    patient = _survivor(s, s.get(HbysPatient, order.patient_pk))
    family, _, given = patient.name.partition("^")
    return OrderFacts(
        patient_id=patient.patient_id, issuer_of_patient_id=patient.issuer or None,
        identifier_type=patient.identifier_type or None, patient_family_name=family,
        patient_given_name=given.split("^")[0], patient_birth_date=patient.birth_date or None,
        patient_sex=patient.sex if patient.sex in ("M", "F", "O") else None,
        accession_number=order.accession_number, placer_order_number=order.placer_number,
        placer_authority=order.placer_authority or None, filler_order_number=order.filler_number or None,
        requested_procedure_id=order.requested_procedure_id or None,
        procedure_code=order.procedure_code or None, procedure_text=order.procedure_text or None,
        procedure_system=order.procedure_system or None, sut_code=order.sut_code or None,
        sut_text=order.sut_text or None, ordering_physician=order.ordering_physician or None,
        referring_physician=order.referring_physician or None, admission_id=order.admission_id or None,
        other_identifiers=tuple(tuple(c.split("&")[0] for c in rep[:5]) for rep in patient.identifiers
                                if rep and rep[0] != patient.patient_id))


class OrderTracker:
    """Follows studies and procedure steps into order states: reconciles each new study, moves its
    order to in progress (MPPS) and completed (study complete or MPPS COMPLETED), and tells the
    dispatcher whether a completed study may be routed (`release`)."""

    def __init__(self, sessions: sessionmaker[Session], settings: HbysSettings, poll_seconds: float = 0.5,
                 clock: Callable[[], datetime] = utcnow, retry: RetrySettings | None = None) -> None:
        self.sessions = sessions
        self.hold = settings.hold_unmatched and settings.mllp_listen.enabled
        self.report_to = settings.mllp if settings.order_status else None     # IP/CM back to the HBYS
        self.retry = retry or RetrySettings()
        self.poll_seconds = poll_seconds
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def release(self, s: Session, study_uid: str) -> bool:
        """True when the completed study may be routed now; otherwise it is marked held, and
        linking it completes it again."""
        row = reconcile(s, study_uid, self.hold, self.clock())
        if row is None or row.state in SETTLED or not self.hold:
            return True
        row.held = 1
        log.info("study %s complete but not reconciled: held on the reconcile list", study_uid)
        return False

    def run_once(self) -> int:
        """Handle new studies, completions and procedure steps; returns how many things changed."""
        now = self.clock()
        changed = 0
        with self.sessions.begin() as s:
            kinds = (EventKind.STUDY_RECEIVED, EventKind.STUDY_COMPLETE, EventKind.ORDER_CHANGED)
            for event in events.take_pending(s, CONSUMER, kinds):
                events.advance(s, CONSUMER, event.id)
                if event.kind == EventKind.ORDER_CHANGED:
                    self._report(s, event, now)
                    continue
                row = reconcile(s, event.study_uid or "", self.hold, now)
                if row is not None and row.order_pk is not None and row.state in SETTLED \
                        and event.kind == EventKind.STUDY_COMPLETE:
                    changed += set_status(s, s.get(Order, row.order_pk), COMPLETED, now)
                changed += 1
            steps = s.execute(select(Order, ProcedureStep.status).join(
                ProcedureStep, ProcedureStep.study_uid == Order.study_uid).where(
                Order.status.in_((SCHEDULED, ARRIVED, IN_PROGRESS)))).all()
            for order, step_status in steps:
                target = {"IN PROGRESS": IN_PROGRESS, "COMPLETED": COMPLETED}.get(step_status)
                if target is not None:
                    changed += set_status(s, order, target, now)
        return changed

    def _report(self, s: Session, event, now: datetime) -> None:
        """Queue the order status message for an order.changed event, when configured."""
        if self.report_to is None:
            return
        order = s.get(Order, event.payload.get("order"))
        if order is None:
            return
        try:
            job = queue_status(s, order, event.payload.get("status", ""), self.report_to, self.retry, event.id, now)
        except (UnicodeEncodeError, HL7apyException, ValueError) as exc:
            log.warning("order %d: no status message can be written for hbys.mllp (%s): %s", order.id,
                        self.report_to.charset, type(exc).__name__)
            return
        if job is not None:
            log.info("order %d: status %s queued for the HBYS", order.id, job.params["code"])

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.poll_seconds):
                try:
                    self.run_once()
                except Exception:
                    log.exception("following orders failed; will try again")
        self._thread = threading.Thread(target=loop, name="orders", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
