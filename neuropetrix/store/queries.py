"""Read-side queries over the index, shared by the command line and the API."""
from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from neuropetrix.store.models import Instance, Patient, Series, Study


@dataclass(frozen=True)
class StudyRow:
    study_uid: str
    patient_id: str
    patient_name: str
    accession_number: str
    study_date: str
    modalities: list[str]
    series: int
    instances: int
    state: str
    last_received_at: datetime
    completed_at: datetime | None

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}   # asdict() deep-copies: 5x slower
        d["modalities"] = list(self.modalities)
        d["last_received_at"] = self.last_received_at.isoformat() + "Z"
        d["completed_at"] = self.completed_at.isoformat() + "Z" if self.completed_at else None
        return d


@dataclass(frozen=True)
class StudyFilter:
    """Which studies to list; every field left None matches all."""

    state: str | None = None
    modality: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    date_from: str | None = None        # StudyDate YYYYMMDD, inclusive
    date_to: str | None = None
    text: str | None = None             # in the patient name or the study description

    def conditions(self) -> list[ColumnElement[bool]]:
        c: list[ColumnElement[bool]] = []
        if self.state:
            c.append(Study.state == self.state)
        if self.modality:
            c.append(Study.id.in_(select(Series.study_pk).where(Series.modality == self.modality)))
        if self.patient_id:
            c.append(Patient.patient_id == self.patient_id)
        if self.accession_number:
            c.append(Study.accession_number == self.accession_number)
        if self.date_from:
            c.append(Study.study_date >= self.date_from)
        if self.date_to:
            c.append(Study.study_date <= self.date_to)
        if self.text:
            like = f"%{self.text}%"
            c.append(or_(Patient.name.ilike(like), Study.description.ilike(like)))
        return c


def count_studies(s: Session, where: StudyFilter = StudyFilter()) -> int:
    return s.scalar(select(func.count(Study.id)).join(Patient).where(*where.conditions())) or 0


def list_studies(s: Session, limit: int = 1000, offset: int = 0,
                 where: StudyFilter = StudyFilter()) -> list[StudyRow]:
    """Studies, newest first, with their modalities and counts (two grouped queries, not N+1)."""
    # Columns, not ORM entities: the list is read on every dashboard refresh, and building entities
    # costs several times the queries themselves.
    studies = s.execute(
        select(Study.id, Study.study_uid, Patient.patient_id, Patient.name, Study.accession_number,
               Study.study_date, Study.state, Study.last_received_at, Study.completed_at)
        .join(Patient).where(*where.conditions())
        .order_by(Study.last_received_at.desc(), Study.id.desc()).limit(limit).offset(offset)).all()
    pks = [st.id for st in studies]
    if not pks:
        return []
    series_rows = s.execute(select(Series.study_pk, Series.modality, func.count(Instance.id))
                            .outerjoin(Instance).where(Series.study_pk.in_(pks))
                            .group_by(Series.id)).all()
    mods: dict[int, set[str]] = {}
    counts: dict[int, list[int]] = {}
    for study_pk, modality, n in series_rows:
        if modality:
            mods.setdefault(study_pk, set()).add(modality)
        c = counts.setdefault(study_pk, [0, 0])
        c[0] += 1
        c[1] += n
    return [StudyRow(study_uid=st.study_uid, patient_id=st.patient_id, patient_name=st.name,
                     accession_number=st.accession_number, study_date=st.study_date,
                     modalities=sorted(mods.get(st.id, ())), series=counts.get(st.id, [0, 0])[0],
                     instances=counts.get(st.id, [0, 0])[1], state=st.state,
                     last_received_at=st.last_received_at, completed_at=st.completed_at)
            for st in studies]
