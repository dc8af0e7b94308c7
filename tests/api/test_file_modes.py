"""File modes after a fresh start (issue 14, item 7): the node's data folder, database, keys and stored
DICOM are its own (0700/0600), or readable by `node.data_group` (a PACS reader) with the database
still 0600; a data folder others can read is refused at start. The real node, as `serve` runs it."""
from __future__ import annotations

import grp
import stat
from pathlib import Path

import pytest

from tests.conftest import storescu
from tests.support.nodeproc import node_config, running_node, start_node
from tests.support.synthetic import StudySpec, write_petct_study

pytestmark = pytest.mark.faults
READER_GROUP = "daemon"       # any group of the machine; a site names its PACS reader's


def _modes(root: Path) -> dict[str, set[int]]:
    """Permission bits of every folder and file under `root` (root included)."""
    out: dict[str, set[int]] = {"dirs": {stat.S_IMODE(root.stat().st_mode)}, "files": set()}
    for p in root.rglob("*"):
        out["dirs" if p.is_dir() else "files"].add(stat.S_IMODE(p.stat().st_mode))
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study")
    write_petct_study(out, StudySpec(ct_slices=1, pet_slices=1, ct_matrix=16, pet_matrix=16))
    return out


def _receive(tmp_path: Path, study: Path, overrides: dict | None = None) -> Path:
    with running_node(tmp_path, overrides) as node:
        sent = storescu(node.dicom_port, study)
        assert sent.returncode == 0, sent.stderr
        assert node.cli("users", "add", "ayse", "--role", "viewer", input="a long password\n").returncode == 0
        return node.data_dir


def test_a_fresh_node_writes_only_private_files(tmp_path, study):
    data = _receive(tmp_path, study)
    stored = list((data / "storage").rglob("*.dcm"))
    assert len(stored) == 2
    assert (data / "neuropetrix.db").is_file() and (data / "api_signing.key").is_file()
    assert _modes(data) == {"dirs": {0o700}, "files": {0o600}}


def test_a_reader_group_can_read_storage_but_not_the_database(tmp_path, study):
    data = _receive(tmp_path, study, {"node": {"data_group": READER_GROUP}})
    gid = grp.getgrnam(READER_GROUP).gr_gid
    assert stat.S_IMODE(data.stat().st_mode) == 0o2750 and data.stat().st_gid == gid
    storage = _modes(data / "storage")
    assert storage["files"] == {0o640} and storage["dirs"] <= {0o2750, 0o750}
    assert all(p.stat().st_gid == gid for p in (data / "storage").rglob("*.dcm"))
    for private in data.glob("neuropetrix.db*"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert stat.S_IMODE((data / "api_signing.key").stat().st_mode) == 0o600


def test_the_node_refuses_a_data_folder_others_can_read(tmp_path):
    config = node_config(tmp_path / "var")
    (tmp_path / "var").mkdir(mode=0o755)
    (tmp_path / "var").chmod(0o755)
    with pytest.raises(RuntimeError) as refused:
        start_node(config, tmp_path)
    assert "readable by others (mode 755)" in str(refused.value) and "chmod 700" in str(refused.value)
