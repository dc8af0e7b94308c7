"""The command line loads only the command asked for: an operator's `users add` or `studies` answers
without importing the analysis, the report writers and scipy, while `--help` and a typo still name every command."""
from __future__ import annotations

import subprocess
import sys

from neuropetrix.cli import COMMANDS
from tests.support.nodeproc import ROOT

PROBE = """
import sys
from neuropetrix.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = ("scipy", "torch", "neuropetrix.analysis.pipeline", "neuropetrix.analysis.response", "neuropetrix.reports")
print(sorted(m for m in heavy if m in sys.modules))
"""


def loaded_by(*argv: str) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    return done.stdout.strip().splitlines()[-1]


def test_users_and_studies_do_not_load_the_analysis_or_the_report_writers() -> None:
    assert loaded_by("users", "--help") == "[]"
    assert loaded_by("studies", "--help") == "[]"


def test_help_and_a_typo_name_every_command(capsys) -> None:
    done = subprocess.run([sys.executable, "-m", "neuropetrix", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0
    for command in COMMANDS:
        assert command in done.stdout, command
    typo = subprocess.run([sys.executable, "-m", "neuropetrix", "studis"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert typo.returncode == 2 and "invalid choice: 'studis'" in typo.stderr and "'worker'" in typo.stderr
