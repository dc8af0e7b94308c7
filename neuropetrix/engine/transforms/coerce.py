"""Attribute coercion: set, copy, remove and map values (AE titles, institution names, …).

Keywords in group 0002 (e.g. SourceApplicationEntityTitle) act on the file meta, the rest on the
dataset, so an AE title recorded by the receiving node can be mapped like any other attribute.
"""
from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from neuropetrix.engine.transforms.errors import TransformError


def check_keyword(keyword: Any) -> str:
    if not isinstance(keyword, str) or tag_for_keyword(keyword) is None:
        raise TransformError(f"{keyword!r} is not a DICOM keyword")
    if dictionary_VR(keyword) == "SQ":
        raise TransformError(f"{keyword} is a sequence; coercion sets plain values only")
    return keyword


def _holder(ds: Dataset, keyword: str) -> Dataset:
    tag = tag_for_keyword(keyword)
    if tag is not None and tag >> 16 == 0x0002:
        if not hasattr(ds, "file_meta"):
            ds.file_meta = Dataset()
        return ds.file_meta
    return ds


def set_values(ds: Dataset, values: dict[str, Any]) -> None:
    for keyword, value in values.items():
        setattr(_holder(ds, keyword), keyword, value)


def copy_values(ds: Dataset, targets: dict[str, str]) -> None:
    """{Target: Source}: the target gets the source's value; nothing happens when the source is absent."""
    for target, source in targets.items():
        holder = _holder(ds, source)
        if source in holder:
            setattr(_holder(ds, target), target, holder[source].value)


def remove_values(ds: Dataset, keywords: list[str]) -> None:
    for keyword in keywords:
        holder = _holder(ds, keyword)
        if keyword in holder:
            delattr(holder, keyword)


def map_values(ds: Dataset, tables: dict[str, dict[str, Any]]) -> None:
    """{Keyword: {old: new}}: a value found in the table is replaced, others are kept."""
    for keyword, table in tables.items():
        holder = _holder(ds, keyword)
        if keyword in holder:
            old = str(holder[keyword].value).strip()
            if old in table:
                setattr(holder, keyword, table[old])


def check(kind: str, body: Any) -> None:
    """Refuse a coercion step that cannot work, naming what is wrong."""
    if kind == "remove":
        if not isinstance(body, list) or not body:
            raise TransformError("remove: give a list of keywords")
        for k in body:
            check_keyword(k)
        return
    if not isinstance(body, dict) or not body:
        raise TransformError(f"{kind}: give a mapping of keywords")
    for k, v in body.items():
        check_keyword(k)
        if kind == "copy":
            check_keyword(v)
        if kind == "map" and (not isinstance(v, dict) or not v):
            raise TransformError(f"map: {k} needs a table of old: new values")
