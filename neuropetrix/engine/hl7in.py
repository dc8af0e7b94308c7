"""Reading HL7 v2 messages from the HBYS and writing their acknowledgments (hl7apy).

The character set is read from MSH-18 in the raw bytes before anything is decoded (MSH itself is
ASCII): `8859/9` (Latin-5), `UNICODE UTF-8` and the non-standard `UTF-8` seen in Turkish hospitals,
and, when MSH-18 is empty, the sender's configured default. Messages are parsed with hl7apy's tolerant
level without group detection, because real v2.3.1 senders add Z-segments and leave out optional
segments the strict grammar requires. Values are unescaped here; hl7apy keeps the escaped form.

A problem the sender must fix is a `Refusal`: AR for the envelope (not HL7, unknown type, version or
character set), AE for the content (with the segment and field in ERR and the reason in MSA-3).
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message, Segment
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from neuropetrix.reports.hl7 import escape

# MSH-18 spellings → Python codecs; "" is the per-sender default's key
CODECS_IN = {"8859/9": "iso8859_9", "UNICODE UTF-8": "utf-8", "UTF-8": "utf-8", "8859/1": "latin_1",
             "ASCII": "ascii"}
VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")
OUR_APPLICATION = "NEUROPETRIX"
# HL7 table 0357 (message error condition codes)
REQUIRED_FIELD_MISSING, DATA_TYPE_ERROR, TABLE_VALUE_NOT_FOUND = "101", "102", "103"
UNSUPPORTED_MESSAGE_TYPE, UNSUPPORTED_EVENT, UNSUPPORTED_VERSION = "200", "201", "203"
UNKNOWN_KEY, INTERNAL_ERROR = "204", "207"
_ESCAPES = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}
_ESCAPE = re.compile(r"\\([^\\]*)\\")


class Refusal(Exception):
    """The message is answered AE or AR; `where` is (segment, field) of the fault, when there is one."""

    def __init__(self, code: str, text: str, error: str, where: tuple[str, int] | None = None) -> None:
        super().__init__(text)
        self.code, self.text, self.error, self.where = code, text, error, where


def content_error(text: str, segment: str, field: int, error: str = REQUIRED_FIELD_MISSING) -> Refusal:
    return Refusal("AE", text, error, (segment, field))


@dataclass(frozen=True)
class Header:
    """MSH as read from the raw bytes, before the body is decoded."""

    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_type: str          # MSH-9.1^MSH-9.2, e.g. ORM^O01
    control_id: str            # MSH-10
    processing_id: str         # MSH-11
    version: str               # MSH-12
    charset: str               # MSH-18 as written ("" when absent)

    @property
    def sender(self) -> str:
        return f"{self.sending_application}^{self.sending_facility}"


def read_header(raw: bytes) -> Header:
    """The MSH segment of `raw`; Refusal AR when it is not an HL7 v2 message."""
    first = raw.replace(b"\n", b"\r").lstrip(b"\r").split(b"\r", 1)[0]
    if not first.startswith(b"MSH") or len(first) < 8:
        raise Refusal("AR", "not an HL7 v2 message: it does not start with MSH", UNSUPPORTED_MESSAGE_TYPE)
    try:
        text = first.decode("ascii")
    except UnicodeDecodeError:
        text = first.decode("latin_1")
    sep, component = text[3], text[4]
    fields = text.split(sep)
    fields += [""] * (20 - len(fields))

    def comp(value: str, index: int) -> str:
        parts = value.split(component)
        return parts[index].strip() if index < len(parts) else ""

    header = Header(comp(fields[2], 0), comp(fields[3], 0), comp(fields[4], 0), comp(fields[5], 0),
                    "^".join(p for p in (comp(fields[8], 0), comp(fields[8], 1)) if p), fields[9].strip(),
                    comp(fields[10], 0), comp(fields[11], 0), fields[17].split("~")[0].strip())
    if not header.control_id:
        raise Refusal("AR", "MSH-10 (message control id) is empty", REQUIRED_FIELD_MISSING, ("MSH", 10))
    return header


def decode(raw: bytes, header: Header, default: str) -> tuple[str, str]:
    """The message text and the MSH-18 value it was decoded with (`default` when MSH-18 is empty)."""
    declared = header.charset or default
    codec = CODECS_IN.get(declared.upper())
    if codec is None:
        raise Refusal("AR", f"MSH-18 character set {declared!r} is not supported "
                      f"(known: {', '.join(CODECS_IN)})", TABLE_VALUE_NOT_FOUND, ("MSH", 18))
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise Refusal("AE", f"byte {exc.start} is not valid {declared}: the name would be written wrong",
                      DATA_TYPE_ERROR, ("MSH", 18)) from None
    return text.replace("\r\n", "\r").replace("\n", "\r"), declared


def parse(text: str, header: Header) -> Message:
    """hl7apy's tolerant parse of the decoded message (no group detection: see the module doc)."""
    if header.version not in VERSIONS:
        raise Refusal("AR", f"HL7 version {header.version!r} is not supported ({', '.join(VERSIONS)})",
                      UNSUPPORTED_VERSION, ("MSH", 12))
    segments = [s for s in text.split("\r") if s.strip()]
    try:
        return parse_message("\r".join(segments), validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
    except (HL7apyException, ValueError, IndexError, KeyError) as exc:
        raise Refusal("AR", f"the message cannot be parsed: {exc}"[:200], UNSUPPORTED_MESSAGE_TYPE) from None


def unescape(value: str) -> str:
    """HL7 escape sequences to text (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\; formatting ones become a space)."""
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), " "), value) if "\\" in value else value


