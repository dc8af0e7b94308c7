"""Result folders: published whole, stamped with the attempt that made them, and an attempt that
published before the node stopped is not analysed again."""
from __future__ import annotations

import threading
from pathlib import Path

from neuropetrix.config.settings import Settings
from neuropetrix.engine.analysis_runner import AnalysisProcess
from neuropetrix.engine.executor import JobRunner
from neuropetrix.engine.jobs import Claimed
from neuropetrix.engine.result_store import ResultStore
from neuropetrix.store.files import FileStore

STUDY = "1.2.3.4"


def claimed(job_id: int, attempt: int) -> Claimed:
    return Claimed(job_id, "analyze", STUDY, "r", "analysis", [], {}, attempt, 12, None)


def test_publish_replaces_whole_folders(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results")
    first = store.new_temp(STUDY)
    (first / "sr.dcm").write_bytes(b"first")
    (first / "seg.dcm").write_bytes(b"first")
    store.publish(first, STUDY, job_id=1, attempt=1)
    second = store.new_temp(STUDY)
    (second / "sr.dcm").write_bytes(b"second")                  # a negative re-analysis: no SEG
    store.publish(second, STUDY, job_id=2, attempt=1)
    assert store.file(STUDY, "sr.dcm").read_bytes() == b"second"
    assert not store.file(STUDY, "seg.dcm").exists()
    assert store.made_by(STUDY) == (2, 1)
    leftover = store.new_temp(STUDY)
    store.clean_incoming()                                       # a restart drops unfinished work
    assert not leftover.exists() and store.made_by(STUDY) == (2, 1)


def test_an_attempt_that_published_is_not_run_again(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results")
    temp = store.new_temp(STUDY)
    (temp / "sr.dcm").write_bytes(b"x")
    store.publish(temp, STUDY, job_id=5, attempt=1)
    runner = JobRunner(Settings(), sessions=None, files=FileStore(tmp_path / "storage"), results=store)
    idle = AnalysisProcess()                                     # never started: it must not be needed
    assert runner.run(claimed(5, 2), threading.Event(), idle) == {"resumed": True}
    assert idle._proc is None


def test_a_hung_analysis_is_stopped_and_the_next_one_runs(tmp_path: Path, petct_study: Path) -> None:
    import pytest

    from neuropetrix.engine.analysis_runner import AnalysisFailed

    process = AnalysisProcess()
    try:
        hurried = Settings.model_validate({"engine": {"analysis_timeout": 0.05}})
        with pytest.raises(AnalysisFailed, match="took longer than 0.05 s") as err:
            process.run(petct_study, tmp_path / "a", hurried, threading.Event())
        assert not err.value.permanent
        summary = process.run(petct_study, tmp_path / "b", Settings(), threading.Event())
        assert summary["lesions"] == 2 and (tmp_path / "b" / "sr.dcm").is_file()
    finally:
        process.close()
