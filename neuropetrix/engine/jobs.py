"""The durable job queue: create, claim, finish, fail (with back-off per destination), retry, list.

Claiming is safe with several workers and several nodes: on PostgreSQL a candidate row is locked with
FOR UPDATE SKIP LOCKED; on SQLite (one writer at a time) a conditional UPDATE … WHERE state='queued'
takes it, and a worker that loses the race simply tries the next row. A job whose worker stopped
renewing its lease (a crash, a kill) is claimable again once the lease expires.

A job waits while its prerequisite (`after_id`, the analysis its results come from) is not done, while
its destination is backing off, and (deliveries) while its destination already has `per_destination`
jobs in hand: a dead or silent peer ties up at most that many lanes, every other destination's jobs go
ahead. On PostgreSQL a transaction-scoped advisory lock per destination makes that count exact across
nodes; SQLite has one writer at a time.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased, sessionmaker

from neuropetrix.config.settings import RetrySettings
from neuropetrix.engine.clock import SYSTEM, Clock
from neuropetrix.store.db import utcnow
from neuropetrix.store.eventlog import EventKind, record
from neuropetrix.store.jobs_models import COMMITTING, DONE, FAILED, QUEUED, RUNNING, Destination, Job

log = logging.getLogger("neuropetrix.jobs")
PRIORS_KIND = "priors"     # engine/priors.py's jobs: what an analysis waits for, but not at any price


class JobFailure(Exception):
    """A job did not succeed. `permanent`: retrying the same thing cannot help (parked at once);
    `retry_at`: the destination asked to be called again then (e.g. Retry-After)."""

    def __init__(self, message: str, permanent: bool = False, retry_at: datetime | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_at = retry_at


def backoff_seconds(failures: int, retry: RetrySettings, rng: random.Random | None = None) -> float:
    """base × 2^(failures−1), capped; `jitter` of it drawn at random so peers are not hit in step."""
    delay = min(retry.max_seconds, retry.base_seconds * 2 ** max(0, failures - 1))
    return delay * (1 - retry.jitter) + delay * retry.jitter * (rng or random).random()


@dataclass(frozen=True)
class Claimed:
    """What a worker needs of a claimed job (a detached copy: the row may change under it)."""

    id: int
    kind: str
    study_uid: str
    route: str
    destination: str
    objects: list
    params: dict
    attempts: int
    max_attempts: int
    after_id: int | None

    @classmethod
    def of(cls, job: Job, attempts: int) -> Claimed:
        return cls(job.id, job.kind, job.study_uid, job.route, job.destination, list(job.objects),
                   dict(job.params), attempts, job.max_attempts, job.after_id)


def new_job(kind: str, study_uid: str, route: str, action_index: int, destination: str, max_attempts: int, *,
            source_event_id: int | None = None, objects: list | tuple = (), params: dict | None = None,
            now: datetime | None = None) -> Job:
    """A queued job, every column set: the one way jobs are made (routes, push)."""
    now = now or utcnow()
    return Job(kind=kind, study_uid=study_uid, route=route, action_index=action_index,
               source_event_id=source_event_id, destination=destination, objects=list(objects),
               params=dict(params or {}), state=QUEUED, attempts=0, max_attempts=max_attempts,
               next_attempt_at=now, worker="", last_error="", result={}, created_at=now, updated_at=now)


def _in_hand(now: datetime) -> ColumnElement[int]:
    """How many jobs of the candidate's destination a live worker holds."""
    other = aliased(Job)
    return (select(func.count(other.id)).where(other.destination == Job.destination, other.state == RUNNING,
                                               other.lease_until >= now).scalar_subquery())


def _claimable(now: datetime, kinds: tuple[str, ...], per_destination: int | None) -> ColumnElement[bool]:
    prerequisite = aliased(Job)
    ready = and_(
        Job.state == QUEUED, Job.next_attempt_at <= now,
        or_(Job.after_id.is_(None),
            exists().where(prerequisite.id == Job.after_id, prerequisite.state == DONE),
            # an analysis goes ahead with the priors the node holds when fetching more was given up
            exists().where(prerequisite.id == Job.after_id, prerequisite.kind == PRIORS_KIND,
                           prerequisite.state == FAILED)),
        ~exists().where(Destination.name == Job.destination, Destination.blocked_until > now))
    abandoned = and_(Job.state == RUNNING, Job.lease_until < now)
    unanswered = and_(Job.state == COMMITTING, Job.next_attempt_at <= now)
    claimable = and_(Job.kind.in_(kinds), or_(ready, abandoned, unanswered))
    return claimable if per_destination is None else and_(claimable, _in_hand(now) < per_destination)


