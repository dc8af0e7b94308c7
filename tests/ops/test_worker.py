"""`neuropetrix worker` — the unit systemd/neuropetrix-worker.service runs — takes the analyses of a
node that runs none itself (`engine.analysis_workers: 0`), over the shared database and storage."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.engine.conftest import FAST_ENGINE, jobs_of, petct_study, storescu, wait_for  # noqa: F401 (a fixture)
from tests.support.nodeproc import ROOT, node_config, running_node

ROUTE = {"name": "analysis", "match": {"modality": "PT"}, "actions": ["analyze"]}


def test_a_separate_worker_runs_the_analysis_and_stops_on_sigterm(tmp_path: Path, petct_study: Path):  # noqa: F811
    config = node_config(tmp_path / "var", {"engine": {**FAST_ENGINE, "analysis_workers": 0}, "routes": [ROUTE]})
    with running_node(tmp_path, config=config) as node:
        worker_config = tmp_path / "worker.yaml"
        worker_config.write_text(json.dumps({**config, "engine": {**config["engine"], "analysis_workers": 1}}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEUROPETRIX_")}
        with open(tmp_path / "worker.log", "wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "neuropetrix", "worker", "--config", str(worker_config)],
                                      stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        try:
            storescu(node, petct_study)
            jobs = wait_for("the analysis done", lambda: [j for j in jobs_of(node) if j["state"] == "done"],
                            node, timeout=240)
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(60)
        node_log = node.log_text()
    text = (tmp_path / "worker.log").read_text()
    assert [j["kind"] for j in jobs] == ["analyze"]
    assert jobs[0]["worker"].split(":")[1] == str(worker.pid)          # the worker ran it, not the node
    assert "0 analysis lane(s)" in node_log and "worker ready: 1 analysis lane(s)" in text
    assert (tmp_path / "var" / "results" / jobs[0]["study_uid"] / "analysis.json").is_file()
    assert code == 0 and "stopped" in text
