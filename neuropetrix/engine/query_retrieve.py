"""Query/Retrieve C-FIND over what the node holds: Patient Root and Study Root (PS3.4 C.6.1, C.6.2).

Levels PATIENT (Patient Root only), STUDY, SERIES and IMAGE, over the index (store/models.py). The
keys the index has a column for are matched in SQL (single values, `*`/`?` wildcards as LIKE, DA/TM
ranges, UID lists), so a large index is narrowed by its indexes (migration 0014); every candidate row
is then matched again with the worklist's PS3.4 C.2.2.2 matcher (`engine.worklist.matches`), which is
the rule: person names case-insensitively with Turkish İ/ı, multi-valued attributes by any value. Keys
the index does not keep are returned zero-length (C.4.1.1.3.2). Missing unique keys of the levels above
are taken as universal (a relational-style query is answered rather than refused). The caller checks
are those of every association (node/scp/policy.py: known callers, called AE title). Each match carries
Retrieve AE Title (our AE) and Specific Character Set ISO_IR 192; rows are read in pages, so a C-CANCEL
stops the query between two matches and a large answer is never held in memory.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.engine.worklist import matches, response
from neuropetrix.store.models import Instance, Patient, Series, Study

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
CHARSET = "ISO_IR 192"
PAGE = 500

# keyword → (level it belongs to, column)
_COLUMNS: dict[str, tuple[str, Any]] = {
    "PatientName": ("PATIENT", Patient.name), "PatientID": ("PATIENT", Patient.patient_id),
    "IssuerOfPatientID": ("PATIENT", Patient.issuer), "PatientBirthDate": ("PATIENT", Patient.birth_date),
    "PatientSex": ("PATIENT", Patient.sex),
    "StudyInstanceUID": ("STUDY", Study.study_uid), "StudyDate": ("STUDY", Study.study_date),
    "StudyTime": ("STUDY", Study.study_time), "AccessionNumber": ("STUDY", Study.accession_number),
    "StudyDescription": ("STUDY", Study.description),
    "SeriesInstanceUID": ("SERIES", Series.series_uid), "Modality": ("SERIES", Series.modality),
    "SeriesNumber": ("SERIES", Series.series_number), "SeriesDescription": ("SERIES", Series.description),
    "BodyPartExamined": ("SERIES", Series.body_part),
    "FrameOfReferenceUID": ("SERIES", Series.frame_of_reference_uid),
    "SOPInstanceUID": ("IMAGE", Instance.sop_instance_uid), "SOPClassUID": ("IMAGE", Instance.sop_class_uid),
    "InstanceNumber": ("IMAGE", Instance.instance_number),
}
_ROWS = {"PATIENT": (Patient,), "STUDY": (Patient, Study), "SERIES": (Patient, Study, Series),
         "IMAGE": (Patient, Study, Series, Instance)}


class QueryRefused(ValueError):
    """The identifier cannot be answered (answered Unable to process with this reason)."""


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _condition(keyword: str, column: Any, query: str) -> ColumnElement[bool] | None:
    """A SQL condition that every match satisfies (a superset of the PS3.4 rule; None: no narrowing)."""
    vr = dictionary_VR(keyword)
    if vr == "PN" or vr in ("IS", "US"):         # names fold case (Turkish İ); numbers: matched afterwards
        return None
    if vr == "UI":
        return column.in_(query.split("\\"))
    if vr in ("DA", "TM"):
        if "-" not in query:
            return None if vr == "TM" else column == query.replace(".", "")
        low, high = query.split("-", 1)
        parts = [column >= low] if low else []
        if high:
            parts.append(column <= high.ljust(8 if vr == "DA" else 6, "9"))
        return and_(*parts) if parts else None
    if "*" in query or "?" in query:
        return column.like(_like(query), escape="\\")
    return None if "\\" in query else column == query


def _statement(level: str, identifier: Dataset) -> Select[Any]:
    rows = _ROWS[level]
    stmt = select(*rows)
    if "Study" in (r.__name__ for r in rows):
        stmt = stmt.join(Study, Study.patient_pk == Patient.id)
    if len(rows) >= 3:
        stmt = stmt.join(Series, Series.study_pk == Study.id)
    if len(rows) == 4:
        stmt = stmt.join(Instance, Instance.series_pk == Series.id)
    depth = LEVELS.index(level)
    for element in identifier:
        known = _COLUMNS.get(element.keyword)
        if known is None or LEVELS.index(known[0]) > depth or element.VR == "SQ":
            continue
        query = _query_text(element.value)
        if query in ("", "*"):
            continue
        condition = _condition(element.keyword, known[1], query)
        if condition is not None:
            stmt = stmt.where(condition)
    if "ModalitiesInStudy" in identifier and depth >= 1:
        wanted = [m for m in _query_text(identifier.ModalitiesInStudy).split("\\") if m and m != "*"]
        if wanted and not any("*" in m or "?" in m for m in wanted):
            stmt = stmt.where(select(Series.id).where(Series.study_pk == Study.id,
                                                      Series.modality.in_(wanted)).exists())
    order = {"PATIENT": Patient.id, "STUDY": Study.id, "SERIES": Series.id, "IMAGE": Instance.id}[level]
    return stmt.order_by(order)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _query_text(value: Any) -> str:
    """A key's value as the matcher reads it: a list of values joined by backslashes."""
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    return _text(value).strip()


