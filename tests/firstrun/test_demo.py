"""`neuropetrix demo` on a node running the default configuration: the study goes in over DICOM as the
DEMO caller, its procedure step completes it without the quiet time, the demo route analyses it and
forwards SEG, SR and PDF to the receiver the demo starts, and the demo exits 0 saying where to look."""
from __future__ import annotations

import json
from pathlib import Path

import pydicom

from tests.engine.conftest import petct_study  # noqa: F401  (a fixture: a small PET/CT with two lesions)
from tests.firstrun.conftest import default_config
from tests.support.nodeproc import run_cli, running_node


def test_demo_follows_a_study_from_send_to_delivery(tmp_path: Path, petct_study: Path):  # noqa: F811
    # a quiet time longer than the test: only the demo's completed procedure step can complete the study
    config = default_config(tmp_path / "var", study_quiet_seconds=3600)
    with running_node(tmp_path, config=config) as node:
        demo = node.cli("demo", "--study", str(petct_study), "--timeout", "240")
        assert demo.returncode == 0, demo.stdout + demo.stderr + node.log_text()[-3000:]
        studies = json.loads(node.cli("studies", "--json").stdout)
        jobs = json.loads(node.cli("jobs", "--json").stdout)
    study_uid = pydicom.dcmread(next(petct_study.rglob("*.dcm")), stop_before_pixels=True).StudyInstanceUID
    assert [(s["study_uid"], s["state"]) for s in studies] == [(study_uid, "complete")]
    assert sorted((j["route"], j["kind"], j["destination"], j["state"]) for j in jobs) == [
        ("demo", "analyze", "analysis", "done"), ("demo", "forward", "dicom:demo", "done")]
    received = sorted((node.data_dir / "demo-receiver" / study_uid).glob("*.dcm"))
    modalities = sorted(pydicom.dcmread(f).Modality for f in received)
    assert modalities == ["DOC", "SEG", "SR"], modalities
    assert all(pydicom.dcmread(f).StudyInstanceUID == study_uid for f in received)
    out = demo.stdout
    assert "demo: study complete" in out and "demo: the receiver got 3 object(s)" in out
    analysis = json.loads((node.data_dir / "results" / study_uid / "analysis.json").read_text())
    assert f"demo: analysis: {analysis['lesion_count']} lesion(s)" in out and analysis["lesion_count"] > 0
    assert f"http://127.0.0.1:{node.api_port}/#/study/{study_uid}" in out


def test_demo_says_what_is_missing_without_the_demo_peer(tmp_path: Path):
    config = default_config(tmp_path / "var")
    config["peers"] = [p for p in config["peers"] if p["name"] != "demo"]
    config["routes"] = [r for r in config["routes"] if r["name"] != "demo"]
    path = tmp_path / "node.yaml"
    path.write_text(json.dumps(config))
    result = run_cli("demo", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == ("neuropetrix: the configuration has no `demo` peer: copy the demo peer "
                                     "and route from config/node.yaml")
