"""Environment overrides are read as their key's type: a version or a character set is text even when it
looks like a number, a port is a number, a nullable text key takes null; a bad value is refused naming
the variable's key."""
from __future__ import annotations

from pathlib import Path

import pytest

from neuropetrix.config.loader import ConfigError, parse_settings


def _settings(**environ: str):
    return parse_settings("{}", "test", environ={f"NEUROPETRIX_{k}": v for k, v in environ.items()})


def test_a_version_that_looks_like_a_number_is_text():
    s = _settings(HBYS__MLLP__VERSION="2.5", HBYS__MLLP__CHARSET="8859/9", HBYS__MLLP__PORT="2600")
    assert s.hbys.mllp.version == "2.5" and s.hbys.mllp.charset == "8859/9" and s.hbys.mllp.port == 2600
    assert _settings(HBYS__MLLP__VERSION="2.5.1").hbys.mllp.version == "2.5.1"


def test_text_keys_keep_what_yaml_would_turn_into_other_types():
    s = _settings(NODE__AE_TITLE="1234", HBYS__MLLP__SENDING_APPLICATION="yes",
                  HBYS__PATIENT_RECORD_SYSTEM="urn:oid:2.16.792.1.99", NODE__DATA_DIR="0100")
    assert s.node.ae_title == "1234" and s.hbys.mllp.sending_application == "yes"
    assert s.hbys.patient_record_system == "urn:oid:2.16.792.1.99" and s.node.data_dir == Path("0100")


def test_nullable_text_takes_null_and_other_types_are_parsed():
    s = _settings(HBYS__MLLP__RECEIVING_FACILITY="HASTANE", HBYS__FHIR__TOKEN="null",
                  NODE__ACCEPT_UNKNOWN_CALLERS="true", ANALYSIS__LIVER_CENTER_MM="[1, 2.5, -3]",
                  NODE__STUDY_QUIET_SECONDS="12.5")
    assert s.hbys.mllp.receiving_facility == "HASTANE" and s.hbys.fhir.token is None
    assert s.node.accept_unknown_callers is True and s.analysis.liver_center_mm == (1.0, 2.5, -3.0)
    assert s.node.study_quiet_seconds == 12.5


@pytest.mark.parametrize("name, value, message", [
    ("HBYS__MLLP__VERSION", "2.4", "hbys.mllp.version"),
    ("HBYS__MLLP__PORT", "two", "hbys.mllp.port"),
    ("NODE__NO_SUCH_KEY", "1", "node.no_such_key: unknown key"),
])
def test_bad_values_are_refused_naming_the_key(name, value, message):
    with pytest.raises(ConfigError, match=message):
        _settings(**{name: value})
