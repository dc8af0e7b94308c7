"""An API whose database holds one really analysed study, opened for review by the engine's
ReviewWatcher exactly as a node does after an analysis job: the analysis runs in-process on the
engine tests' PET/CT study (analysis_runner.analyze_into, the analysis child's own function)."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import pytest_asyncio
from sqlalchemy import select

from neuropetrix.api import users
from neuropetrix.config.loader import parse_settings
from neuropetrix.engine.analysis_runner import analyze_into
from neuropetrix.engine.result_store import ResultStore
from neuropetrix.engine.review import ReviewWatcher, VersionStore
from neuropetrix.store import eventlog as events
from neuropetrix.store.db import utcnow
from neuropetrix.store.eventlog import EventKind
from neuropetrix.store.jobs_models import DONE, Job
from neuropetrix.store.reviews import ReviewVersion
from tests.api.conftest import PASSWORD, ApiEnv, accounts_db, bearer, login, make_env  # noqa: F401  (fixtures)
from tests.engine.conftest import petct_study  # noqa: F401  (fixture)


@pytest.fixture(scope="session")
def analysed(tmp_path_factory, petct_study: Path) -> tuple[str, Path]:  # noqa: F811
    """(study UID, results folder) of one automatic analysis, made once per session."""
    out = tmp_path_factory.mktemp("analysed")
    settings = parse_settings("{}", "test", environ={})
    analyze_into(petct_study, out, settings, {})
    uid = str(pydicom.dcmread(out / "sr.dcm", specific_tags=["StudyInstanceUID"]).StudyInstanceUID)
    return uid, out


@dataclass
class ReviewEnv:
    env: ApiEnv
    study_uid: str
    watcher: ReviewWatcher

    def job(self, kind: str, after: int | None = None, **params) -> int:
        now = utcnow()
        with self.env.sessions.begin() as s:
            job = Job(kind=kind, study_uid=self.study_uid, route="petct", action_index=0 if kind == "analyze" else 1,
                      source_event_id=None, destination="analysis" if kind == "analyze" else f"{kind}:hbys",
                      objects=[], params=params, state=DONE, attempts=1, max_attempts=3, next_attempt_at=now,
                      worker="", last_error="", result={}, created_at=now, updated_at=now, after_id=after)
            s.add(job)
            s.flush()
            return job.id


def open_review(env: ApiEnv, analysed: tuple[str, Path], physiological: list[dict] | None = None,
                **params) -> ReviewEnv:
    """Publish the analysis as a node's analyze job would, then let the watcher open the review.
    `physiological` adds the regions the analysis reports under that key (issue 11's additive field)."""
    uid, folder = analysed
    results = ResultStore(env.data_dir / "results")
    review = ReviewEnv(env, uid, ReviewWatcher(env.sessions, results, VersionStore(env.data_dir / "versions")))
    analyze = review.job("analyze", **params)
    review.job("hl7", after=analyze)
    temp = results.new_temp(uid)
    shutil.copytree(folder, temp, dirs_exist_ok=True)
    if physiological is not None:
        doc = json.loads((temp / "analysis.json").read_text())
        (temp / "analysis.json").write_text(json.dumps({**doc, "physiological": physiological}))
    results.publish(temp, uid, analyze, 1)
    with env.sessions.begin() as s:
        events.record(s, EventKind.ANALYSIS_DONE, uid, {"job": analyze, "version": 1, "status": "preliminary"})
    # a node's worker, where the test runs one (push_env), has its own watcher on the same cursor and may
    # take the event first; either way the review must be opened once, within the gap-settle time
    deadline = time.monotonic() + events.GAP_SETTLE_SECONDS + 5
    while not review.watcher.run_once() and not _review_opened(env, uid):
        assert time.monotonic() < deadline, "analysis.done did not open a review"
        time.sleep(0.05)
    return review


def _review_opened(env: ApiEnv, uid: str) -> bool:
    with env.sessions() as s:
        return s.scalars(select(ReviewVersion).where(ReviewVersion.study_uid == uid)).first() is not None


@pytest.fixture
def named_physician(make_env):  # noqa: F811
    """An API env whose physician has the display name and organisation a signature needs."""
    env = make_env()
    with env.sessions.begin() as s:
        users.update_user(s, "physician", display_name="Ayşe Yılmaz", organisation="Nükleer Tıp")
    return env


@pytest_asyncio.fixture
async def review_client(named_physician, analysed, aiohttp_client):
    review = open_review(named_physician, analysed)
    return review, await aiohttp_client(named_physician.app())


__all__ = ["PASSWORD", "bearer", "login"]
