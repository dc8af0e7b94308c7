"""What a rule can ask about a series: any DICOM keyword of its header, plus a few named facts.

The facts come from one header per series (read from storage or from a folder) and from what the
node recorded on receipt (the calling AE title, the instance count).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from neuropetrix.store.files import FileStore
from neuropetrix.store.models import Instance, Series, Study

log = logging.getLogger("neuropetrix.engine")

# Named facts and the DICOM keyword each one reads (None: computed below).
_ALIASES: dict[str, str | None] = {
    "modality": "Modality", "study_description": "StudyDescription",
    "series_description": "SeriesDescription", "body_part": "BodyPartExamined",
    "institution": "InstitutionName", "station": "StationName", "manufacturer": "Manufacturer",
    "patient_weight": "PatientWeight", "accession_number": "AccessionNumber",
    "calling_ae": None, "instances": None, "tracer": None, "radionuclide": None,
}


def attribute_names() -> list[str]:
    return sorted(_ALIASES)


def is_attribute(key: str) -> bool:
    return key in _ALIASES or tag_for_keyword(key) is not None


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, DicomSequence | bytes):
        return None
    if isinstance(value, MultiValue | list):
        return [str(v) for v in value]
    if isinstance(value, int | float):
        return value
    text = str(value).strip()
    return text if text else None


def _first_item(ds: Dataset, keyword: str) -> Dataset | None:
    seq = ds.get(keyword)
    return seq[0] if seq else None


@dataclass(frozen=True)
class SeriesFacts:
    series_uid: str
    header: Dataset
    calling_ae: str = ""
    instances: int = 0

    def value(self, key: str) -> Any:
        """The value of `key` for this series: str, number, list of str, or None when absent."""
        if key == "calling_ae":
            return self.calling_ae or None
        if key == "instances":
            return self.instances
        if key == "tracer":
            info = _first_item(self.header, "RadiopharmaceuticalInformationSequence")
            if info is None:
                return None
            names = [_plain(info.get("Radiopharmaceutical"))]
            code = _first_item(info, "RadiopharmaceuticalCodeSequence")
            if code is not None:
                names.append(_plain(code.get("CodeMeaning")))
            names = [n for n in names if n]
            return names or None
        if key == "radionuclide":
            info = _first_item(self.header, "RadiopharmaceuticalInformationSequence")
            code = _first_item(info, "RadionuclideCodeSequence") if info is not None else None
            return _plain(code.get("CodeMeaning")) if code is not None else None
        keyword = _ALIASES.get(key) or key
        return _plain(self.header.get(keyword))


def facts_from_folder(folder: Path, calling_ae: str = "") -> list[SeriesFacts]:
    """One SeriesFacts per series found in the DICOM files under `folder` (others are skipped)."""
    headers: dict[str, Dataset] = {}
    counts: dict[str, int] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, AttributeError):
            continue
        uid = str(ds.get("SeriesInstanceUID", ""))
        if not uid:
            continue
        headers.setdefault(uid, ds)
        counts[uid] = counts.get(uid, 0) + 1
    return [SeriesFacts(uid, headers[uid], calling_ae, counts[uid]) for uid in headers]


def facts_from_store(s: Session, files: FileStore, study_uid: str) -> list[SeriesFacts]:
    """One SeriesFacts per series of a stored study, from its first instance's header."""
    rows = s.execute(
        select(Series.series_uid, Series.calling_ae, func.min(Instance.path), func.count(Instance.id))
        .join(Study, Series.study_pk == Study.id).join(Instance, Instance.series_pk == Series.id)
        .where(Study.study_uid == study_uid).group_by(Series.id).order_by(Series.id)).all()
    out = []
    for series_uid, calling_ae, path, count in rows:
        try:
            header = dcmread(files.path_of(path), stop_before_pixels=True)
        except (InvalidDicomError, OSError) as exc:
            log.warning("study %s series %s: cannot read %s for routing: %s", study_uid, series_uid, path, exc)
            continue
        out.append(SeriesFacts(series_uid, header, calling_ae, count))
    return out


def study_files(s: Session, files: FileStore, study_uid: str) -> list[Path]:
    """Every stored instance file of a study, in series then instance order."""
    paths = s.scalars(select(Instance.path).join(Series).join(Study)
                      .where(Study.study_uid == study_uid)
                      .order_by(Series.id, Instance.instance_number, Instance.id)).all()
    return [files.path_of(p) for p in paths]
