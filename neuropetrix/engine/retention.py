"""Retention (`storage.retention`): which studies' images and results are old enough to delete and
safe to delete, the durable `prune` jobs that delete them, and the deleting itself.

Safe means nothing still needs them: the study is complete, every job of it is done (a forward to a
PACS asking for storage commitment is done only when the PACS committed it), none is parked as
failed for an operator, its review (if any) is signed, and it is not the prior of a study of the same
patient received within `prior_days`. The sweep only makes jobs; the job checks again before it
deletes (something may have changed in between), deletes the files first and the index rows after,
so a crash in between is finished by the job's retry and never leaves rows without files behind.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.config.settings import RetentionSettings, Settings
from neuropetrix.dicom_uids import check_uid
from neuropetrix.engine.clock import SYSTEM, Clock
from neuropetrix.engine.jobs import new_job
from neuropetrix.engine.result_store import ResultStore
from neuropetrix.store.eventlog import EventKind, record
from neuropetrix.store.files import FileStore
from neuropetrix.store.jobs_models import DONE, FAILED, Job
from neuropetrix.store.models import Instance, Series, Study
from neuropetrix.store.reviews import Review

log = logging.getLogger("neuropetrix.retention")

KIND = "prune"
DESTINATION = "storage"
ROUTE = "retention"
IMAGES, RESULTS = "images", "results"
PRUNED = "pruned"     # a study's state once its images are gone and its results are kept (the row stays)


@dataclass(frozen=True)
class Decision:
    study_uid: str
    what: str                   # images | results
    last_received_at: datetime
    kept_because: str | None    # None: may be deleted now

    def as_dict(self) -> dict:
        return {"study_uid": self.study_uid, "what": self.what, "last_received_at": self.last_received_at.isoformat()
                + "Z", "prune": self.kept_because is None, "kept_because": self.kept_because}


def _blocker(s: Session, study: Study, rules: RetentionSettings, now: datetime) -> str | None:
    """Why nothing of `study` may be deleted now, whatever its age; None when nothing holds it."""
    if study.state not in ("complete", PRUNED):
        return "still receiving"
    for job_id, kind, state in s.execute(select(Job.id, Job.kind, Job.state).where(
            Job.study_uid == study.study_uid, Job.kind != KIND, Job.state != DONE).order_by(Job.id)):
        return (f"job {job_id} ({kind}) parked as failed: an operator settles it first" if state == FAILED
                else f"job {job_id} ({kind}) is {state}")
    review = s.scalar(select(Review.status).where(Review.study_uid == study.study_uid))
    if review == "preliminary":
        return "review not signed"
    if rules.prior_days > 0:
        later = s.scalar(select(Study.study_uid).where(
            Study.patient_pk == study.patient_pk, Study.id != study.id,
            Study.first_received_at > study.first_received_at,
            Study.last_received_at >= now - timedelta(days=rules.prior_days)).limit(1))
        if later is not None:
            return f"prior of study {later} received within {rules.prior_days:g} days"
    return None


def assess(s: Session, rules: RetentionSettings, results: ResultStore, now: datetime,
           study_uid: str | None = None) -> list[Decision]:
    """Every study older than a rule (or just `study_uid`), with what may go and what holds it."""
    ages = [(what, days) for what, days in ((IMAGES, rules.images_days), (RESULTS, rules.results_days)) if days]
    if not ages:
        return []
    oldest = now - timedelta(days=min(days for _, days in ages))
    q = select(Study).where(Study.last_received_at < oldest).order_by(Study.last_received_at)
    if study_uid is not None:
        q = select(Study).where(Study.study_uid == study_uid)
    out = []
    for study in s.scalars(q):
        blocker: str | None | bool = False        # False: not looked up yet (one query set per study)
        for what, days in ages:
            if study.last_received_at >= now - timedelta(days=days) or (what == IMAGES and study.state == PRUNED):
                continue
            if what == RESULTS and not results.folder(study.study_uid).exists():
                continue
            if blocker is False:
                blocker = _blocker(s, study, rules, now)
            out.append(Decision(study.study_uid, what, study.last_received_at, blocker))
    return out


def open_prunes(s: Session) -> set[tuple[str, str]]:
    return {(uid, objects[0]) for uid, objects in s.execute(
        select(Job.study_uid, Job.objects).where(Job.kind == KIND, Job.state.not_in([DONE, FAILED])))}


def make_jobs(sessions: sessionmaker[Session], rules: RetentionSettings, results: ResultStore, now: datetime,
              max_attempts: int) -> list[Job]:
    """A prune job for each study part that may go and has none open; returns them (committed)."""
    with sessions.begin() as s:
        pending = open_prunes(s)
        jobs = [new_job(KIND, d.study_uid, ROUTE, 0 if d.what == IMAGES else 1, DESTINATION, max_attempts,
                        objects=[d.what], now=now)
                for d in assess(s, rules, results, now)
                if d.kept_because is None and (d.study_uid, d.what) not in pending]
        s.add_all(jobs)
    for job in jobs:
        log.info("retention: job %d prunes the %s of study %s", job.id, job.objects[0], job.study_uid)
    return jobs


class RetentionSweep:
    """Run by the engine's routing loop: every `sweep_seconds`, make the prune jobs that are due."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], results: ResultStore,
                 clock: Clock = SYSTEM) -> None:
        self.rules = settings.storage.retention
        self.sessions, self.results, self.clock = sessions, results, clock
        self.max_attempts = settings.engine.retry.max_attempts
        self._next = clock.monotonic()

    def run_once(self) -> bool:
        """True when jobs were made."""
        if self.clock.monotonic() < self._next:
            return False
        self._next = self.clock.monotonic() + self.rules.sweep_seconds
        return bool(make_jobs(self.sessions, self.rules, self.results, self.clock.now(), self.max_attempts))


