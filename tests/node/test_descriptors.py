"""Running out of file descriptors: the node raises its soft limit at start, and when the table is
full anyway its DICOM listener backs off, logs a handful of lines and accepts again afterwards."""
from __future__ import annotations

import os
import resource
import socket
from pathlib import Path

import pytest

from tests.conftest import dcmtk
from tests.node.test_scp_peers import wait_for
from tests.support.nodeproc import running_node

pytestmark = pytest.mark.faults


def open_file_limits(pid: int) -> tuple[int, int]:
    line = next(x for x in Path(f"/proc/{pid}/limits").read_text().splitlines() if x.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def test_soft_open_file_limit_is_raised_to_the_hard_one_at_start(tmp_path):
    hard = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 4096)
    with running_node(tmp_path, open_files=(256, hard)) as node:
        assert open_file_limits(node.proc.pid) == (hard, hard)


def echo(node) -> bool:
    return dcmtk("echoscu", "-to", "3", "-ta", "3", "-td", "3", "-aet", "STORESCU", "-aec", node.ae_title,
                 "127.0.0.1", str(node.dicom_port), timeout=20).returncode == 0


def test_dicom_listener_survives_running_out_of_descriptors(tmp_path):
    limit = 100
    with running_node(tmp_path, {"node": {"acse_timeout": 120}}, open_files=(limit, limit)) as node:
        assert echo(node)
        used = len(os.listdir(f"/proc/{node.proc.pid}/fd"))
        # silent connections, each holding one of the node's descriptors until it gives up on them
        hogs = [socket.create_connection(("127.0.0.1", node.dicom_port)) for _ in range(limit - used + 10)]
        wait_for(lambda: len(os.listdir(f"/proc/{node.proc.pid}/fd")) >= limit - 1, what="a full descriptor table")
        wait_for(lambda: "Too many open files" in node.log_text(), what="a failed accept")
        for hog in hogs:
            hog.close()
        wait_for(lambda: echo(node), timeout=30, what="the listener to accept again")
        log = node.log_text()
    assert log.count("cannot accept DICOM connections") < 15, "a descriptor shortage floods the log"
    assert "Too many open files" in log
