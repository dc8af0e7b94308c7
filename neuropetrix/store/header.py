"""The five values every received instance is indexed by, read straight from its first bytes.

SOP Class, SOP Instance, Study and Series Instance UIDs and the Instance Number sit in groups
0008-0020 at the start of the dataset. Building a pydicom Dataset for them took about a third of the
SCP's time per instance, so they are read here by walking the top-level elements of a little-endian
dataset (sequences skipped item by item). Anything unusual — big endian, deflate, an element running
past the bytes at hand, an undefined-length UN — returns None and the caller lets pydicom read it.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import UID

SOP_CLASS, SOP_INSTANCE = 0x00080016, 0x00080018
STUDY, SERIES, INSTANCE_NUMBER = 0x0020000D, 0x0020000E, 0x00200013
LAST_TAG = 0x0020FFFF
_WANTED = {SOP_CLASS, SOP_INSTANCE, STUDY, SERIES, INSTANCE_NUMBER}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF


@dataclass(frozen=True)
class InstanceKeys:
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    instance_number: int | None


class _Short(Exception):
    """The bytes at hand end before the walk does, or hold what this reader does not handle."""


def _element(buf: bytes, pos: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag, VR or None, value length, position of the value) of the element at `pos`."""
    if pos + 8 > len(buf):
        raise _Short
    group, elem = struct.unpack_from("<HH", buf, pos)
    tag = group << 16 | elem
    if implicit or group == 0xFFFE:                  # items and delimiters have no VR
        return tag, None, struct.unpack_from("<I", buf, pos + 4)[0], pos + 8
    vr = buf[pos + 4:pos + 6]
    if vr in _LONG_VRS:
        if pos + 12 > len(buf):
            raise _Short
        return tag, vr, struct.unpack_from("<I", buf, pos + 8)[0], pos + 12
    return tag, vr, struct.unpack_from("<H", buf, pos + 6)[0], pos + 8


def _skip_undefined(buf: bytes, pos: int, implicit: bool) -> int:
    """Past a sequence of undefined length starting at `pos` (its first item)."""
    while True:
        tag, _, length, pos = _element(buf, pos, True)
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise _Short
        if length != _UNDEFINED:
            pos += length
            continue
        while True:                                   # an item of undefined length: its elements
            tag, vr, length, pos = _element(buf, pos, implicit)
            if tag == _ITEM_END:
                break
            if length == _UNDEFINED:
                if vr not in (None, b"SQ"):
                    raise _Short
                pos = _skip_undefined(buf, pos, implicit)
            else:
                pos += length


def _walk(buf: bytes, implicit: bool, whole: bool) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    pos = 0
    while True:
        if whole and pos == len(buf):
            return found
        tag, vr, length, pos = _element(buf, pos, implicit)
        if tag > LAST_TAG:
            return found
        if length == _UNDEFINED:
            if vr not in (None, b"SQ"):
                raise _Short
            pos = _skip_undefined(buf, pos, implicit)
            continue
        if pos + length > len(buf):
            raise _Short
        if tag in _WANTED:
            found[tag] = buf[pos:pos + length]
        pos += length


def _text(raw: bytes | None) -> str:
    return "" if raw is None else raw.decode("ascii", "replace").strip("\0 ")


def scan_keys(head: bytes, transfer_syntax: str, whole: bool = False) -> InstanceKeys | None:
    """The keys from the first bytes of a dataset (`whole`: all of it), or None when pydicom should
    read it instead."""
    syntax = UID(transfer_syntax)
    if not head or syntax.is_deflated or not syntax.is_little_endian:
        return None
    try:
        found = _walk(head, syntax.is_implicit_VR, whole)
        number = _text(found.get(INSTANCE_NUMBER))
        return InstanceKeys(_text(found.get(SOP_CLASS)), _text(found.get(SOP_INSTANCE)), _text(found.get(STUDY)),
                            _text(found.get(SERIES)), int(number) if number else None)
    except (_Short, ValueError, struct.error):
        return None


def int_value(ds: Dataset, keyword: str) -> int | None:
    """An IS/US attribute as an int, None when absent or not a number."""
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def keys_of(ds: Dataset) -> InstanceKeys:
    """The same keys from a dataset pydicom has read."""
    return InstanceKeys(str(ds.get("SOPClassUID", "") or ""), str(ds.get("SOPInstanceUID", "") or ""),
                        str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("SeriesInstanceUID", "") or ""),
                        int_value(ds, "InstanceNumber"))