class JobQueue:
    def __init__(self, sessions: sessionmaker[Session], retry: RetrySettings, lease_seconds: float,
                 clock: Clock = SYSTEM) -> None:
        self.sessions = sessions
        self.clock = clock
        self.retry = retry
        self.lease = timedelta(seconds=lease_seconds)
        self.postgres = sessions.kw["bind"].dialect.name == "postgresql"
        self._insert = postgresql_insert if self.postgres else sqlite_insert

    def claim(self, worker: str, kinds: tuple[str, ...], per_destination: int | None = None) -> Claimed | None:
        """Take one runnable job of `kinds` for `worker`, or None when there is none; with
        `per_destination`, none of a destination that already has that many jobs in hand."""
        now = self.clock.now()
        with self.sessions.begin() as s:
            query = select(Job).where(_claimable(now, kinds, per_destination)).order_by(Job.id)
            if self.postgres:
                candidates = s.scalars(query.limit(1).with_for_update(skip_locked=True)).all()
            else:
                candidates = s.scalars(query.limit(8)).all()
            for job in candidates:
                resumed = job.state == RUNNING
                limit = []
                if per_destination is not None:
                    if self.postgres:
                        s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:d))"), {"d": job.destination})
                    limit = [_in_hand(now) < per_destination]
                taken = s.execute(
                    update(Job).where(Job.id == job.id, Job.state == job.state,
                                      Job.updated_at == job.updated_at, *limit)
                    .values(state=RUNNING, worker=worker, lease_until=now + self.lease,
                            attempts=Job.attempts + 1, updated_at=now)
                    .execution_options(synchronize_session=False)).rowcount
                if taken:
                    if resumed:
                        log.warning("job %d (%s → %s) resumed: worker %s stopped renewing it", job.id,
                                    job.kind, job.destination, job.worker)
                    elif job.state == COMMITTING:
                        log.warning("job %d: %s never answered the storage commitment request; sending "
                                    "again", job.id, job.destination)
                    return Claimed.of(job, job.attempts + 1)
        return None

    def renew(self, worker: str, job_ids: list[int]) -> None:
        if not job_ids:
            return
        with self.sessions.begin() as s:
            s.execute(update(Job).where(Job.id.in_(job_ids), Job.worker == worker, Job.state == RUNNING)
                      .values(lease_until=self.clock.now() + self.lease))

    def finish(self, job: Claimed, worker: str, result: dict, event: EventKind | None = None) -> bool:
        """Mark done and clear the destination's back-off; False when the job was taken from us."""
        now = self.clock.now()
        with self.sessions.begin() as s:
            done = s.execute(update(Job).where(Job.id == job.id, Job.worker == worker,
                                               Job.state.in_((RUNNING, COMMITTING)))
                             .values(state=DONE, result=result, last_error="", lease_until=None,
                                     finished_at=now, updated_at=now)).rowcount
            if not done:
                return False
            s.execute(update(Destination).where(Destination.name == job.destination, Destination.failures > 0)
                      .values(failures=0, blocked_until=None, updated_at=now))
            if event:
                record(s, event, job.study_uid, {"job": job.id, "destination": job.destination,
                                                 "route": job.route, **result})
        return True

    def await_commitment(self, job: Claimed, worker: str, result: dict, timeout: float) -> bool:
        """Everything is stored and the commitment request is about to go out: from now on the job
        waits for the PACS's answer. Recorded before the request, so even the quickest answer finds it."""
        now = self.clock.now()
        with self.sessions.begin() as s:
            return bool(s.execute(
                update(Job).where(Job.id == job.id, Job.worker == worker, Job.state == RUNNING)
                .values(state=COMMITTING, result=result, lease_until=None,
                        next_attempt_at=now + timedelta(seconds=timeout), updated_at=now)).rowcount)

    def settle_commitment(self, job_id: int, attempt: int, failed: list[tuple[str, int]]) -> bool:
        """A PACS answered the commitment request of `attempt`: done, or (instances not committed) a
        failed attempt. False when no job waits for this answer."""
        with self.sessions() as s:
            row = s.get(Job, job_id)
        if row is None or row.state != COMMITTING or row.attempts != attempt:
            return False
        job = Claimed.of(row, row.attempts)
        if failed:
            reasons = ", ".join(f"{uid} (0x{reason:04X})" for uid, reason in failed[:5])
            self.fail(job, row.worker, JobFailure(f"{job.destination} did not commit {len(failed)} instance(s): "
                                                  f"{reasons}"), EventKind.DELIVERY_FAILED)
        elif self.finish(job, row.worker, {**row.result, "committed": True}, EventKind.DELIVERY_DONE):
            log.info("job %d done: %s committed all %d object(s)", job.id, job.destination, row.result.get("sent", 0))
        return True

    def fail(self, job: Claimed, worker: str, failure: JobFailure, event: EventKind | None = None) -> str:
        """Record a failed attempt: queued again after the destination's back-off, or parked.

        Every write is conditional or atomic (failures = failures + 1), so lanes failing on the same
        destination at once, or a late commitment answer, never lose an update."""
        now = self.clock.now()
        message = str(failure)[:2000]
        parked = failure.permanent or job.attempts >= job.max_attempts
        with self.sessions.begin() as s:
            taken = s.execute(
                update(Job).where(Job.id == job.id, Job.worker == worker, Job.state.in_((RUNNING, COMMITTING)))
                .values(state=FAILED if parked else QUEUED, last_error=message, lease_until=None,
                        next_attempt_at=now, updated_at=now, finished_at=now if parked else None)).rowcount
            if not taken:
                return "lost"
            retry_at = failure.retry_at or now
            if not failure.permanent:       # one refused message says nothing about the destination
                s.execute(self._insert(Destination.__table__)
                          .values(name=job.destination, failures=0, last_error="", updated_at=now)
                          .on_conflict_do_nothing(index_elements=["name"]))
                s.execute(update(Destination).where(Destination.name == job.destination)
                          .values(failures=Destination.failures + 1, last_error=message, updated_at=now))
                failures = s.scalar(select(Destination.failures).where(Destination.name == job.destination))
                retry_at = failure.retry_at or now + timedelta(seconds=backoff_seconds(failures, self.retry))
                s.execute(update(Destination).where(Destination.name == job.destination)
                          .values(blocked_until=retry_at))
                if not parked:
                    s.execute(update(Job).where(Job.id == job.id).values(next_attempt_at=retry_at))
            if event:
                record(s, event, job.study_uid, {
                    "job": job.id, "destination": job.destination, "route": job.route, "error": message,
                    "attempt": job.attempts, "parked": parked,
                    "next_attempt_at": None if parked else retry_at.isoformat() + "Z"})
        if parked:
            log.error("job %d (%s → %s) parked as failed after %d attempt(s): %s", job.id, job.kind,
                      job.destination, job.attempts, message)
            return FAILED
        log.warning("job %d (%s → %s) attempt %d failed, next at %s UTC: %s", job.id, job.kind,
                    job.destination, job.attempts, retry_at.strftime("%H:%M:%S"), message)
        return QUEUED

    def hand_back(self, job: Claimed, worker: str) -> None:
        """A job interrupted by its node stopping: queued again at once, the attempt not counted."""
        with self.sessions.begin() as s:
            s.execute(update(Job).where(Job.id == job.id, Job.worker == worker, Job.state == RUNNING)
                      .values(state=QUEUED, attempts=Job.attempts - 1, lease_until=None, updated_at=self.clock.now()))

    def requeue(self, job_id: int) -> Job:
        """Requeue a job now (an operator's `jobs retry`): attempts start again, back-off is lifted."""
        now = self.clock.now()
        with self.sessions.begin() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise KeyError(f"no job {job_id}")
            if job.state in (RUNNING, COMMITTING):
                raise ValueError(f"job {job_id} is {job.state} on {job.worker}: wait for it to end")
            job.state, job.attempts, job.next_attempt_at = QUEUED, 0, now
            job.finished_at, job.updated_at = None, now
            dest = s.get(Destination, job.destination)
            if dest is not None:
                dest.blocked_until = None
            return job


def list_jobs(s: Session, state: str | None = None, limit: int = 1000) -> list[Job]:
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if state:
        query = query.where(Job.state == state)
    return list(s.scalars(query))


def job_json(job: Job) -> dict:
    def iso(t: datetime | None) -> str | None:
        return t.isoformat() + "Z" if t else None
    return {"id": job.id, "kind": job.kind, "state": job.state, "study_uid": job.study_uid,
            "route": job.route, "destination": job.destination, "objects": job.objects,
            "after": job.after_id, "attempts": job.attempts, "max_attempts": job.max_attempts,
            "next_attempt_at": iso(job.next_attempt_at) if job.state in (QUEUED, COMMITTING) else None,
            "last_error": job.last_error, "result": job.result, "worker": job.worker,
            "created_at": iso(job.created_at), "finished_at": iso(job.finished_at)}
