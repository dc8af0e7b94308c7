"""The event log: one row per thing that happened, in order, and every kind of event there is.

Every writer records through `record` (or, on the index's Core connection, with an `EventKind` value),
so a kind is spelled in one place. Consumers keep a cursor (the last event id handled) in
`engine_cursors` and move it in the same transaction as what they did with the events, so each event
is acted on exactly once, crash or not.

On PostgreSQL ids are handed out before commit, so event 11 can be visible while event 10's transaction
is still open; a cursor moved past 11 would skip 10 for ever. A consumer therefore reads up to the
first gap in the ids only, unless the event after the gap is older than GAP_SETTLE_SECONDS, by which
time the missing id belongs to a transaction that rolled back. SQLite, one writer at a time, never
shows such gaps.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from neuropetrix.store.db import utcnow
from neuropetrix.store.jobs_models import EngineCursor
from neuropetrix.store.models import Event

GAP_SETTLE_SECONDS = 10.0


class EventKind(StrEnum):
    """Every kind of event; the part before the dot is its family (api/permissions.py shows families)."""

    STUDY_RECEIVED = "study.received"        # first instance of a study (store/index.py)
    STUDY_REOPENED = "study.reopened"        # an instance arrived for a complete study
    STUDY_COMPLETE = "study.complete"        # quiet time passed or MPPS completed (engine/assembly.py)
    # a study asked for from the PACS as another study's prior (engine/priors.py): not routed when it arrives
    PRIOR_REQUESTED = "study.prior_requested"
    ANALYSIS_STARTED = "analysis.started"
    ANALYSIS_DONE = "analysis.done"
    ANALYSIS_FAILED = "analysis.failed"
    DELIVERY_DONE = "delivery.done"
    DELIVERY_FAILED = "delivery.failed"
    NOTIFICATION = "notification"            # a route's notify action
    # engine/notifications.py: an urgent one passed on to the next on call; acknowledged; an address
    # (e-mail, phone) refused for good
    NOTIFICATION_ESCALATED = "notification.escalated"
    NOTIFICATION_ACKED = "notification.acked"
    NOTIFICATION_UNDELIVERABLE = "notification.undeliverable"
    # physician review (engine/review.py): a preliminary result awaits review; decisions changed; a
    # physician signed (or asked for a re-analysis); a new version of the results was made
    REVIEW_READY = "review.ready"
    REVIEW_CHANGED = "review.changed"
    REVIEW_SIGNED = "review.signed"
    REVIEW_REANALYSIS = "review.reanalysis"
    REVIEW_VERSION = "review.version"
    STUDY_PRUNED = "study.pruned"            # retention deleted a study's images or results (engine/retention.py)
    PRUNE_FAILED = "study.prune_failed"
    ORDER_CHANGED = "order.changed"          # an HBYS order's state moved (engine/orders.py); payload: order, status
    # an account's tokens were revoked (api/users.py): API processes close its WebSockets; payload: user_id
    ACCOUNT_REVOKED = "account.revoked"


def record(s: Session, kind: EventKind, study_uid: str | None, payload: dict, at: datetime | None = None) -> None:
    s.add(Event(kind=str(kind), study_uid=study_uid, created_at=at or utcnow(), payload=payload))


def settled_up_to(s: Session, after: int, scan: int, now: datetime | None = None) -> int:
    """The highest event id such that every id from `after` up to it is committed or given up."""
    recent = (now or utcnow()) - timedelta(seconds=GAP_SETTLE_SECONDS)
    safe = after
    for event_id, created_at in s.execute(select(Event.id, Event.created_at).where(Event.id > after)
                                          .order_by(Event.id).limit(scan)):
        if event_id != safe + 1 and created_at > recent:
            break                      # an earlier id may still be committed: come back for it
        safe = event_id
    return safe


def lock_cursor(s: Session, consumer: str, from_now: bool = False) -> EngineCursor:
    """`consumer`'s cursor, made if missing (at 0, or at the newest event with `from_now`: no acting on
    the past), and locked until the transaction ends, so that two workers on one database never take
    the same events: a row lock on PostgreSQL, the database's write lock on SQLite (whose driver would
    otherwise read the cursor outside the transaction that moves it)."""
    start = (s.scalar(select(func.max(Event.id))) or 0) if from_now else 0
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    s.execute(insert(EngineCursor).values(name=consumer, event_id=start).on_conflict_do_nothing())
    s.execute(update(EngineCursor).where(EngineCursor.name == consumer).values(event_id=EngineCursor.event_id))
    cursor = s.scalars(select(EngineCursor).where(EngineCursor.name == consumer)
                       .execution_options(populate_existing=True)).one()
    return cursor


def take_pending(s: Session, consumer: str, kinds: Iterable[EventKind], limit: int = 100,
                 now: datetime | None = None, from_now: bool = False) -> list[Event]:
    """Events of `kinds` after `consumer`'s cursor, the cursor locked (`lock_cursor`, `from_now` on a
    first start) until commit; the caller acts on them and calls `advance` in the same transaction."""
    cursor = lock_cursor(s, consumer, from_now)
    safe = settled_up_to(s, cursor.event_id, scan=limit * 20, now=now)
    pending = list(s.scalars(select(Event).where(Event.id > cursor.event_id, Event.id <= safe,
                                                 Event.kind.in_([str(k) for k in kinds]))
                             .order_by(Event.id).limit(limit)))
    if len(pending) < limit:           # all of ours up to `safe` are in hand: skip the others' events
        cursor.event_id = safe         # (moved in the caller's transaction, undone with it)
    return pending


def advance(s: Session, consumer: str, event_id: int) -> None:
    cursor = s.get(EngineCursor, consumer)
    assert cursor is not None
    cursor.event_id = max(cursor.event_id, event_id)
