"""The engine's long-lived analysis process: warmed up once on a phantom, then serving real studies."""
from __future__ import annotations

import gc
import json
import logging
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import pytest

from neuropetrix.config.settings import Settings
from neuropetrix.engine.analysis_memory import collect_between_studies
from neuropetrix.engine.analysis_runner import AnalysisProcess, warm_up


def test_warm_up_makes_every_report_once(caplog: pytest.LogCaptureFixture):
    """The warm-up study has a lesion, so the SEG path (highdicom's tables) is paid for too; its own
    log lines are held back and one line says it is done."""
    with caplog.at_level(logging.INFO, logger="neuropetrix"):
        summary = warm_up(Settings())
    assert summary is not None and summary["lesions"] >= 1
    assert {"read", "segmentation", "write"} <= set(summary["timings_s"])
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("neuropetrix")]
    assert len(messages) == 1 and messages[0].startswith("analysis process warmed up in ")


class _Node:
    """An object in a reference cycle: only the garbage collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_between_studies_the_process_is_frozen_and_full_collections_wait():
    """After the warm-up, the process's objects are out of the collector's reach and a study's
    allocations start no full collection (each walked every object of the process); a study's cyclic
    garbage still goes in the young collections."""
    threshold = gc.get_threshold()
    try:
        collect_between_studies()
        assert gc.get_freeze_count() > 0
        full = gc.get_stats()[2]["collections"]
        node = _Node()
        gone = weakref.ref(node)
        del node
        held = [[] for _ in range(300_000)]          # by Python's own rule, several full collections
        assert gone() is None
        assert gc.get_stats()[2]["collections"] == full
        del held
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


# Page faults of allocating and filling a 64 MB array twice, the first freed before the second.
_REFILL = """
import resource, sys
import numpy as np
from neuropetrix.engine.analysis_memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
np.ones(16_000_000, dtype=np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
np.ones(16_000_000, dtype=np.float32)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _refill_faults(mode: str) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", _REFILL, mode], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[2])
    kept, faults = done.stdout.split()
    return kept, int(faults)


def test_the_analysis_process_reuses_freed_memory():
    """A freed whole-body array's memory serves the next one: no new pages (glibc unmapped it, and
    the kernel zeroed and faulted in 64 MB again: about a quarter of a warm study's CPU time)."""
    kept, faults = _refill_faults("keep")
    assert kept == "True" and faults < 20
    assert _refill_faults("default")[1] > 5 * (faults + 10)   # 4 KiB pages: ~16000; transparent huge ones: ~300


def test_a_failed_warm_up_is_one_warning_and_analysis_logs_again(monkeypatch, caplog: pytest.LogCaptureFixture):
    import neuropetrix.phantoms.wholebody as wholebody

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(wholebody, "write_study", full_disk)
    with caplog.at_level(logging.INFO, logger="neuropetrix"):
        assert warm_up(Settings()) is None
        logging.getLogger("neuropetrix.analysis").warning("after the warm-up")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0].startswith("analysis warm-up failed (OSError") and warnings[1] == "after the warm-up"


def test_the_warmed_process_analyses_studies_one_after_another(phantom_dir, tmp_path: Path):
    process = AnalysisProcess("WARNING")
    settings = Settings.model_validate({"analysis": {"threshold": 3.0, "min_volume_ml": 0.1}})
    try:
        process.warm()
        first = process.run(phantom_dir(), tmp_path / "a", settings, threading.Event())
        second = process.run(phantom_dir(), tmp_path / "b", settings, threading.Event())
    finally:
        process.close()
    assert first["lesions"] == second["lesions"] == 5
    for out in ("a", "b"):
        doc = json.loads((tmp_path / out / "analysis.json").read_text())
        assert doc["lesion_count"] == 5 and (tmp_path / out / "seg.dcm").stat().st_size > 0
