"""Why an analysis cannot go on: one message a user can act on, naming the file or DICOM attribute."""
from __future__ import annotations


class AnalysisError(Exception):
    """The inputs cannot be analysed (no PET, missing slices, unreadable file, …)."""


class InputRefused(AnalysisError):
    """SUV inputs are missing or contradict each other; we refuse rather than guess.

    `attribute` names the DICOM attribute at fault, e.g. "PatientWeight (0010,1030)".
    """

    def __init__(self, attribute: str, reason: str) -> None:
        super().__init__(f"{attribute}: {reason}")
        self.attribute = attribute
