"""The index: records each stored instance under its patient, study and series, in one transaction.

New studies and studies that receive instances after completion produce events
(`study.received`, `study.reopened`) in the same transaction, so the engine never misses one.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.store.db import utcnow
from neuropetrix.store.models import Event, Instance, Patient, Series, Study

log = logging.getLogger("neuropetrix.store")


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
    """Writes instance rows; caches series → (series pk, study pk) to keep the hot path to one insert."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        dialect = sessions.kw["bind"].dialect.name
        self._insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        self._series_cache: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def contains(self, sop_instance_uid: str) -> bool:
        with self.sessions() as s:
            return s.scalar(select(Instance.id).where(Instance.sop_instance_uid == sop_instance_uid)) is not None

    def add(self, rec: InstanceRecord) -> bool:
        """Index `rec`; False when the instance was already indexed (a duplicate).

        Two associations may bring the first instances of one study at once; the loser of that race
        gets an IntegrityError and simply runs again, finding the rows the winner made.
        """
        for attempt in range(3):
            try:
                return self._add(rec)
            except IntegrityError:
                self.forget_cache()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _add(self, rec: InstanceRecord) -> bool:
        """The hot path: one insert and one update in the common case (series already known)."""
        now = utcnow()
        with self.sessions.begin() as s:
            series_pk, study_pk = self._series_of(s, rec, now)
            inserted = s.execute(
                self._insert(Instance.__table__).values(
                    sop_instance_uid=rec.sop_instance_uid, sop_class_uid=rec.sop_class_uid,
                    series_pk=series_pk, instance_number=rec.instance_number,
                    transfer_syntax_uid=rec.transfer_syntax_uid, path=rec.path, size_bytes=rec.size_bytes,
                    received_at=now, calling_ae=rec.calling_ae, calling_host=rec.calling_host)
                .on_conflict_do_nothing(index_elements=["sop_instance_uid"])).rowcount
            if not inserted:
                return False
            touched = s.execute(update(Study).where(Study.id == study_pk, Study.state == "receiving")
                                .values(last_received_at=now)).rowcount
            if not touched:   # the study was complete: this instance re-opens it
                s.execute(update(Study).where(Study.id == study_pk)
                          .values(state="receiving", last_received_at=now))
                s.add(Event(kind="study.reopened", study_uid=rec.study_uid, created_at=now,
                            payload={"calling_ae": rec.calling_ae}))
                log.info("study %s re-opened: new instance from %s", rec.study_uid, rec.calling_ae)
        return True

    def _series_of(self, s: Session, rec: InstanceRecord, now: datetime) -> tuple[int, int]:
        cached = self._series_cache.get(rec.series_uid)
        if cached is not None:
            return cached
        series = s.scalars(select(Series).where(Series.series_uid == rec.series_uid)).first()
        if series is None:
            study = self._study_of(s, rec, now)
            series = Series(series_uid=rec.series_uid, study_pk=study.id, modality=rec.modality,
                            series_number=rec.series_number, description=rec.series_description,
                            body_part=rec.body_part, frame_of_reference_uid=rec.frame_of_reference_uid,
                            calling_ae=rec.calling_ae)
            s.add(series)
            s.flush()
        with self._lock:
            self._series_cache[rec.series_uid] = (series.id, series.study_pk)
        return series.id, series.study_pk

    def _study_of(self, s: Session, rec: InstanceRecord, now: datetime) -> Study:
        study = s.scalars(select(Study).where(Study.study_uid == rec.study_uid)).first()
        if study is not None:
            return study
        patient = s.scalars(select(Patient).where(Patient.patient_id == rec.patient_id,
                                                  Patient.issuer == rec.issuer)).first()
        if patient is None:
            patient = Patient(patient_id=rec.patient_id, issuer=rec.issuer, name=rec.patient_name,
                              birth_date=rec.birth_date, sex=rec.sex)
            s.add(patient)
            s.flush()
        study = Study(study_uid=rec.study_uid, patient_pk=patient.id, study_date=rec.study_date,
                      study_time=rec.study_time, accession_number=rec.accession_number,
                      description=rec.study_description, state="receiving", first_received_at=now,
                      last_received_at=now, completion_count=0)
        s.add(study)
        s.flush()
        s.add(Event(kind="study.received", study_uid=rec.study_uid, created_at=now,
                    payload={"calling_ae": rec.calling_ae, "calling_host": rec.calling_host}))
        log.info("study %s: first instance from %s (%s)", rec.study_uid, rec.calling_ae, rec.calling_host)
        return study

    def forget_cache(self) -> None:
        with self._lock:
            self._series_cache.clear()
