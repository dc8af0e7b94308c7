"""Byte-level helpers for DICOM Part 10 files in tests."""
from __future__ import annotations

import struct
from pathlib import Path


def dataset_bytes(path: Path) -> bytes:
    """The dataset of a Part 10 file exactly as encoded, without preamble and file meta."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM", f"{path} is not a Part 10 file"
    group, element, vr = struct.unpack("<HH2s", raw[132:138])
    assert (group, element, vr) == (2, 0, b"UL"), f"{path}: file meta has no group length first"
    (meta_length,) = struct.unpack("<I", raw[140:144])
    return raw[144 + meta_length:]
