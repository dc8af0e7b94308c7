"""The node's DICOM UIDs in one place: the grammar every received UID is checked against, and the
policy for every UID the node makes, with the implementation class UID it signs its files and
associations with.

Grammar: pydicom's (`UID.is_valid`, PS3.5 9.1: digits in components without leading zeros, single
dots, at most 64 characters; its pattern compiled once, since `is_valid` looks it up on every call and
this check runs several times per received instance), on the value stripped of its NUL/space padding,
with a root and a suffix (at least two components). Digits and single dots only is what lets the
store use a UID as a path component; the check below names that rule so that it holds whatever the
grammar's implementation.

Policy: the node has no registered root, so what it makes is UUID-derived (PS3.5 B.2, `2.25.<int>`):
random for a new object, name-based (UUID version 5 in the node's namespace) where the same input must
give the same UID again. The implementation class UID is such a UID, and the arc below it is the
node's own for UIDs that carry numbers (storage-commitment transactions).
"""
from __future__ import annotations

import json
import re
import uuid

from pydicom.dataset import FileMetaDataset
from pydicom.uid import RE_VALID_UID, generate_uid

# uuid5(NAMESPACE_URL, the project's URL) as an integer: the node's implementation class UID
_NODE_UUID = uuid.UUID(int=121633663093412260106031864065073478959)
IMPLEMENTATION_CLASS_UID = f"2.25.{_NODE_UUID.int}"
IMPLEMENTATION_VERSION_NAME = "NEUROPETRIX_01"     # SH, at most 16 characters (PS3.7 D.3.3.2.2)
NODE_ROOT = IMPLEMENTATION_CLASS_UID + "."         # the arc the node may number below
UUID_ROOT = "2.25."                                # UUID-derived UIDs (PS3.5 B.2)
_GRAMMAR = re.compile(RE_VALID_UID)                # what pydicom's UID.is_valid matches
_MAX_LENGTH = 64                                   # PS3.5 Table 6.2-1, UI


class InvalidUID(ValueError):
    """A value that should be a DICOM UID is not one."""


def check_uid(value: object, what: str) -> str:
    """`value` as a UID string, or InvalidUID naming `what` (e.g. "SOPInstanceUID")."""
    text = str(value or "").strip("\0 ")
    if not text:
        raise InvalidUID(f"{what} is missing")
    if not is_uid(text):
        raise InvalidUID(f"{what} {text[:80]!r} is not a valid UID")
    return text


def is_uid(text: str) -> bool:
    """Whether `text`, exactly as given, is a UID with a root and a suffix that is safe as a path name."""
    if "." not in text or ".." in text or "/" in text or "\\" in text or text != text.strip():
        return False
    return len(text) <= _MAX_LENGTH and _GRAMMAR.match(text) is not None


def new_uid() -> str:
    """A UID for a new object: 2.25 and a random UUID."""
    return str(generate_uid(prefix=None))


def derived_uid(*sources: str) -> str:
    """The same UID for the same `sources` on every run and every node: 2.25 and a name-based UUID."""
    return f"{UUID_ROOT}{uuid.uuid5(_NODE_UUID, json.dumps(sources)).int}"


def numbered_uid(*numbers: int) -> str:
    """A UID under the node's own arc that carries `numbers` (e.g. a job id and an attempt)."""
    return NODE_ROOT + ".".join(str(int(n)) for n in numbers)


def numbers_of(value: str) -> tuple[int, ...] | None:
    """The numbers a `numbered_uid` carries, None for a UID not under the node's arc."""
    if not value.startswith(NODE_ROOT):
        return None
    parts = value[len(NODE_ROOT):].split(".")
    if not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def sign_file_meta(meta: FileMetaDataset) -> FileMetaDataset:
    """Name the node as the implementation that wrote a Part 10 file (PS3.10 7.1)."""
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta
