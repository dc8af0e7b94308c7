"""C-FIND attribute matching and answers, PS3.4 C.2.2.2: one matcher for the Modality Worklist
(engine/worklist.py) and Query/Retrieve (engine/query_retrieve.py).

An empty key (or `*`) matches everything (universal); `*` and `?` are wildcards in string keys; DA/TM
keys take ranges (`A-B`, `-B`, `A-`); a UI key takes a list of UIDs; person names compare
case-insensitively, Turkish dotted and dotless I included; a multi-valued attribute matches by any of
its values. Sequences are returned, not matched, unless the caller matches them (the worklist's
Scheduled Procedure Step). The answer holds the requested keys and only those, empty where the item
has no value.
"""
from __future__ import annotations

import re
from collections.abc import Collection

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence


def _fold(text: str) -> str:
    """Case-insensitive comparison of names, Turkish dotted and dotless I included."""
    return text.replace("İ", "i").replace("I", "ı").lower()


def _wildcard(pattern: str) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(f"^{body}$", re.DOTALL)


def text_of(value) -> str:
    """An element's value as one string (multiple values joined by backslashes)."""
    if value is None:
        return ""
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def range_of(query: str) -> tuple[str, str] | None:
    """(low, high) of a range matching key (`A-B`, `-B`, `A-`), None for a single value."""
    return tuple(query.split("-", 1)) if "-" in query else None   # type: ignore[return-value]


def _in_range(value: str, query: str, width: int) -> bool:
    bounds = range_of(query)
    if bounds is None:
        return value[:len(query)] == query if width == 6 else value == query
    low, high = bounds
    return (not low or value >= low.ljust(width, "0")[:width]) and (not high or value <= high.ljust(width, "9")[:width])


def key_matches(key: str, query, value) -> bool:
    """One key of PS3.4 C.2.2.2 matching; an empty query matches anything."""
    q = text_of(query)
    if q in ("", "*"):
        return True
    v = text_of(value)
    vr = dictionary_VR(key)
    if vr == "DA":
        return bool(v) and _in_range(v, q.replace(".", ""), 8)
    if vr == "TM":
        return bool(v) and _in_range(v.replace(":", "").split(".")[0], q.replace(":", "").split(".")[0], 6)
    if vr == "UI":
        return v in q.split("\\")
    if vr == "PN":
        return bool(_wildcard(_fold(q)).match(_fold(v))) if "*" in q or "?" in q else _fold(q) == _fold(v)
    if "*" in q or "?" in q:
        return bool(_wildcard(q).match(v))
    return q in v.split("\\") if "\\" in v else q == v


def matches(query: Dataset, item: Dataset, skip: Collection[str] = ()) -> bool:
    """Does `item` answer every key of `query` (the C-FIND identifier) but sequences and `skip`?"""
    for element in query:
        key = element.keyword
        if not key or key == "SpecificCharacterSet" or key in skip or element.VR == "SQ":
            continue
        if not key_matches(key, element.value, item.get(key)):
            return False
    return True


def _empty(element: DataElement) -> DataElement:
    return DataElement(element.tag, element.VR, Sequence() if element.VR == "SQ" else None)


def response(query: Dataset, item: Dataset, charset: str) -> Dataset:
    """The requested keys (and only those), with the item's values; empty when it has none."""
    out = Dataset()
    out.SpecificCharacterSet = charset
    for element in query:
        if element.keyword == "SpecificCharacterSet":
            continue
        have = item.get(element.tag)
        if element.VR == "SQ" and have is not None and element.value:
            asked = element.value[0]
            out.add(DataElement(element.tag, "SQ", Sequence([
                _select(asked, sub) for sub in have.value])))
        elif have is not None:
            out.add(DataElement(element.tag, have.VR, have.value))
        else:
            out.add(_empty(element))
    return out


def _select(asked: Dataset, item: Dataset) -> Dataset:
    sub = Dataset()
    for element in asked:
        have = item.get(element.tag)
        if element.VR == "SQ" and have is not None:
            sub.add(DataElement(element.tag, "SQ", Sequence([_select(element.value[0], x) for x in have.value])
                                if element.value else have.value))
        else:
            sub.add(DataElement(element.tag, have.VR, have.value) if have is not None else _empty(element))
    return sub
