"""Read-side queries over the index, shared by the command line and the API."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import func, select
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
        d = asdict(self)
        d["last_received_at"] = self.last_received_at.isoformat() + "Z"
        d["completed_at"] = self.completed_at.isoformat() + "Z" if self.completed_at else None
        return d


def list_studies(s: Session, limit: int = 1000, offset: int = 0) -> list[StudyRow]:
    """Studies, newest first, with their modalities and counts (two grouped queries, not N+1)."""
    studies = s.execute(
        select(Study, Patient).join(Patient).order_by(Study.last_received_at.desc())
        .limit(limit).offset(offset)).all()
    pks = [st.id for st, _ in studies]
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
    return [StudyRow(study_uid=st.study_uid, patient_id=pt.patient_id, patient_name=pt.name,
                     accession_number=st.accession_number, study_date=st.study_date,
                     modalities=sorted(mods.get(st.id, ())), series=counts.get(st.id, [0, 0])[0],
                     instances=counts.get(st.id, [0, 0])[1], state=st.state,
                     last_received_at=st.last_received_at, completed_at=st.completed_at)
            for st, pt in studies]
