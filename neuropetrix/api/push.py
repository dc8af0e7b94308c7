"""Push notifications: events → one durable job of kind "push" per device → FCM.

Which events notify whom (docs/api.md): a finished analysis goes to the roles with push.results, an
analysis parked as failed to those with push.failures (high priority), and a route's `notify` action
(the engine's `notification` event) to the roles it names (high priority). The jobs are made and the
engine cursor "push" moved in one transaction, so an event turns into messages once, crash or not.
They run through the engine's job queue (destination "fcm"): a 5xx or an unreachable FCM is retried
with the queue's back-off up to push.max_attempts, then parked for an operator's retry; a token FCM
calls unregistered is dropped and its job done. Messages carry no patient data: it would cross Google.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from neuropetrix.api.database import Database
from neuropetrix.api.event_feed import FeedItem
from neuropetrix.api.permissions import PUSH_FAILURES, PUSH_RESULTS, roles_with
from neuropetrix.api.tokens import token_hash
from neuropetrix.engine.events import ANALYSIS_DONE, ANALYSIS_FAILED, NOTIFICATION, advance, take_pending
from neuropetrix.engine.jobs import Claimed, JobFailure, JobQueue
from neuropetrix.metrics import PUSH_MESSAGES
from neuropetrix.node.scu.push import REJECTED, RETRY, SENT, FcmSender, PushMessageSpec, PushOutcome
from neuropetrix.store.accounts import ROLES, Device, User
from neuropetrix.store.db import utcnow
from neuropetrix.store.jobs_models import QUEUED, EngineCursor, Job
from neuropetrix.store.models import Event

log = logging.getLogger("neuropetrix.push")

KIND, DESTINATION, CONSUMER = "push", "fcm", "push"
KINDS = (ANALYSIS_DONE, ANALYSIS_FAILED, NOTIFICATION)


def plan(e: Event) -> tuple[list[str], str, str, str] | None:
    """(roles, priority, title, body) of the notification an event calls for, or None."""
    p = e.payload or {}
    if e.kind == ANALYSIS_DONE:
        lesions = p.get("lesions")
        body = "Results are ready" if lesions is None else f"Results are ready: {lesions} lesion(s)"
        return roles_with(PUSH_RESULTS), "normal", "PET/CT analysis done", body
    if e.kind == ANALYSIS_FAILED and p.get("parked"):
        return roles_with(PUSH_FAILURES), "high", "PET/CT analysis failed", "The analysis needs attention"
    if e.kind == NOTIFICATION:
        roles = [r for r in p.get("recipients", []) if r in ROLES]
        return roles, "high", "PET/CT study flagged", f"Rule {p.get('route', '')} asks you to look"
    return None


def enqueue(s: Session, max_attempts: int) -> int:
    """Turn new events into push jobs; returns how many events were handled."""
    if s.get(EngineCursor, CONSUMER) is None:      # first start: no notifications about the past
        s.add(EngineCursor(name=CONSUMER, event_id=s.scalar(select(func.max(Event.id))) or 0))
        s.flush()
    events = take_pending(s, CONSUMER, KINDS, 200)
    now = utcnow()
    for e in events:
        what = plan(e)
        if what is None or not what[0]:
            continue
        roles, priority, title, body = what
        devices = s.execute(select(Device.id, Device.token, Device.user_id).join(User)
                            .where(User.role.in_(roles), User.disabled.is_(False))).all()
        for device_id, token, user_id in devices:
            # one job per (event, device): the queue's unique (source_event_id, route, action_index)
            s.add(Job(kind=KIND, study_uid=e.study_uid or "", route=CONSUMER, action_index=device_id,
                      source_event_id=e.id, destination=DESTINATION, objects=[], state=QUEUED, attempts=0,
                      params={"token": token, "user_id": user_id, "priority": priority, "title": title,
                              "body": body, "data": {"kind": e.kind, "event_id": str(e.id),
                                                     "study_uid": e.study_uid or ""}},
                      max_attempts=max_attempts, next_attempt_at=now, worker="", last_error="", result={},
                      created_at=now, updated_at=now))
    if events:
        advance(s, CONSUMER, events[-1].id)
    return len(events)


def drop_device(s: Session, token: str) -> None:
    s.execute(delete(Device).where(Device.token_hash == token_hash(token)))


class PushNotifier:
    def __init__(self, db: Database, queue: JobQueue, sender: FcmSender, max_attempts: int,
                 poll_seconds: float) -> None:
        self.db = db
        self.queue = queue
        self.sender = sender
        self.max_attempts = max_attempts
        self.poll = poll_seconds
        self.worker = f"push:{socket.gethostname()}:{os.getpid()}"
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="push")   # pyfcm keeps a session per thread

    def on_events(self, items: list[FeedItem]) -> None:
        """Feed listener: a relevant event was written somewhere; look now rather than at the next poll."""
        if any(i.kind in KINDS for i in items):
            self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            try:
                handled = await self.db(enqueue, self.max_attempts)
                while (job := await self.db.run(self.queue.claim, self.worker, (KIND,))) is not None:
                    p = job.params
                    spec = PushMessageSpec(p["token"], p["title"], p["body"], p["data"], p["priority"])
                    outcome = await loop.run_in_executor(self._pool, self.sender.send, spec)
                    PUSH_MESSAGES.labels(outcome.result).inc()
                    await self.db.run(self._record, job, outcome)
                if handled:
                    continue
            except Exception:
                log.exception("push notifier failed; will retry")
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll)
            except TimeoutError:
                pass

    def _record(self, job: Claimed, outcome: PushOutcome) -> None:
        if outcome.result == SENT:
            self.queue.finish(job, self.worker, {"outcome": SENT, "message": outcome.detail})
        elif outcome.result in (RETRY, REJECTED):
            log.warning("push job %d: %s (%s)", job.id, outcome.result, outcome.detail)
            self.queue.fail(job, self.worker, JobFailure(outcome.detail, permanent=outcome.result == REJECTED))
        else:                                       # unregistered: the device is gone, nothing to retry
            log.info("push job %d: device token unregistered; device dropped", job.id)
            with self.db.sessions.begin() as s:
                drop_device(s, job.params["token"])
            self.queue.finish(job, self.worker, {"outcome": outcome.result, "device": "dropped"})

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
