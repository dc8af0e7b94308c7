"""The access audit trail (KVKK, IHE ATNA): who — a user or a calling AE — from where, did what to
which patient's data, when, and with what outcome.

Rows are only ever added: migration 0013 adds triggers that refuse UPDATE and DELETE, so neither the
API nor a bug in the node can rewrite history. Each row is also handed to the `sink` (the syslog
exporter, node/scu/syslog.py) after it is committed; a collector that is down costs a log line,
never the access or the row. Times are naive UTC.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pydicom.dataset import Dataset
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import DateTime, Index, Integer, String, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from neuropetrix.config.settings import Settings
from neuropetrix.node.scu.syslog import SyslogExporter
from neuropetrix.store.db import utcnow
from neuropetrix.store.models import UID, Base, Patient, Study

log = logging.getLogger("neuropetrix.audit")

SUCCESS, FAILURE = "success", "failure"


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_at", "at"), Index("ix_audit_events_patient", "patient_id", "at"),
                      Index("ix_audit_events_user", "user", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    user: Mapped[str] = mapped_column(String(64))           # a username, or a calling AE title
    user_kind: Mapped[str] = mapped_column(String(8))       # "user" | "ae" | "node" (the node itself)
    # association, query, forward, login, read, download, subscribe, review, sign, prune, ...
    action: Mapped[str] = mapped_column(String(32))
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    study_uid: Mapped[str] = mapped_column(UID, default="")
    address: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(16))        # success | failure
    detail: Mapped[str] = mapped_column(String(512), default="")   # the path, the query level, why refused

    def as_dict(self) -> dict:
        return {"id": self.id, "at": self.at.isoformat() + "Z", "user": self.user, "user_kind": self.user_kind,
                "action": self.action, "patient_id": self.patient_id, "study_uid": self.study_uid,
                "address": self.address, "outcome": self.outcome, "detail": self.detail}


@dataclass(frozen=True)
class Access:
    """One access as it is recorded (and exported)."""

    user: str
    user_kind: str
    action: str
    outcome: str
    address: str = ""
    study_uid: str = ""
    patient_id: str = ""
    detail: str = ""
    patient_pk: int | None = None     # the index's patient row, when the access names a patient, not a study


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


class AuditTrail:
    """Records accesses; answers an admin's queries. Thread-safe (one session per call)."""

    def __init__(self, sessions: sessionmaker[Session], sink: Callable[[AuditEvent], None] | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.sessions = sessions
        self.sink = sink
        self.clock = clock

    def record(self, access: Access) -> None:
        """Add one row (the patient looked up from the study when not given). A database that is
        down is logged, not raised: the caller's own work goes on and reports its own failure."""
        self.record_many([access])

    def record_many(self, accesses: list[Access]) -> None:
        """`record` for several in one transaction: one commit (one fsync) for a group of API requests.
        One multi-row INSERT, not the ORM's unit of work: with 50 dashboards polling, building and
        flushing ORM rows was a third of the process's GIL time; the rows are made for the sink only."""
        try:
            with self.sessions() as s, s.begin():
                values = [{"at": self.clock(), "user": _cut(a.user, 64), "user_kind": a.user_kind, "action": a.action,
                           "patient_id": a.patient_id or self._patient_of(s, a.study_uid, a.patient_pk),
                           "study_uid": a.study_uid, "address": _cut(a.address, 64), "outcome": a.outcome,
                           "detail": _cut(a.detail, 512)} for a in accesses]
                ids = s.scalars(insert(AuditEvent).returning(AuditEvent.id, sort_by_parameter_order=True),
                                values).all()
        except Exception:
            for a in accesses:
                log.exception("audit: cannot record %s by %s from %s", a.action, a.user, a.address)
            return
        if self.sink is not None:
            for row in (AuditEvent(id=i, **v) for i, v in zip(ids, values, strict=True)):
                try:
                    self.sink(row)
                except Exception as exc:      # the collector's problem is logged, never the caller's
                    log.warning("audit: cannot export event %d: %s", row.id, exc)

    @staticmethod
    def _patient_of(s: Session, study_uid: str, patient_pk: int | None) -> str:
        if study_uid:
            return s.scalar(select(Patient.patient_id).join(Study, Study.patient_pk == Patient.id)
                            .where(Study.study_uid == study_uid)) or ""
        if patient_pk is not None:
            return s.scalar(select(Patient.patient_id).where(Patient.id == patient_pk)) or ""
        return ""

    def query(self, patient_id: str | None = None, user: str | None = None, since: datetime | None = None,
              action: str | None = None, limit: int = 500) -> list[dict]:
        """The newest `limit` rows matching every filter given, newest first."""
        q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if patient_id:
            q = q.where(AuditEvent.patient_id == patient_id)
        if user:
            q = q.where(AuditEvent.user == user)
        if since is not None:
            q = q.where(AuditEvent.at >= since)
        if action:
            q = q.where(AuditEvent.action == action)
        with self.sessions() as s:
            return [row.as_dict() for row in s.scalars(q)]


def audit_trail(settings: Settings, sessions: sessionmaker[Session]) -> AuditTrail:
    """The node's trail: in the database, and exported to `audit.syslog` when one is configured."""
    cfg = settings.audit.syslog
    sink = SyslogExporter(cfg.host, cfg.port, cfg.protocol, settings.node.ae_title) if cfg is not None else None
    return AuditTrail(sessions, sink)


def _query_patient(identifier: Dataset) -> str:
    """The Patient ID a query asked for, when it named one (no wildcards)."""
    value = str(identifier.get("PatientID", "") or "")
    return "" if any(c in value for c in "*?\\") else value

RETRIEVE_SOP_CLASSES = frozenset({
    PatientRootQueryRetrieveInformationModelMove, PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelGet})


class DicomAudit:
    """What the DICOM SCP reports (node/scp/association.py's AssociationAudit), as audit rows."""

    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail

    def association(self, calling_ae: str, called_ae: str, address: str, accepted: bool, why: str) -> None:
        self.trail.record(Access(calling_ae, "ae", "association", SUCCESS if accepted else FAILURE, address,
                                 detail=f"called {called_ae}" + (f": {why}" if why else "")))

    def query(self, calling_ae: str, address: str, sop_class_uid: str, identifier: Dataset, status: int) -> None:
        """A C-FIND ("query"), or a C-MOVE / C-GET ("retrieve": images left the node)."""
        level = str(identifier.get("QueryRetrieveLevel", "") or "")
        action = "retrieve" if sop_class_uid in RETRIEVE_SOP_CLASSES else "query"
        self.trail.record(Access(calling_ae, "ae", action, SUCCESS if status == 0 else FAILURE, address,
                                 study_uid=str(identifier.get("StudyInstanceUID", "") or "")
                                 if level == "STUDY" else "",
                                 patient_id=_query_patient(identifier),
                                 detail=f"{sop_class_uid} {level}".strip()))
