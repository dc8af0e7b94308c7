"""A built DICOM object as Part 10 file bytes, byte for byte what pydicom's `save_as` writes, faster.

Two costs made writing a 400-slice SR most of the time it took to write the reports. pydicom checks
every dataset it writes for ambiguous VRs (US or SS, OB or OW, …) when that dataset was not read in
the encoding it is written in, which no dataset built in memory was; each check walks the dataset's
whole subtree, and the writer checks every nested item again when it reaches it, so an eight-level
SR content tree was walked about eight times. And it encodes every item anew, though the Image
Library's entries share most of their items (reports/imagelibrary.py): each slice's entry differs
from the next only in its UID and position.

`dicom_bytes` encodes every sequence item once per distinct item object, pydicom's own
`write_data_element` writing every element that is not a sequence, and the sequence and item framing
written as `write_sequence_item` writes it (defined item lengths, undefined ones where the dataset
says so). The top-level sequences go into a shallow copy of the dataset as already-encoded elements,
and pydicom's `dcmwrite` writes the preamble, the file meta and the rest. tests/reports compares the
bytes with `save_as`'s for the SR, the SEG and the encapsulated PDF. An element whose VR is still
ambiguous stops the encoding: the VRs are then corrected once from the top (where each element sees
the ancestors it is resolved against) and the object is encoded again.
"""
from __future__ import annotations

import io
import struct

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr, write_data_element
from pydicom.tag import ItemDelimiterTag, ItemTag, SequenceDelimiterTag
from pydicom.uid import UID
from pydicom.valuerep import AMBIGUOUS_VR

_UNDEFINED = 0xFFFFFFFF
Encodings = str | list[str]


class _Ambiguous(Exception):
    """An element's VR depends on other elements (US or SS, OB or OW): correct the VRs first."""


def _tag(tag: int, length: int) -> bytes:
    """A tag and a 4-byte length, little endian: an item's or a delimiter's header."""
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, length)


class _Encoder:
    """Encodes sequence values for one transfer syntax (little endian, explicit or implicit VR),
    remembering each item's bytes by the item object and the character sets it is written in."""

    def __init__(self, implicit: bool) -> None:
        self.implicit = implicit
        self.items: dict[tuple[int, tuple[str, ...]], bytes] = {}
        self.charsets: dict[tuple[str, ...], list[str]] = {}

    def header(self, tag: int, length: int) -> bytes:
        """A sequence element's tag, VR (explicit VR: "SQ" and two reserved bytes) and length."""
        if self.implicit:
            return _tag(tag, length)
        return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, b"SQ", 0, length)

    def sequence(self, elem: DataElement, encodings: Encodings | None) -> bytes:
        """The value of a sequence element: its items, framed."""
        converted = self.converted(encodings or [default_encoding])
        return b"".join(self.item(item, converted) for item in elem.value)

    def converted(self, encodings: Encodings) -> list[str]:
        """pydicom's `convert_encodings`, once per distinct character set (not once per sequence)."""
        key = (encodings,) if isinstance(encodings, str) else tuple(encodings)
        if key not in self.charsets:
            self.charsets[key] = convert_encodings(encodings)
        return self.charsets[key]

    def item(self, item: Dataset, encodings: list[str]) -> bytes:
        key = (id(item), tuple(encodings))
        if key not in self.items:
            body = self.dataset(item, item.get("SpecificCharacterSet", encodings))
            if item.is_undefined_length_sequence_item:
                self.items[key] = _tag(ItemTag, _UNDEFINED) + body + _tag(ItemDelimiterTag, 0)
            else:
                self.items[key] = _tag(ItemTag, len(body)) + body
        return self.items[key]

    def dataset(self, ds: Dataset, encodings: Encodings) -> bytes:
        """The elements of `ds` in tag order, as `write_dataset` writes them (no group lengths)."""
        fp = DicomBytesIO()
        fp.is_little_endian = True
        fp.is_implicit_VR = self.implicit
        for tag in sorted(ds.keys(), key=int):      # compared as ints: Tag's own comparison is Python code
            if tag.element == 0 and tag.group > 6:
                continue
            elem = ds[tag]                  # a raw element decoded in the dataset's character set
            if elem.VR == "SQ":
                fp.write(self.sequence_element(elem, encodings))
            elif elem.VR in AMBIGUOUS_VR:
                raise _Ambiguous(elem.tag)
            else:
                write_data_element(fp, elem, encodings)
        return fp.getvalue()

    def sequence_element(self, elem: DataElement, encodings: Encodings | None) -> bytes:
        value = self.sequence(elem, encodings)
        if elem.is_undefined_length:
            return self.header(elem.tag, _UNDEFINED) + value + _tag(SequenceDelimiterTag, 0)
        return self.header(elem.tag, len(value)) + value


def dicom_bytes(ds: Dataset) -> bytes:
    """The file `ds.save_as(..., enforce_file_format=True)` writes, for a dataset whose file meta names
    an uncompressed little-endian transfer syntax (any other goes through pydicom's own path)."""
    buffer = io.BytesIO()
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", ""))) if hasattr(ds, "file_meta") else UID("")
    if not syntax.is_transfer_syntax or syntax.is_compressed or not syntax.is_little_endian:
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()
    implicit = bool(syntax.is_implicit_VR)
    try:
        shell = _encoded(ds, implicit)
    except _Ambiguous:
        correct_ambiguous_vr(ds, True)
        shell = _encoded(ds, implicit)
    shell.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _encoded(ds: Dataset, implicit: bool) -> Dataset:
    """A shallow copy of `ds` with its sequences already encoded, for `dcmwrite` to write as they are."""
    encoder = _Encoder(implicit)
    encodings = ds.get("SpecificCharacterSet", default_encoding)
    shell = Dataset()
    for tag in ds.keys():
        elem = ds[tag]
        if elem.VR == "SQ":
            value = encoder.sequence(elem, encodings)
            elem = RawDataElement(elem.tag, "SQ", _UNDEFINED if elem.is_undefined_length else len(value),
                                  value, 0, implicit, True)
        elif elem.VR in AMBIGUOUS_VR:
            raise _Ambiguous(elem.tag)
        shell[tag] = elem
    shell.file_meta = ds.file_meta
    shell.preamble = getattr(ds, "preamble", None)
    # already encoded: the writer must take the elements as they are
    charset = ds.get("SpecificCharacterSet")
    shell.set_original_encoding(implicit, True, convert_encodings(charset) if charset else default_encoding)
    return shell
