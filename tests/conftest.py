"""Shared fixtures: synthetic studies on disk, dcmtk helpers."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.synthetic import StudySpec, write_petct_study


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
