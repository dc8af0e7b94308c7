"""Configuration: defaults, overrides, and refusals that name the key."""
from __future__ import annotations

import pytest

from neuropetrix.config.loader import ConfigError, load_settings, parse_settings
from tests.support.nodeproc import run_cli


def test_embedded_default_is_the_repository_example():
    s = load_settings(None, environ={})
    assert s.node.ae_title == "NEUROPETRIX" and s.node.dicom_port == 11112
    assert s.node.study_quiet_seconds == 30
    assert [p.name for p in s.peers] == ["scanner1", "pacs", "demo"]
    assert s.node.db_url.startswith("sqlite:///") and s.node.db_url.endswith("var/neuropetrix.db")


def test_environment_overrides_any_key():
    s = parse_settings("node: {dicom_port: 104}", environ={
        "NEUROPETRIX_NODE__DICOM_PORT": "11113", "NEUROPETRIX_NODE__ACCEPT_UNKNOWN_CALLERS": "true",
        "NEUROPETRIX_HBYS__MLLP__PORT": "3000", "OTHER": "x"})
    assert s.node.dicom_port == 11113 and s.node.accept_unknown_callers is True
    assert s.hbys.mllp.port == 3000


@pytest.mark.parametrize("text, message", [
    ("node: {dicom_prot: 104}", "node.dicom_prot: unknown key"),
    ("nodes: {}", "nodes: unknown key"),
    ("node: {dicom_port: 70000}", "node.dicom_port: Input should be less than or equal to 65535"),
    ("node: {study_quiet_seconds: -1}", "node.study_quiet_seconds: Input should be greater than 0"),
    ("node: {ae_title: 'WAY_TOO_LONG_AE_TITLE'}",
     "node.ae_title: Value error, 'WAY_TOO_LONG_AE_TITLE' is not a valid AE title"),
    ("peers: [{name: a, ae_title: A, host: h}]", "peers.0.port: Field required"),
    ("peers: [{name: a, ae_title: A, host: h, port: 1, timeout: 0}]",
     "peers.0.timeout: Input should be greater than 0"),
    ("peers: [{name: a, ae_title: A, host: h, port: 1}, {name: a, ae_title: B, host: h, port: 2}]",
     "duplicate peer name(s) a"),
    ("node: [1, 2", "not valid YAML"),
])
def test_bad_configuration_refused_naming_the_key(text, message):
    with pytest.raises(ConfigError) as info:
        parse_settings(text, "site.yaml", environ={})
    assert message in str(info.value)
    assert str(info.value).startswith("site.yaml")


def test_bad_environment_value_refused():
    with pytest.raises(ConfigError, match="node.dicom_port"):
        parse_settings("", environ={"NEUROPETRIX_NODE__DICOM_PORT": "eleven"})


def test_command_line_reports_a_bad_config_in_one_line(tmp_path):
    bad = tmp_path / "node.yaml"
    bad.write_text("node: {dicom_prot: 104}\n")
    result = run_cli("studies", "--config", str(bad))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"neuropetrix: {bad}: node.dicom_prot: unknown key"]
    missing = run_cli("serve", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode != 0 and "cannot read configuration" in missing.stderr