def prune(sessions: sessionmaker[Session], files: FileStore, results: ResultStore, rules: RetentionSettings,
          study_uid: str, what: str, now: datetime) -> dict:
    """Delete `what` of the study if it still may go (checked again); the job's result."""
    with sessions() as s:
        decision = next((d for d in assess(s, rules, results, now, study_uid) if d.what == what), None)
    if decision is None:
        return {"pruned": False, "why": "no longer due (gone, or received again)"}
    if decision.kept_because is not None:
        log.info("retention: %s of study %s kept: %s", what, study_uid, decision.kept_because)
        return {"pruned": False, "why": decision.kept_because}
    # files first, rows after: a crash in between leaves rows whose retry finishes, never lost rows
    if what == RESULTS:
        shutil.rmtree(results.folder(study_uid), ignore_errors=True)
    else:
        shutil.rmtree(files.path_of(check_uid(study_uid, "StudyInstanceUID")), ignore_errors=True)
    with sessions.begin() as s:
        study = s.scalars(select(Study).where(Study.study_uid == study_uid)).one()
        payload: dict = {"what": what}
        if what == IMAGES:
            series = select(Series.id).where(Series.study_pk == study.id)
            payload["instances"] = s.execute(delete(Instance).where(Instance.series_pk.in_(series))).rowcount
            s.execute(delete(Series).where(Series.study_pk == study.id))
        # the study's row stays while its results do (they are listed and read through it)
        if what == RESULTS and study.state == PRUNED or what == IMAGES and not results.folder(study_uid).exists():
            s.delete(study)
        elif what == IMAGES:
            study.state = PRUNED
        record(s, EventKind.STUDY_PRUNED, study_uid, payload, at=now)
    log.info("retention: %s of study %s deleted%s", what, study_uid,
             f" ({payload['instances']} instance(s))" if what == IMAGES else "")
    return {"pruned": True, **payload}
