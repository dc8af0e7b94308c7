"""DICOM DA / TM / DT strings → naive datetimes (local time of the scanner).

A time zone offset in a DT value is dropped: DA/TM values carry none and are the scanner's local time,
like the DT values of the same study, and mixing aware and naive values would break the subtraction.
"""
from __future__ import annotations

from datetime import date, datetime, time

from pydicom.valuerep import DA, DT, TM


def _text(value: object) -> str:
    return str(value).strip() if value not in (None, "") else ""


def parse_time(value: object) -> time | None:
    """TM → time (fractional seconds kept), None when empty or malformed."""
    text = _text(value)
    if not text:
        return None
    try:
        return TM(text.replace(":", ""))
    except ValueError:
        return None


def parse_date(value: object) -> date | None:
    text = _text(value)
    if not text:
        return None
    try:
        return DA(text.replace(".", "").replace("-", ""))
    except ValueError:
        return None


def parse_dt(value: object) -> datetime | None:
    """DT → naive datetime; a DT without at least a full date and hour is treated as absent."""
    text = _text(value)
    if len(text) < 10:
        return None
    try:
        parsed = DT(text)
    except ValueError:
        return None
    return datetime.combine(parsed.date(), parsed.time())


def parse_date_time(date_value: object, time_value: object) -> datetime | None:
    """A DA and a TM attribute together, None unless both are present."""
    d, t = parse_date(date_value), parse_time(time_value)
    return datetime.combine(d, t) if d is not None and t is not None else None
