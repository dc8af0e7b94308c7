"""The event log as a live feed: read the `events` table by id and fan new events out to subscribers.

Reading the table (rather than an in-process signal) sees events written by any process — the SCP
thread, a worker, another node on the same database — and makes resuming exact: a client that saw
event N asks for everything after N. On SQLite ids are committed in order, so `id > last` misses none.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from neuropetrix.api.context import Database
from neuropetrix.api.permissions import event_permission
from neuropetrix.store.models import Event

log = logging.getLogger("neuropetrix.api")

PAGE = 500


@dataclass(frozen=True)
class FeedItem:
    id: int
    kind: str
    permission: str
    text: str            # the JSON message, serialised once for every subscriber
    payload: dict
    created_at: datetime


def event_message(e: Event) -> dict:
    return {"type": "event", "id": e.id, "kind": e.kind, "study_uid": e.study_uid,
            "created_at": e.created_at.isoformat() + "Z", "payload": e.payload or {}}


def read_after(s: Session, after: int, limit: int = PAGE) -> list[FeedItem]:
    rows = s.scalars(select(Event).where(Event.id > after).order_by(Event.id).limit(limit)).all()
    return [FeedItem(e.id, e.kind, event_permission(e.kind), json.dumps(event_message(e), ensure_ascii=False),
                     e.payload or {}, e.created_at) for e in rows]


def last_event_id(s: Session) -> int:
    return s.scalar(select(func.max(Event.id))) or 0


@dataclass(eq=False)
class Subscription:
    """A subscriber's queue. When it overflows (a slow client) the feed stops filling it and sets
    `lagging`; the subscriber then catches up from the table, so nothing is lost either way."""

    queue: asyncio.Queue[FeedItem] = field(default_factory=lambda: asyncio.Queue(maxsize=2000))
    lagging: bool = False


class EventFeed:
    def __init__(self, db: Database, poll_seconds: float) -> None:
        self.db = db
        self.poll = poll_seconds
        self.last_id = 0
        self._subs: set[Subscription] = set()
        self._listeners: list[Callable[[list[FeedItem]], None]] = []

    def subscribe(self) -> Subscription:
        sub = Subscription()
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def listen(self, fn: Callable[[list[FeedItem]], None]) -> None:
        """Call `fn` with each batch of new events (metrics, push), on the event loop."""
        self._listeners.append(fn)

    async def run(self) -> None:
        self.last_id = await self.db(last_event_id)
        while True:
            try:
                items = await self.db(read_after, self.last_id)
            except Exception:
                log.exception("reading the event log failed; will retry")
                items = []
            if items:
                self.last_id = items[-1].id
                self._publish(items)
            if len(items) < PAGE:
                await asyncio.sleep(self.poll)

    def _publish(self, items: list[FeedItem]) -> None:
        for sub in self._subs:
            if sub.lagging:
                continue
            for item in items:
                try:
                    sub.queue.put_nowait(item)
                except asyncio.QueueFull:
                    sub.lagging = True
                    break
        for fn in self._listeners:
            try:
                fn(items)
            except Exception:
                log.exception("event listener failed")
