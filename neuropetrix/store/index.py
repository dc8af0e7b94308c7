"""The index: records each stored instance under its patient, study and series, in one transaction.

New studies and studies that receive instances after completion produce events
(`study.received`, `study.reopened`) in the same transaction, so the engine never misses one.
This is the SCP's hot path, so it speaks SQLAlchemy Core (the ORM's unit of work cost ten times
more per instance) and caches series → (series, study) keys.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.store.db import utcnow
from neuropetrix.store.eventlog import EventKind
from neuropetrix.store.models import Event, Instance, Patient, Series, Study

log = logging.getLogger("neuropetrix.store")

_instances, _studies, _series, _patients, _events = (
    Instance.__table__, Study.__table__, Series.__table__, Patient.__table__, Event.__table__)


@dataclass(frozen=True)
class InstanceRecord:
    """What the index keeps of one received instance (read from its header by `ingest`)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    path: str
    size_bytes: int
    patient_id: str = ""
    issuer: str = ""
    patient_name: str = ""
    birth_date: str = ""
    sex: str = ""
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    study_description: str = ""
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    body_part: str = ""
    frame_of_reference_uid: str = ""
    instance_number: int | None = None
    calling_ae: str = ""
    calling_host: str = ""


class StudyIndex:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        engine: Engine = sessions.kw["bind"]
        self.engine = engine
        insert = postgresql_insert if engine.dialect.name == "postgresql" else sqlite_insert
        # RETURNING tells "inserted" from "already there" on both databases (rowcount does not
        # when the dialect adds RETURNING by itself, as SQLAlchemy does on PostgreSQL)
        self._insert_instance = (insert(_instances).on_conflict_do_nothing(index_elements=["sop_instance_uid"])
                                 .returning(_instances.c.id))
        # built once: constructing a statement cost more than executing it (once per instance)
        self._touch_study = (update(_studies).where(_studies.c.id == bindparam("pk"), _studies.c.state == "receiving")
                             .values(last_received_at=bindparam("at")))
        self._series_cache: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def knows_series(self, series_uid: str) -> bool:
        """True when the series' rows exist (then `add` needs only the instance's own fields)."""
        return series_uid in self._series_cache

    def contains(self, sop_instance_uid: str) -> bool:
        with self.engine.connect() as conn:
            return conn.scalar(select(_instances.c.id).where(
                _instances.c.sop_instance_uid == sop_instance_uid)) is not None

    def add(self, rec: InstanceRecord) -> bool:
        """Index `rec`; False when the instance was already indexed (a duplicate)."""
        return self.add_many([rec]) == 1

    def add_many(self, records: list[InstanceRecord]) -> int:
        """Index `records` in one transaction (a group commit of instances that came back to back);
        how many were new (the others were indexed already: duplicates).

        Two associations may bring the first instances of one study at once; the loser of that race
        gets an IntegrityError and simply runs again, finding the rows the winner made.
        """
        for attempt in range(3):
            try:
                return self._add_many(records)
            except IntegrityError:
                self.forget_cache()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _add_many(self, records: list[InstanceRecord]) -> int:
        """One insert per instance and one update per study in the common case (series known)."""
        now = utcnow()
        with self.engine.begin() as conn:
            studies: dict[int, InstanceRecord] = {}     # study pk → an instance of it that is new
            added = 0
            for rec in records:
                series_pk, study_pk = self._series_of(conn, rec, now)
                inserted = conn.execute(self._insert_instance, {
                    "sop_instance_uid": rec.sop_instance_uid, "sop_class_uid": rec.sop_class_uid,
                    "series_pk": series_pk, "instance_number": rec.instance_number,
                    "transfer_syntax_uid": rec.transfer_syntax_uid, "path": rec.path, "size_bytes": rec.size_bytes,
                    "received_at": now, "calling_ae": rec.calling_ae, "calling_host": rec.calling_host}).first()
                if inserted is not None:
                    studies.setdefault(study_pk, rec)
                    added += 1
            for study_pk, rec in studies.items():
                touched = conn.execute(self._touch_study, {"pk": study_pk, "at": now}).rowcount
                if not touched:   # the study was complete: this instance re-opens it
                    conn.execute(update(_studies).where(_studies.c.id == study_pk)
                                 .values(state="receiving", last_received_at=now))
                    conn.execute(_events.insert().values(kind=EventKind.STUDY_REOPENED, study_uid=rec.study_uid,
                                                         created_at=now, payload={"calling_ae": rec.calling_ae}))
                    log.info("study %s re-opened: new instance from %s", rec.study_uid, rec.calling_ae)
        return added

    def _series_of(self, conn: Connection, rec: InstanceRecord, now: datetime) -> tuple[int, int]:
        cached = self._series_cache.get(rec.series_uid)
        if cached is not None:
            return cached
        row = conn.execute(select(_series.c.id, _series.c.study_pk)
                           .where(_series.c.series_uid == rec.series_uid)).first()
        if row is None:
            study_pk = self._study_of(conn, rec, now)
            series_pk = conn.execute(_series.insert().values(
                series_uid=rec.series_uid, study_pk=study_pk, modality=rec.modality,
                series_number=rec.series_number, description=rec.series_description, body_part=rec.body_part,
                frame_of_reference_uid=rec.frame_of_reference_uid, calling_ae=rec.calling_ae)
            ).inserted_primary_key[0]
            row = (series_pk, study_pk)
        with self._lock:
            self._series_cache[rec.series_uid] = (row[0], row[1])
        return row[0], row[1]

    def _study_of(self, conn: Connection, rec: InstanceRecord, now: datetime) -> int:
        study_pk = conn.scalar(select(_studies.c.id).where(_studies.c.study_uid == rec.study_uid))
        if study_pk is not None:
            return study_pk
        patient_pk = conn.scalar(select(_patients.c.id).where(_patients.c.patient_id == rec.patient_id,
                                                              _patients.c.issuer == rec.issuer))
        if patient_pk is None:
            patient_pk = conn.execute(_patients.insert().values(
                patient_id=rec.patient_id, issuer=rec.issuer, name=rec.patient_name,
                birth_date=rec.birth_date, sex=rec.sex)).inserted_primary_key[0]
        study_pk = conn.execute(_studies.insert().values(
            study_uid=rec.study_uid, patient_pk=patient_pk, study_date=rec.study_date,
            study_time=rec.study_time, accession_number=rec.accession_number,
            description=rec.study_description, state="receiving", first_received_at=now,
            last_received_at=now, completion_count=0)).inserted_primary_key[0]
        conn.execute(_events.insert().values(kind=EventKind.STUDY_RECEIVED, study_uid=rec.study_uid, created_at=now,
                                             payload={"calling_ae": rec.calling_ae,
                                                      "calling_host": rec.calling_host}))
        log.info("study %s: first instance from %s (%s)", rec.study_uid, rec.calling_ae, rec.calling_host)
        return study_pk

    def forget_cache(self) -> None:
        with self._lock:
            self._series_cache.clear()
