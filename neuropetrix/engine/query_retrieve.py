"""Query/Retrieve C-FIND over what the node holds: Patient Root and Study Root (PS3.4 C.6.1, C.6.2).

Levels PATIENT (Patient Root only), STUDY, SERIES and IMAGE, over the index (store/models.py). The
keys the index has a column for are matched in SQL (single values, `*`/`?` wildcards as LIKE, DA/TM
ranges, UID lists), so a large index is narrowed by its indexes (migration 0014); every candidate row
is then matched again with the PS3.4 C.2.2.2 matcher the worklist uses (`engine/find_matching.py`), which is
the rule: person names case-insensitively with Turkish İ/ı, multi-valued attributes by any value. Keys
the index does not keep are returned zero-length (C.4.1.1.3.2). Missing unique keys of the levels above
are taken as universal (a relational-style query is answered rather than refused). The caller checks
are those of every association (node/scp/policy.py: known callers, called AE title). Each match carries
Retrieve AE Title (our AE) and Specific Character Set ISO_IR 192; rows are read in pages by key (ids above
the last page's, never OFFSET), so a C-CANCEL stops the query between two matches and a large answer is
never held in memory. Every key the benchmark asks (benchmarks/cfind.py) is answered from an index.
With the results folder given, our derived objects (SEG, SR, PDF in results/<study>/, not in the index)
follow the stored ones at the SERIES and IMAGE levels, their keys read from their own headers.

C-MOVE and C-GET (`QueryRetrieveFiles`) select by the unique keys only (C.4.2.2.1): every stored
instance under them and the derived objects of the selected studies.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.engine.find_matching import matches, response
from neuropetrix.store.models import Instance, Patient, Series, Study

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
_ORDER = {"PATIENT": Patient.id, "STUDY": Study.id, "SERIES": Series.id, "IMAGE": Instance.id}
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
    return stmt.order_by(_ORDER[level])


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


def _pages(s: Session, stmt: Select[Any], level: str) -> Iterator[Any]:
    """The rows of `stmt`, PAGE at a time by the level's id (ids above the last page's, never OFFSET)."""
    key, depth = _ORDER[level], LEVELS.index(level)
    last = 0
    while True:
        rows = s.execute(stmt.where(key > last).limit(PAGE)).all()
        yield from rows
        if len(rows) < PAGE:
            return
        last = rows[-1][depth].id


# the series and image keys of a derived object, read from its own header
_DERIVED_KEYS = [keyword for keyword, (level, _) in _COLUMNS.items() if level in ("SERIES", "IMAGE")]


@dataclass
class QueryRetrieveFind:
    """The C-FIND provider of one information model (`root`: "PATIENT" or "STUDY"); with `results`
    (data_dir/results), our derived objects of each study are listed at the SERIES and IMAGE levels."""

    sessions: sessionmaker[Session]
    ae_title: str
    root: str = "STUDY"
    results: Path | None = None

    def level_of(self, identifier: Dataset) -> str:
        level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
        if level not in LEVELS:
            raise QueryRefused(f"Query/Retrieve Level {level or '(missing)'!r} is not one of {', '.join(LEVELS)}")
        if level == "PATIENT" and self.root == "STUDY":
            raise QueryRefused("the Study Root information model has no PATIENT level")
        return level

    def __call__(self, identifier: Dataset, calling_ae: str) -> Iterator[Dataset]:
        level = self.level_of(identifier)
        with self.sessions() as s:      # pages: a cancelled query stops reading, a big answer is never in memory
            items = (_item(level, row, s, identifier) for row in _pages(s, _statement(level, identifier), level))
            if self.results is not None and level in ("SERIES", "IMAGE"):
                items = chain(items, self._derived(s, level, identifier))
            for item in items:
                if matches(_match_query(identifier, item), item):
                    out = response(identifier, item, CHARSET)
                    out.RetrieveAETitle = self.ae_title      # where to C-MOVE it from (C.4.1.1.3.2)
                    yield out

    def _derived(self, s: Session, level: str, identifier: Dataset) -> Iterator[Dataset]:
        """Our SEG/SR/PDF (results/<study>/*.dcm) of the studies the identifier's patient and study keys
        select, one item per series (SERIES) or per object (IMAGE), to be matched like the others."""
        study_keys = Dataset()
        for element in identifier:
            if element.keyword in _COLUMNS and _COLUMNS[element.keyword][0] in ("PATIENT", "STUDY"):
                study_keys.add(element)
        assert self.results is not None
        for row in _pages(s, _statement("STUDY", study_keys), "STUDY"):
            folder = self.results / row[1].study_uid
            headers = [dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))] \
                if folder.is_dir() else []
            groups: dict[str, list[Dataset]] = {}
            for header in headers:
                key = str(header.SeriesInstanceUID) if level == "SERIES" else str(header.SOPInstanceUID)
                groups.setdefault(key, []).append(header)
            for group in groups.values():
                item = _item("STUDY", row, s, identifier)
                item.QueryRetrieveLevel = level
                for keyword in _DERIVED_KEYS:
                    if level == "IMAGE" or _COLUMNS[keyword][0] == "SERIES":
                        value = group[0].get(keyword)
                        setattr(item, keyword, value if dictionary_VR(keyword) in ("IS", "US") else _text(value))
                if "NumberOfSeriesRelatedInstances" in identifier:
                    item.NumberOfSeriesRelatedInstances = len(group)
                yield item


def providers(sessions: sessionmaker[Session], ae_title: str,
              results: Path | None = None) -> dict[str, QueryRetrieveFind]:
    """Both information models, by SOP Class UID, for the SCP's `find_providers`; with `results`, our
    derived objects are listed too."""
    return {PatientRootQueryRetrieveInformationModelFind: QueryRetrieveFind(sessions, ae_title, "PATIENT", results),
            StudyRootQueryRetrieveInformationModelFind: QueryRetrieveFind(sessions, ae_title, "STUDY", results)}


# the unique key a retrieve at each level must name (PS3.4 C.4.2.2.1)
_UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
           "IMAGE": "SOPInstanceUID"}


@dataclass
class QueryRetrieveFiles:
    """The C-MOVE / C-GET provider of one information model: the stored files a request selects, and
    our derived objects (SEG, SR, encapsulated PDF in results/<study>/) of the studies it selects."""

    sessions: sessionmaker[Session]
    storage: Path
    results: Path
    root: str = "STUDY"

    def __call__(self, identifier: Dataset, calling_ae: str) -> list[Path]:
        level = QueryRetrieveFind(self.sessions, "", self.root).level_of(identifier)
        unique = _UNIQUE[level]
        if not _query_text(identifier.get(unique, "")).strip("*"):
            raise QueryRefused(f"a retrieve at the {level} level names its {unique}")
        keys = Dataset()       # only the unique keys select (C.4.2.2.1); other keys are ignored
        for keyword in _UNIQUE.values():
            if keyword in identifier and LEVELS.index(_COLUMNS[keyword][0]) <= LEVELS.index(level):
                setattr(keys, keyword, identifier.get(keyword))
        study_keys = Dataset()
        for keyword in ("PatientID", "StudyInstanceUID"):
            if keyword in keys:
                setattr(study_keys, keyword, keys.get(keyword))
        with self.sessions() as s:
            files = [self.storage / path for path in
                     s.scalars(_statement("IMAGE", keys).with_only_columns(Instance.path))]
            studies = list(s.scalars(_statement("STUDY", study_keys).with_only_columns(Study.study_uid)))
        for study_uid in studies:
            files += self._derived(study_uid, level, keys)
        return files

    def _derived(self, study_uid: str, level: str, keys: Dataset) -> list[Path]:
        """Our objects of a selected study that the request's series or instance keys select too."""
        folder = self.results / study_uid
        found = []
        for path in sorted(folder.glob("*.dcm")) if folder.is_dir() else ():
            if level in ("SERIES", "IMAGE"):
                header = dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "SOPInstanceUID"])
                if not all(str(header.get(k, "")) in _query_text(keys.get(k, "")).split("\\")
                           for k in ("SeriesInstanceUID", "SOPInstanceUID")[:LEVELS.index(level) - 1]):
                    continue
            found.append(path)
        return found


def retrieve_providers(sessions: sessionmaker[Session], storage: Path, results: Path) -> dict[str, QueryRetrieveFiles]:
    """C-MOVE and C-GET of both information models, by SOP Class UID, for the SCP's `retrieve_providers`."""
    patient, study = (QueryRetrieveFiles(sessions, storage, results, root) for root in ("PATIENT", "STUDY"))
    return {PatientRootQueryRetrieveInformationModelMove: patient, PatientRootQueryRetrieveInformationModelGet: patient,
            StudyRootQueryRetrieveInformationModelMove: study, StudyRootQueryRetrieveInformationModelGet: study}
