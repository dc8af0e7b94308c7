"""Shared fixtures: synthetic studies on disk, dcmtk helpers."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.synthetic import StudySpec, write_petct_study


def dcmtk(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a dcmtk tool with Nagle disabled (as a scanner on a LAN would be configured)."""
    tool = args[0]
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed: run `make test`, which installs dcmtk")
    env = dict(os.environ, TCP_NODELAY="1")
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env)


def storescu(port: int, *paths: Path | str, aet: str = "STORESCU", aec: str = "NEUROPETRIX",
             options: tuple[str, ...] = (), timeout: float = 120) -> subprocess.CompletedProcess:
    return dcmtk("storescu", "-aet", aet, "-aec", aec, "+sd", "+r", *options, "127.0.0.1", str(port),
                 *map(str, paths), timeout=timeout)


@pytest.fixture(scope="session")
def small_study(tmp_path_factory) -> tuple[StudySpec, list[Path]]:
    """A PET/CT study at scanner matrix sizes (CT 512², PET 200²), 10 slices each."""
    out = tmp_path_factory.mktemp("small_study")
    return write_petct_study(out, StudySpec(ct_slices=10, pet_slices=10))



def _peer_launchers() -> set[int]:
    """Helpers that start a real external program (as ids: some module globals are unhashable)."""
    from tests.support import nodeproc, peers, pg
    return {id(f) for f in (peers.orthanc, nodeproc.run_cli, nodeproc.start_node, nodeproc.running_node,
                            pg.postgres_cluster, dcmtk, storescu, subprocess.run, subprocess.Popen)}


def _names(code) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names(const)
    return names


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`peers` on every test that starts dcmtk, Orthanc, PostgreSQL, Chromium, dciodvfy or a node process:
    its function calls a launcher (or Chromium, dciodvfy) by name, or it takes PostgreSQL as a fixture or a
    parameter, so `make test-unit` can leave them out."""
    launchers = _peer_launchers()
    for item in items:
        module, function = getattr(item, "module", None), getattr(item, "function", None)
        if module is None or function is None:
            continue
        peer_names = {name for name, value in vars(module).items()
                      if id(value) in launchers or name in ("Chromium", "dciodvfy", "subprocess")}
        callspec = getattr(item, "callspec", None)
        if (_names(function.__code__) & peer_names or "postgres_server" in item.fixturenames
                or (callspec is not None and "postgresql" in callspec.id)):
            item.add_marker(pytest.mark.peers)
