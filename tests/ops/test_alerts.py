"""The example Prometheus alert rules (deploy/prometheus/neuropetrix-rules.yml) against the metrics a real
node exports: a node whose only destination is down parks its job; its /metrics, fed to promtool's
rule tests as they were scraped, fires "destination down" and "jobs parked" and nothing it should not,
and every metric a rule names is one the node declares. promtool also checks the file itself."""
from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import storescu
from tests.engine.conftest import jobs_of, wait_for
from tests.support.nodeproc import ROOT, SCANNER_AE, free_port, node_config, running_node

RULES = ROOT / "deploy" / "prometheus" / "neuropetrix-rules.yml"
LABELS = {"job": "neuropetrix", "instance": "node"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: run `make test` (Debian package prometheus)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, check=False)


def scrape(api_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=30) as r:
        return r.read().decode()


@pytest.mark.peers
def test_the_rules_file_is_valid():
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0 and "SUCCESS: 9 rules found" in done.stdout, done.stdout + done.stderr


def _series(text: str, names: set[str]) -> list[dict]:
    """The scraped samples of `names` as promtool input series, constant for an hour."""
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted({**sample.labels, **LABELS}.items()))
                out.append({"series": f"{sample.name}{{{labels}}}", "values": f"{sample.value:g}x60"})
    return out


def _alerts(rule_file: Path, series: list[dict], alertnames: list[str]) -> dict:
    """A promtool unit test expecting no alert, to be filled per alert name."""
    return {"rule_files": [str(rule_file)], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series,
                       "alert_rule_test": [{"eval_time": "40m", "alertname": a, "exp_alerts": []}
                                           for a in alertnames]}]}


@pytest.mark.faults
def test_rules_fire_on_what_a_real_node_exports(tmp_path: Path, small_study):
    rules = yaml.safe_load(RULES.read_text())
    names = set(re.findall(r"neuropetrix_[a-z_]+", " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])))
    config = node_config(tmp_path / "var", {
        "peers": [{"name": "scanner", "ae_title": SCANNER_AE, "host": "127.0.0.1", "port": free_port()},
                  {"name": "gone", "ae_title": "GONE", "host": "127.0.0.1", "port": free_port()}],
        "engine": {"poll_seconds": 0.1, "retry": {"base_seconds": 0.1, "max_seconds": 0.3, "jitter": 0,
                                                  "max_attempts": 3}},
        "routes": [{"name": "copy", "match": {"modality": "PT"}, "actions": [{"forward": "gone"}]}]})
    _, files = small_study
    with running_node(tmp_path, config=config) as node:
        assert storescu(node.dicom_port, files[0].parent.parent).returncode == 0
        wait_for("the forward job parked", lambda: [j for j in jobs_of(node) if j["state"] == "failed"], node)
        text = scrape(node.api_port)

    declared = set()
    for family in text_string_to_metric_families(text):
        declared |= {family.name, f"{family.name}_total"} if family.type == "counter" else {family.name}
    assert names - declared == set(), f"rules name metrics the node does not export: {names - declared}"

    # the same rules without annotations (promtool compares rendered annotations; their templates are
    # checked by `promtool check rules` above), on the scraped values and on made-up ones
    plain = {"groups": [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
                        for g in rules["groups"]]}
    rule_file = tmp_path / "rules.yml"
    rule_file.write_text(yaml.safe_dump(plain))
    alertnames = [r["alert"] for g in rules["groups"] for r in g["rules"]]
    test = _alerts(rule_file, _series(text, names) + [{"series": 'up{job="neuropetrix",instance="node"}',
                                                       "values": "1x60"}], alertnames)
    expected = {"NeuroPetrixJobsParked": [{**LABELS, "severity": "warning", "state": "failed"}],
                "NeuroPetrixDestinationDown": [{**LABELS, "severity": "warning", "destination": "dicom:gone"}]}
    free = [s for s in test["tests"][0]["input_series"] if s["series"].startswith("neuropetrix_storage_free_bytes")]
    capacity = [s for s in test["tests"][0]["input_series"] if s["series"].startswith("neuropetrix_storage_capacity")]
    assert free and capacity                          # the node reports its disk
    ratio = float(free[0]["values"].split("x")[0]) / float(capacity[0]["values"].split("x")[0])
    if ratio < 0.10:                                  # this machine's own disk is low: the alert is right
        expected["NeuroPetrixDiskLow"] = [{**LABELS, "severity": "warning"}]
    # made up: a second node whose disk is nearly full, whose analyses fail and that stops answering
    other = {"job": "neuropetrix", "instance": "other"}
    def made_up(name: str, values: str, **labels: str) -> dict:
        shown = ",".join(f'{k}="{v}"' for k, v in sorted({**other, **labels}.items()))
        return {"series": f"{name}{{{shown}}}", "values": values}
    test["tests"][0]["input_series"] += [
        made_up("neuropetrix_storage_free_bytes", "5x60"), made_up("neuropetrix_storage_capacity_bytes", "100x60"),
        made_up("neuropetrix_analyses_total", "0x30 1x30", result="failed"),
        made_up("up", "1x30 0x30")]
    expected.setdefault("NeuroPetrixDiskLow", []).append({**other, "severity": "warning"})
    expected["NeuroPetrixAnalysisFailures"] = [{**other, "severity": "warning", "result": "failed"}]
    expected["NeuroPetrixDown"] = [{**other, "severity": "critical"}]
    for case in test["tests"][0]["alert_rule_test"]:
        case["exp_alerts"] = [{"exp_labels": labels} for labels in expected.get(case["alertname"], [])]
    unit = tmp_path / "test.yml"
    unit.write_text(yaml.safe_dump(test))
    done = promtool("test", "rules", str(unit))
    assert done.returncode == 0, done.stdout + done.stderr
