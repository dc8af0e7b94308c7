"""Push notifications: events → one outbox row per device (push_messages) → FCM, retried with back-off.

Which events notify whom (docs/api.md): a finished analysis goes to the roles with push.results, an
analysis parked as failed to those with push.failures (high priority), and a route's `notify` action
(the engine's `notification` event) to the roles it names (high priority). Rows are made and the
engine cursor "push" moved in one transaction, so an event is turned into messages once, crash or not.
A token FCM calls unregistered is dropped; a 5xx or an unreachable FCM is retried up to
push.max_attempts times with doubling back-off. Messages carry no patient data: it would cross Google.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from neuropetrix.api.context import Database
from neuropetrix.api.events import FeedItem
from neuropetrix.api.permissions import PUSH_FAILURES, PUSH_RESULTS, roles_with
from neuropetrix.config.settings import PushSettings
from neuropetrix.engine.events import ANALYSIS_DONE, ANALYSIS_FAILED, NOTIFICATION, advance, take_pending
from neuropetrix.metrics import PUSH_MESSAGES
from neuropetrix.node.scu.push import RETRY, SENT, UNREGISTERED, FcmSender, PushMessageSpec, PushOutcome
from neuropetrix.store.accounts import ROLES, Device, PushMessage, User
from neuropetrix.store.db import utcnow
from neuropetrix.store.jobs_models import EngineCursor
from neuropetrix.store.models import Event

log = logging.getLogger("neuropetrix.push")

CONSUMER = "push"
KINDS = (ANALYSIS_DONE, ANALYSIS_FAILED, NOTIFICATION)
MAX_BACKOFF = 3600.0


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


def enqueue(s: Session) -> int:
    """Turn new events into outbox rows; returns how many events were handled."""
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
        devices = s.execute(select(Device.token, Device.token_hash, Device.user_id).join(User)
                            .where(User.role.in_(roles), User.disabled.is_(False))).all()
        for token, thash, user_id in devices:
            s.add(PushMessage(event_id=e.id, study_uid=e.study_uid, user_id=user_id, device_token=token,
                              device_token_hash=thash, priority=priority, title=title, body=body,
                              data={"kind": e.kind, "event_id": str(e.id), "study_uid": e.study_uid or ""},
                              state="pending", attempts=0, next_attempt_at=now, last_error="", created_at=now))
    if events:
        advance(s, CONSUMER, events[-1].id)
    return len(events)


def claim_due(s: Session, limit: int = 50) -> list[tuple[int, PushMessageSpec]]:
    now = utcnow()
    due = s.scalars(select(PushMessage).where(PushMessage.state == "pending", PushMessage.next_attempt_at <= now)
                    .order_by(PushMessage.id).limit(limit)).all()
    claimed = []
    for m in due:
        if s.execute(update(PushMessage).where(PushMessage.id == m.id, PushMessage.state == "pending")
                     .values(state="sending")).rowcount:
            claimed.append((m.id, PushMessageSpec(m.device_token, m.title, m.body, m.data, m.priority)))
    return claimed


def record(s: Session, message_id: int, outcome: PushOutcome, max_attempts: int, retry_seconds: float) -> None:
    m = s.get(PushMessage, message_id)
    now = utcnow()
    m.attempts += 1
    m.last_error = "" if outcome.result == SENT else outcome.detail[:512]
    if outcome.result == RETRY and m.attempts < max_attempts:
        m.state = "pending"
        m.next_attempt_at = now + timedelta(seconds=min(retry_seconds * 2 ** (m.attempts - 1), MAX_BACKOFF))
        return
    m.state = {SENT: "sent", UNREGISTERED: "dropped"}.get(outcome.result, "failed")
    m.done_at = now
    if outcome.result == UNREGISTERED:
        s.execute(delete(Device).where(Device.token_hash == m.device_token_hash))
        s.execute(update(PushMessage).where(PushMessage.device_token_hash == m.device_token_hash,
                                            PushMessage.state == "pending")
                  .values(state="dropped", done_at=now, last_error="device token unregistered"))


def next_due(s: Session) -> datetime | None:
    return s.scalar(select(func.min(PushMessage.next_attempt_at)).where(PushMessage.state == "pending"))


def release_claims(s: Session) -> None:
    """Messages a stopped process was sending go back to pending (push is at-least-once)."""
    s.execute(update(PushMessage).where(PushMessage.state == "sending").values(state="pending"))


class PushNotifier:
    def __init__(self, db: Database, sender: FcmSender, settings: PushSettings, idle_seconds: float = 5.0) -> None:
        self.db = db
        self.sender = sender
        self.settings = settings
        self.idle = idle_seconds
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="push")   # pyfcm keeps a session per thread

    def on_events(self, items: list[FeedItem]) -> None:
        """Feed listener: a relevant event was written somewhere; look now rather than at the next idle tick."""
        if any(i.kind in KINDS for i in items):
            self._wake.set()

    async def run(self) -> None:
        await self.db(release_claims)
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            try:
                handled = await self.db(enqueue)
                batch = await self.db(claim_due)
                for message_id, spec in batch:
                    outcome = await loop.run_in_executor(self._pool, self.sender.send, spec)
                    PUSH_MESSAGES.labels(outcome.result).inc()
                    if outcome.result != SENT:
                        log.warning("push %d: %s (%s)", message_id, outcome.result, outcome.detail)
                    await self.db(record, message_id, outcome, self.settings.max_attempts,
                                  self.settings.retry_seconds)
                if handled or batch:
                    continue
                due = await self.db(next_due)
            except Exception:
                log.exception("push notifier failed; will retry")
                due = None
            wait = self.idle if due is None else min(self.idle, max(0.0, (due - utcnow()).total_seconds()))
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
