"""The event log as the engine writes and reads it: one row per thing that happened, in order.

Consumers keep a cursor (the last event id handled) in `engine_cursors` and move it in the same
transaction as what they did with the events, so each event is acted on exactly once, crash or not.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from neuropetrix.store.db import utcnow
from neuropetrix.store.jobs_models import EngineCursor
from neuropetrix.store.models import Event

STUDY_COMPLETE = "study.complete"
ANALYSIS_STARTED, ANALYSIS_DONE, ANALYSIS_FAILED = "analysis.started", "analysis.done", "analysis.failed"
DELIVERY_DONE, DELIVERY_FAILED = "delivery.done", "delivery.failed"
NOTIFICATION = "notification"


def record(s: Session, kind: str, study_uid: str | None, payload: dict) -> None:
    s.add(Event(kind=kind, study_uid=study_uid, created_at=utcnow(), payload=payload))


def take_pending(s: Session, consumer: str, kinds: tuple[str, ...], limit: int = 100) -> list[Event]:
    """Events of `kinds` after `consumer`'s cursor, the cursor row locked (PostgreSQL) until commit;
    the caller acts on them and calls `advance` in the same transaction."""
    cursor = s.scalars(select(EngineCursor).where(EngineCursor.name == consumer).with_for_update()).first()
    if cursor is None:
        cursor = EngineCursor(name=consumer, event_id=0)
        s.add(cursor)
        s.flush()
    return list(s.scalars(select(Event).where(Event.id > cursor.event_id, Event.kind.in_(kinds))
                          .order_by(Event.id).limit(limit)))


def advance(s: Session, consumer: str, event_id: int) -> None:
    cursor = s.get(EngineCursor, consumer)
    assert cursor is not None
    cursor.event_id = max(cursor.event_id, event_id)
