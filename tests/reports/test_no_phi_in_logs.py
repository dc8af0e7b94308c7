"""No patient ID in the log at INFO or WARNING (issue 14, item 11): reading a study whose PatientID is
not a valid T.C. Kimlik No warns, without the ID."""
from __future__ import annotations

import logging

import pytest

from neuropetrix.reports.source import study_info

pytestmark = pytest.mark.faults
FOREIGN_ID = "X9876543"        # a passport-style ID: not 11 digits


def test_an_invalid_kimlik_no_is_warned_about_without_the_id(result, renamed, caplog):
    caplog.set_level(logging.INFO)
    info = study_info(result, renamed(PatientID=FOREIGN_ID))
    assert info.patient_id == FOREIGN_ID
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("not a valid T.C. Kimlik No" in r.getMessage() for r in warned)
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and FOREIGN_ID in r.getMessage()]