def _item(level: str, row: Any, s: Session, identifier: Dataset) -> Dataset:
    """Everything the index says about one row at `level`, counts only when they were asked for."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    depth = LEVELS.index(level)
    for keyword, (key_level, column) in _COLUMNS.items():
        if LEVELS.index(key_level) <= depth:
            entity = row[LEVELS.index(key_level)]
            value = getattr(entity, column.key)
            setattr(ds, keyword, value if dictionary_VR(keyword) in ("IS", "US") else _text(value))
    patient = row[0]
    if "NumberOfPatientRelatedStudies" in identifier:
        ds.NumberOfPatientRelatedStudies = s.scalar(select(func.count(Study.id)).where(Study.patient_pk == patient.id))
    if depth >= 1:
        study = row[1]
        if "ModalitiesInStudy" in identifier:
            ds.ModalitiesInStudy = sorted(m for m in s.scalars(
                select(Series.modality).where(Series.study_pk == study.id).distinct()) if m)
        if "NumberOfStudyRelatedSeries" in identifier:
            ds.NumberOfStudyRelatedSeries = s.scalar(select(func.count(Series.id)).where(Series.study_pk == study.id))
        if "NumberOfStudyRelatedInstances" in identifier:
            ds.NumberOfStudyRelatedInstances = s.scalar(
                select(func.count(Instance.id)).join(Series, Instance.series_pk == Series.id)
                .where(Series.study_pk == study.id))
    if depth >= 2 and "NumberOfSeriesRelatedInstances" in identifier:
        ds.NumberOfSeriesRelatedInstances = s.scalar(
            select(func.count(Instance.id)).where(Instance.series_pk == row[2].id))
    return ds


def _match_query(identifier: Dataset, item: Dataset) -> Dataset:
    """The keys matched in Python: those the item has (others are not supported, so not matched); a list
    of modalities was decided in SQL (any of them), which the single-value matcher cannot say."""
    query = Dataset()
    for element in identifier:
        if element.keyword in item and not (element.keyword == "ModalitiesInStudy" and element.VM > 1):
            query.add(element)
    return query


@dataclass
class QueryRetrieveFind:
    """The C-FIND provider of one information model (`root`: "PATIENT" or "STUDY")."""

    sessions: sessionmaker[Session]
    ae_title: str
    root: str = "STUDY"

    def level_of(self, identifier: Dataset) -> str:
        level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
        if level not in LEVELS:
            raise QueryRefused(f"Query/Retrieve Level {level or '(missing)'!r} is not one of {', '.join(LEVELS)}")
        if level == "PATIENT" and self.root == "STUDY":
            raise QueryRefused("the Study Root information model has no PATIENT level")
        return level

    def __call__(self, identifier: Dataset, calling_ae: str) -> Iterator[Dataset]:
        level = self.level_of(identifier)
        stmt = _statement(level, identifier)
        with self.sessions() as s:
            offset = 0
            while True:      # pages: a cancelled query stops reading, a big answer is never all in memory
                rows = s.execute(stmt.limit(PAGE).offset(offset)).all()
                for row in rows:
                    item = _item(level, row, s, identifier)
                    if matches(_match_query(identifier, item), item):
                        out = response(identifier, item, CHARSET)
                        out.RetrieveAETitle = self.ae_title      # where to C-MOVE it from (C.4.1.1.3.2)
                        yield out
                if len(rows) < PAGE:
                    return
                offset += PAGE


def providers(sessions: sessionmaker[Session], ae_title: str) -> dict[str, QueryRetrieveFind]:
    """Both information models, by SOP Class UID, for the SCP's `find_providers`."""
    return {PATIENT_ROOT_FIND: QueryRetrieveFind(sessions, ae_title, "PATIENT"),
            STUDY_ROOT_FIND: QueryRetrieveFind(sessions, ae_title, "STUDY")}
