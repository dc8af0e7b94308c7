"""The one error every report writer raises, so callers can tell "this analysis cannot make that object"
from a bug."""
from __future__ import annotations


class ReportError(ValueError):
    """An object cannot be written from this analysis; the message names what is missing or wrong."""


def require(condition: object, message: str) -> None:
    """Refuse before anything is written: a writer checks all it needs first, then builds."""
    if not condition:
        raise ReportError(message)
