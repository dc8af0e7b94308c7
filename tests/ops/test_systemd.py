"""The systemd units parse (systemd-analyze verify: no unknown key, every program there) and are hardened:
systemd's own exposure score stays at most 4.0 ("OK"; the unit before hardening scored 8.8, EXPOSED)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.nodeproc import ROOT

UNITS = sorted((ROOT / "systemd").glob("neuropetrix*.service")) + sorted((ROOT / "systemd").glob("*.timer"))
INSTALLED = "/opt/neuropetrix/.venv/bin/neuropetrix"
MAX_EXPOSURE = 40          # tenths: systemd-analyze security --threshold


@pytest.fixture
def units(tmp_path: Path) -> list[Path]:
    """The units with the installed program path pointed at this venv's console script."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (Debian package systemd)")
    script = Path(sys.executable).parent / "neuropetrix"
    out = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(INSTALLED, str(script)))
        out.append(copy)
    return out


def test_units_verify_without_a_warning(units: list[Path]):
    assert {u.name for u in units} >= {"neuropetrix.service", "neuropetrix-worker.service",
                                       "neuropetrix-backup.service", "neuropetrix-backup.timer"}
    done = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True,
                          cwd=units[0].parent, check=False)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_services_are_hardened(units: list[Path]):
    for unit in (u for u in units if u.suffix == ".service"):
        text = unit.read_text()
        assert "User=neuropetrix" in text and "NoNewPrivileges=yes" in text and "ProtectSystem=strict" in text
        done = subprocess.run(["systemd-analyze", "security", "--offline=yes", f"--threshold={MAX_EXPOSURE}",
                               str(unit)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{unit.name}: {done.stdout.strip().splitlines()[-1]}"