def segments(message: Message, name: str) -> list[Segment]:
    return [child for child in message.children if child.name == name]


def first(message: Message, name: str) -> Segment | None:
    found = segments(message, name)
    return found[0] if found else None


def components(segment: Segment | None, field: int, repetition: int = 0) -> list[str]:
    """The unescaped components of one field repetition, [""] when it is empty or absent."""
    if segment is None:
        return [""]
    reps = [r for r in segment.children if r.name == f"{segment.name}_{field}"]
    if repetition >= len(reps):
        return [""]
    er7 = reps[repetition].to_er7()
    return [unescape(c) for c in er7.split("^")]


def repetitions(segment: Segment | None, field: int) -> list[list[str]]:
    if segment is None:
        return []
    count = sum(1 for r in segment.children if r.name == f"{segment.name}_{field}")
    return [components(segment, field, i) for i in range(count)]


def value(segment: Segment | None, field: int, component: int = 1) -> str:
    parts = components(segment, field)
    return parts[component - 1].strip() if component <= len(parts) else ""


def build_ack(header: Header | None, code: str, text: str = "", error: Refusal | None = None,
              now: datetime | None = None) -> str:
    """The ACK (original mode) to `header`'s message, in its version; ERR names the fault's location."""
    version = header.version if header is not None and header.version in VERSIONS else "2.5"
    ack = Message("ACK", version=version, validation_level=VALIDATION_LEVEL.TOLERANT)
    msh = ack.msh
    msh.msh_3 = OUR_APPLICATION
    if header is not None:
        msh.msh_5 = header.sending_application
        msh.msh_6 = header.sending_facility
    msh.msh_7 = (now or datetime.now()).strftime("%Y%m%d%H%M%S")
    event = header.message_type.split("^")[1] if header is not None and "^" in header.message_type else ""
    msh.msh_9 = "ACK" + (f"^{event}" if event else "") + ("^ACK" if event and version >= "2.5" else "")
    msh.msh_10 = uuid.uuid4().hex[:20]
    msh.msh_11 = (header.processing_id if header is not None else "") or "P"
    msh.msh_12 = version
    if header is not None and header.charset:
        msh.msh_18 = header.charset
    msa = ack.add_segment("MSA")
    msa.msa_1 = code
    msa.msa_2 = header.control_id if header is not None else ""
    if text:
        msa.msa_3 = escape(text)[:80]
    if error is not None:
        err = ack.add_segment("ERR")
        segment, field = error.where or ("MSH", 9)
        if version < "2.5":
            err.err_1 = f"{segment}^1^{field}^{error.error}&{escape(error.text[:60])}&HL70357"
        else:
            err.err_2 = f"{segment}^1^{field}"
            err.err_3 = f"{error.error}^{escape(error.text[:60])}^HL70357"
            err.err_4 = "E"
    return ack.to_er7().replace("\n", "\r") + "\r"

