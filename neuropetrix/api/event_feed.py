"""The event log as a live feed: read the `events` table by id and fan new events out to subscribers.

Reading the table (rather than trusting an in-process signal) sees events written by any process — the
SCP thread, a worker, another node on the same database — and makes resuming exact: a client that saw
event N asks for everything after N. Reading stops at an id gap that an open PostgreSQL transaction may
still fill (store/eventlog.py, which the engine reads too), so no event is passed over. Commits of
events in this process wake the feed at once; those of other processes are seen at the next poll.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import web
from sqlalchemy import Connection, Engine, Insert, event, func, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry, Pool

from neuropetrix.api.database import Database
from neuropetrix.api.permissions import event_permission
from neuropetrix.store.eventlog import settled_up_to
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
    """Events after `after`, never past an id gap that a still-open transaction may fill (PostgreSQL)."""
    settled = settled_up_to(s, after, scan=limit)
    rows = s.scalars(select(Event).where(Event.id > after, Event.id <= settled).order_by(Event.id)
                     .limit(limit)).all()
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


class _CommitWatch:
    """Calls `wake` when a connection of this process that inserted into `events` goes back to its
    pool, i.e. after its commit. The SCP's index (its own engine, Core inserts), study completion and
    the worker (ORM) all write in this process, so the feed need not wait for its next poll."""

    def __init__(self, wake: Callable[[], object]) -> None:
        self.wake = wake
        event.listen(Engine, "after_execute", self._executed)
        event.listen(Pool, "checkin", self._returned)

    @staticmethod
    def _executed(conn: Connection, statement: object, *_args: object) -> None:
        if isinstance(statement, Insert) and statement.table.name == Event.__tablename__:
            conn.info["event_written"] = True

    def _returned(self, _dbapi_conn: object, record: ConnectionPoolEntry) -> None:
        if record.info.pop("event_written", False):
            with contextlib.suppress(RuntimeError):      # the loop is already closed: the node is stopping
                self.wake()

    def remove(self) -> None:
        event.remove(Engine, "after_execute", self._executed)
        event.remove(Pool, "checkin", self._returned)


class EventFeed:
    """The event log read by id and fanned out to subscribers (the WebSockets) and listeners."""

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
        """Read new events whenever this process commits one, and every `poll` seconds for the others."""
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        watch = _CommitWatch(lambda: loop.call_soon_threadsafe(wake.set))
        try:
            self.last_id = await self.db(last_event_id)
            while True:
                wake.clear()
                try:
                    items = await self.db(read_after, self.last_id)
                except Exception:
                    log.exception("reading the event log failed; will retry")
                    items = []
                if items:
                    self.last_id = items[-1].id
                    self._publish(items)
                if len(items) < PAGE:
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that comes
                    # as the wake-up does, and the feed then never stops (the app's cleanup waits for ever)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll):
                            await wake.wait()
        finally:
            watch.remove()

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


FEED = web.AppKey("feed", EventFeed)
