"""Run the Node.js readers of tests/reports/consumers.mjs (OHIF's dcmjs and @cornerstonejs/adapters,
fhirpath.js, hl7-standard) on a file we wrote, and hand back what they read."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).with_name("consumers.mjs")
NODE_MODULES = Path(__file__).parents[1] / "node_modules"


class ConsumerError(Exception):
    """The reader refused the file; the message is what it said."""


def consumer(command: str, *paths: Path) -> Any:
    """The JSON the reader prints for `command` on `paths`; ConsumerError when it fails."""
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "dcmjs").is_dir():
        pytest.fail("Node.js or the npm readers are missing: run `make test` (Debian nodejs npm; npm ci in tests/)")
    proc = subprocess.run([node, str(SCRIPT), command, *map(str, paths)], capture_output=True, text=True,
                          timeout=240)
    if proc.returncode != 0:
        raise ConsumerError(proc.stderr[-3000:] or f"exit {proc.returncode}")
    return json.loads(proc.stdout)
