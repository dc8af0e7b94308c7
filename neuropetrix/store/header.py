"""The five values every received instance is indexed by, read straight from its first bytes.

SOP Class, SOP Instance, Study and Series Instance UIDs and the Instance Number sit in groups
0008-0020 at the start of the dataset. Building a pydicom Dataset for them took about a third of the
SCP's time per instance, so they are read here by walking the top-level elements of a little-endian
dataset (sequences skipped item by item). Anything unusual — big endian, deflate, an element running
past the bytes at hand, an undefined-length UN — returns None and the caller lets pydicom read it.
"""
from __future__ import annotations

import functools
import struct
from collections.abc import Callable
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


@functools.lru_cache(maxsize=256)
def _walkable(transfer_syntax: str) -> tuple[bool, bool]:
    """(walkable here: little endian, not deflated; implicit VR) — cached, as pydicom's UID checks its
    value each time one is made."""
    syntax = UID(transfer_syntax)
    return syntax.is_little_endian and not syntax.is_deflated, syntax.is_implicit_VR


def scan_keys(head: bytes, transfer_syntax: str, whole: bool = False) -> InstanceKeys | None:
    """The keys from the first bytes of a dataset (`whole`: all of it), or None when pydicom should
    read it instead."""
    walkable, implicit = _walkable(transfer_syntax)
    if not head or not walkable:
        return None
    try:
        found = _walk(head, implicit, whole)
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


_BLOCK = 1 << 16


class _Dataset:
    """A received dataset of `size` bytes: its first bytes in memory, the rest read from its file."""

    def __init__(self, head: bytes, size: int, read_at: Callable[[int, int], bytes]) -> None:
        self.head, self.size, self.read_at = head, size, read_at
        self._block_at, self._block = 0, b""

    def _bytes(self, pos: int, n: int) -> bytes:
        if pos + n <= len(self.head):
            return self.head[pos:pos + n]
        if not (self._block_at <= pos and pos + n <= self._block_at + len(self._block)):
            self._block_at, self._block = pos, self.read_at(pos, _BLOCK)
        return self._block[pos - self._block_at:pos - self._block_at + n]

    def element(self, pos: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
        """(tag, VR, value length, value position) of the element header at `pos`."""
        if pos + 8 > self.size:
            raise _Short(f"the dataset ends inside an element header at byte {pos} of {self.size}")
        raw = self._bytes(pos, min(12, self.size - pos))
        try:
            tag, vr, length, at = _element(raw, 0, implicit)
        except _Short:
            raise _Short(f"the dataset ends inside an element header at byte {pos} of {self.size}") from None
        return tag, vr, length, pos + at

    def skip(self, tag: int, pos: int, length: int) -> int:
        if pos + length > self.size:
            raise _Short(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) declares {length} bytes, "
                         f"{self.size - pos} arrived")
        return pos + length


def _items(data: _Dataset, tag: int, pos: int, implicit: bool) -> int:
    """Past the items of an undefined-length sequence (or encapsulated Pixel Data) at `pos`."""
    while True:
        item, _, length, pos = data.element(pos, True)
        if item == _SEQUENCE_END:
            return pos
        if item != _ITEM:
            raise _Short(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) holds something other than items")
        pos = _elements(data, pos, None, implicit) if length == _UNDEFINED else data.skip(tag, pos, length)


_TAG_LENGTH, _EXPLICIT_SHORT, _LENGTH = struct.Struct("<HHI"), struct.Struct("<HH2sH"), struct.Struct("<I")


def _defined_run(head: bytes, pos: int, end: int, implicit: bool) -> int:
    """Past the top-level elements from `pos` whose header is in `head` and whose defined-length
    value ends by `end`: the common case, walked without the general reader's calls (it runs once
    per received instance)."""
    limit = len(head) - 12
    while pos <= limit:
        if implicit:
            group, _, length = _TAG_LENGTH.unpack_from(head, pos)
            header = 8
        else:
            group, _, vr, length = _EXPLICIT_SHORT.unpack_from(head, pos)
            header = 8
            if vr in _LONG_VRS:
                length, header = _LENGTH.unpack_from(head, pos + 8)[0], 12
        if group == 0xFFFE or length == _UNDEFINED or pos + header + length > end:
            return pos
        pos += header + length
    return pos


def _elements(data: _Dataset, pos: int, end: int | None, implicit: bool) -> int:
    """Past the elements from `pos` to `end`, or (`end` None) to an item delimiter."""
    while end is None or pos < end:
        if end is not None:
            pos = _defined_run(data.head, pos, end, implicit)
            if pos >= end:
                return pos
        tag, vr, length, pos = data.element(pos, implicit)
        if end is None and tag == _ITEM_END:
            return pos
        if length == _UNDEFINED:
            pos = _items(data, tag, pos, implicit or vr == b"UN")
        else:
            pos = data.skip(tag, pos, length)
    return pos


def truncation(head: bytes, size: int, read_at: Callable[[int, int], bytes], transfer_syntax: str) -> str | None:
    """Why a received dataset of `size` bytes is not whole — an element (Pixel Data, say) declares
    more bytes than arrived, or the data ends inside an element — or None when it is whole.

    Walks the top-level elements, entering only undefined-length sequences and items: the first bytes
    come from `head`, the rest from `read_at(position, length)`, so a typical image costs one walk of
    its header in memory. Deflated and big-endian datasets are not walked (None)."""
    walkable, implicit = _walkable(transfer_syntax)
    if not walkable:
        return None
    try:
        _elements(_Dataset(head, size, read_at), 0, size, implicit)
    except _Short as exc:
        return str(exc) or "the dataset is cut short"
    return None
