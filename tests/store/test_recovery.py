"""Index rows lost in a power cut come back from the files at the next start."""
from __future__ import annotations

import json
import signal
import socket
import sqlite3

import pydicom
import yaml

from tests.conftest import storescu
from tests.support.nodeproc import node_config, run_cli, running_node


def test_rows_lost_after_an_unclean_stop_are_reindexed_from_storage(tmp_path, small_study):
    spec, files = small_study
    with running_node(tmp_path) as node:
        assert storescu(node.dicom_port, *files).returncode == 0
        assert node.stop(signal.SIGKILL) != 0
        config = node.config
        marker = node.data_dir / f"node-{socket.gethostname()}.running"
        assert marker.exists(), "a killed node leaves its run marker"
    # what a power cut may do to commits that did not wait for the disk: the last rows are gone
    lost = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files[-3:]]
    with sqlite3.connect(node.data_dir / "neuropetrix.db") as db:
        db.executemany("DELETE FROM instances WHERE sop_instance_uid = ?", [(uid,) for uid in lost])
    with running_node(tmp_path, config=config) as node:
        rows = json.loads(node.cli("studies", "--json").stdout)
        assert [(r["study_uid"], r["instances"]) for r in rows] == [(spec.study_uid, len(files))]
        assert "the last run did not stop cleanly: 3 instance(s) re-indexed from storage" in node.log_text()
        assert node.stop() == 0
    assert not marker.exists(), "a clean stop removes the marker"
    with running_node(tmp_path, config=config) as node:
        assert "did not stop cleanly" not in node.log_text()


def test_a_failed_start_leaves_no_run_marker(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = node_config(tmp_path / "var", {"node": {"dicom_port": taken.getsockname()[1]}})
        config_path = tmp_path / "node.yaml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        result = run_cli("serve", "--config", str(config_path), timeout=60)
    assert result.returncode != 0
    assert "cannot start" in result.stderr
    marker = tmp_path / "var" / f"node-{socket.gethostname()}.running"
    assert not marker.exists(), "a start that failed must not look like an unclean stop next time"
