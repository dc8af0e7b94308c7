"""The event log as a live feed: read the `events` table by id and fan new events out to subscribers.

Reading the table (rather than trusting an in-process signal) sees events written by any process — the
SCP thread, a worker, another node on the same database — and makes resuming exact: a client that saw
event N asks for everything after N. Reading stops at an id gap that an open PostgreSQL transaction may
still fill (store/eventlog.py, which the engine reads too), so no event is passed over. Commits of
events in this process wake the feed at once; those of other processes are seen at the next poll.

Fan-out is one loop per batch: each event is serialised once, and handed to the subscribers grouped by
the permissions they hold (a role), so the filter is one set lookup per event and group, not per client.
Subscribers (the WebSockets, ws.py) write without waiting, so 500 clients cost one pass, not 500 task
wake-ups; one that cannot take the message now (a slow client) drops out and catches up from the table.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from aiohttp import web
from sqlalchemy import Connection, Engine, Insert, event, func, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry, Pool

from neuropetrix.api.database import Database
from neuropetrix.api.permissions import event_permission
from neuropetrix.metrics import EVENT_FANOUT_SECONDS, EVENT_FEED_LAG, EVENT_READ_SECONDS
from neuropetrix.store.db import utcnow
from neuropetrix.store.eventlog import EventKind, settled_up_to
from neuropetrix.store.models import Event

log = logging.getLogger("neuropetrix.api")

PAGE = 500


@dataclass(frozen=True)
class FeedItem:
    id: int
    kind: str
    permission: str
    data: bytes          # the JSON message as UTF-8, serialised once for every subscriber
    payload: dict
    created_at: datetime

    @property
    def text(self) -> str:
        return self.data.decode()


def event_message(e: Event) -> dict:
    return {"type": "event", "id": e.id, "kind": e.kind, "study_uid": e.study_uid,
            "created_at": e.created_at.isoformat() + "Z", "payload": e.payload or {}}


def read_after(s: Session, after: int, limit: int = PAGE) -> list[FeedItem]:
    """Events after `after`, never past an id gap that a still-open transaction may fill (PostgreSQL;
    SQLite, one writer at a time, shows no such gap: one query there, the feed's read per commit)."""
    query = select(Event).where(Event.id > after)
    if s.get_bind().dialect.name != "sqlite":
        query = query.where(Event.id <= settled_up_to(s, after, scan=limit))
    rows = s.scalars(query.order_by(Event.id).limit(limit)).all()
    return [FeedItem(e.id, e.kind, event_permission(e.kind),
                     json.dumps(event_message(e), ensure_ascii=False).encode(), e.payload or {}, e.created_at)
            for e in rows]


def last_event_id(s: Session) -> int:
    return s.scalar(select(func.max(Event.id))) or 0


class Subscriber(Protocol):
    """What the feed fans out to (ws.py's streams)."""

    permissions: frozenset[str]
    user_id: int

    async def deliver(self, item: FeedItem) -> None:
        """Send `item`, which this subscriber may see, without waiting on the client."""

    def revoke(self) -> None:
        """This subscriber's account was revoked (an `account.revoked` event about it)."""


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
        self.last_id = 0     # the last event read and handed out: a subscriber at it misses nothing
        self._groups: dict[frozenset[str], set[Subscriber]] = {}     # by permissions: a role's filter
        self._listeners: list[Callable[[list[FeedItem]], None]] = []

    def subscribe(self, sub: Subscriber) -> None:
        self._groups.setdefault(sub.permissions, set()).add(sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        group = self._groups.get(sub.permissions)
        if group is not None:
            group.discard(sub)
            if not group:
                del self._groups[sub.permissions]

    def listen(self, fn: Callable[[list[FeedItem]], None]) -> None:
        """Call `fn` with each batch of new events (metrics, push), on the event loop."""
        self._listeners.append(fn)

    async def start(self) -> None:
        """Take the log's current end as the feed's position; done before the app serves, so no stream
        connects while the position is still unknown (it would go live at 0, and an event committed
        before the feed's first read would reach no one)."""
        self.last_id = await self.db(last_event_id)

    async def run(self) -> None:
        """Read new events whenever this process commits one, and every `poll` seconds for the others
        (after `start`)."""
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        committed: list[float] = []      # when this process's commits not yet read were made (a stage metric)

        def woken() -> None:             # in the committing thread
            committed.append(time.perf_counter())
            loop.call_soon_threadsafe(wake.set)

        watch = _CommitWatch(woken)
        try:
            while True:
                wake.clear()
                try:
                    items = await self.db(read_after, self.last_id)
                except Exception:
                    log.exception("reading the event log failed; will retry")
                    items = []
                if items:
                    read_at = utcnow()
                    for item in items:
                        EVENT_FEED_LAG.observe((read_at - item.created_at).total_seconds())
                    if committed:
                        EVENT_READ_SECONDS.observe(time.perf_counter() - committed[0])
                        committed.clear()
                    self.last_id = items[-1].id
                    self._publish(items)
                    started = time.perf_counter()
                    await self._fan_out(items)
                    EVENT_FANOUT_SECONDS.observe(time.perf_counter() - started)
                if len(items) < PAGE:
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that comes
                    # as the wake-up does, and the feed then never stops (the app's cleanup waits for ever)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll):
                            await wake.wait()
        finally:
            watch.remove()

    def _publish(self, items: list[FeedItem]) -> None:
        for fn in self._listeners:
            try:
                fn(items)
            except Exception:
                log.exception("event listener failed")

    async def _fan_out(self, items: list[FeedItem]) -> None:
        """Each event to every subscriber allowed to see it, in id order; an account's revocation to
        its own subscribers whatever they may see."""
        for item in items:
            if item.kind == EventKind.ACCOUNT_REVOKED:
                for group in self._groups.values():
                    for sub in group:
                        if sub.user_id == item.payload.get("user_id"):
                            sub.revoke()
            for permissions, group in list(self._groups.items()):
                if item.permission in permissions:
                    for sub in tuple(group):
                        try:
                            await sub.deliver(item)
                        except Exception:       # one subscriber's fault must not cost the others theirs
                            log.exception("event fan-out to a subscriber failed")


FEED = web.AppKey("feed", EventFeed)
