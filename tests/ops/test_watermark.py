"""The low-disk watermark on a small real file system (a 48 MB tmpfs as the data folder): with free space
below `node.min_free_mb`, a scanner's association is refused (transient) with a log line naming the
disk and the alert metric set; once space is freed the next association is accepted and the study
stored, without a restart."""
from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import storescu
from tests.support.nodeproc import node_config, running_node


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def below_watermark(api_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=30) as r:
        line = next(x for x in r.read().decode().splitlines() if x.startswith("neuropetrix_storage_below_watermark "))
    return float(line.split()[1])


@pytest.mark.faults
def test_low_disk_refuses_associations_and_recovers_by_itself(tmp_path: Path, small_disk: Path, small_study):
    _, files = small_study
    study = files[0].parent.parent
    config = node_config(small_disk / "var", {"node": {"min_free_mb": 16}})
    with running_node(tmp_path, config=config) as node:
        ballast = small_disk / "ballast"
        free = shutil.disk_usage(small_disk).free
        with ballast.open("wb") as f:                       # leave 8 MB: below the 16 MB watermark
            f.write(b"\0" * (free - 8 * 1024 * 1024))
        refused = storescu(node.dicom_port, study)
        assert refused.returncode != 0 and "Association Rejected" in refused.stderr + refused.stdout
        log = node.log_text()
        assert "refusing new associations:" in log and "below node.min_free_mb 16" in log
        assert "refused association from STORESCU" in log
        assert below_watermark(node.api_port) == 1

        ballast.unlink()
        accepted = storescu(node.dicom_port, study)
        assert accepted.returncode == 0, accepted.stderr
        assert "accepting associations again" in node.log_text()
        assert below_watermark(node.api_port) == 0
        stored = list((small_disk / "var" / "storage").rglob("*.dcm"))
        assert len(stored) == len(files)
