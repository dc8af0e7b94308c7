"""`/api/ws`: the live event stream, filtered by the caller's role, with heartbeats and resume.

Protocol (server → client, JSON text frames):
  {"type": "hello", "user", "role", "after"}   first; then the backlog after `after`, then live events
  {"type": "event", "id", "kind", "study_uid", "created_at", "payload"}
  {"type": "heartbeat", "last_event_id"}   every heartbeat_seconds; the id also covers events this
                                           role may not see, so a client can resume past them
A client that reconnects with `?after=<last id seen>` gets every event after it, then the live stream;
the socket closes with code 4001 when the access token expires (reconnect with a fresh one), and with
4003 when the account is disabled, its role or password changed, or it logs out everywhere.

A stream is live (the feed's fan-out writes each event to it directly) while it keeps up; it reads the
`events` table instead after connecting and whenever its socket's write buffer is too full to take the
next message without waiting (a slow client): it then sends at the client's pace and goes live again
once it reaches the feed. So a slow client never holds up the others, and misses nothing.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import BaseModel, Field

from neuropetrix.api.auth import AUTH, PRINCIPAL, Principal
from neuropetrix.api.database import DATABASE
from neuropetrix.api.endpoint import endpoint
from neuropetrix.api.event_feed import FEED, PAGE, FeedItem, read_after
from neuropetrix.api.node_config import SETTINGS
from neuropetrix.api.params import MAX_ID
from neuropetrix.api.users import ACCOUNT_REVOKED
from neuropetrix.metrics import WS_CLIENTS

TOKEN_EXPIRED = 4001
ACCESS_REVOKED = 4003
FRAME_HEADER = 10                  # the most a WebSocket frame's header adds to its message
log = logging.getLogger("neuropetrix.api")
SOCKETS = web.AppKey("websockets", set[web.WebSocketResponse])     # open ones, closed when the node stops


class StreamQuery(BaseModel):
    token: str | None = Field(None, description="the access token, for browsers (they cannot set headers)")
    after: int | None = Field(None, ge=0, le=MAX_ID, description="the last event id seen: resume after it")


class _Stream:
    """One client's stream and the feed's subscriber (event_feed.Subscriber): live from the fan-out
    while it keeps up, from the table while it catches up. `cursor`: the last event id dealt with."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, who: Principal, cursor: int) -> None:
        app = request.app
        self.ws, self.who, self.cursor = ws, who, cursor
        self.permissions, self.user_id = who.permissions, who.user_id    # fixed for the token's life
        self.transport, self.protocol = request.transport, request.protocol
        # what the socket's write buffer may hold, less one frame header, before a write would pause it
        self.room = (self.transport.get_write_buffer_limits()[1] if self.transport else 0) - FRAME_HEADER
        self.db, self.feed, self.auth = app[DATABASE], app[FEED], app[AUTH]
        self.beat = app[SETTINGS].api.heartbeat_seconds
        self.live = False          # the fan-out writes to it (set once caught up with the feed)
        self.revoked = False
        self.wake = asyncio.Event()

    async def deliver(self, item: FeedItem) -> None:
        """From the fan-out: send now, or fall behind (and catch up from the table) if it cannot."""
        if not self.live or item.id <= self.cursor:
            return                 # catching up, or already sent from the table
        transport = self.transport
        if transport is None or transport.is_closing():
            self.live = False      # the client went: its handler ends as the socket closes
            return
        # room below the high-water mark means the write cannot pause the socket, so it never waits
        # for this client (the websockets library's broadcast() passes over slow clients the same way)
        if self.protocol.writing_paused or transport.get_write_buffer_size() + len(item.data) > self.room:
            self.live = False
            self.cursor = item.id - 1
            self.wake.set()
            log.warning("event stream to %s fell behind (a slow client): it goes on from the event log",
                        self.who.username)
            return
        self.cursor = item.id
        try:
            await self.ws.send_frame(item.data, WSMsgType.TEXT)
        except ConnectionResetError:
            self.live = False      # closing (4001/4003, or the node stopping)

    def revoke(self) -> None:
        self.revoked, self.live = True, False
        self.wake.set()

    async def catch_up(self) -> None:
        """Everything after the cursor, from the table, page by page at the client's pace; live again
        once at the feed's position (no await between that check and going live: nothing falls between)."""
        while not self.ws.closed and not self.revoked:
            items = await self.db(read_after, self.cursor, PAGE)
            for item in items:
                self.cursor = item.id
                if item.kind == ACCOUNT_REVOKED and item.payload.get("user_id") == self.user_id:
                    self.revoked = True
                    return
                if item.permission in self.permissions:
                    await self.ws.send_frame(item.data, WSMsgType.TEXT)
            if len(items) < PAGE and self.cursor >= self.feed.last_id:
                self.live = True
                return

    async def run(self) -> None:
        try:
            await self._run()
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception("event stream to %s failed", self.who.username)
            await self.ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"server error; reconnect")

    async def _run(self) -> None:
        await self.ws.send_str(json.dumps({"type": "hello", "user": self.who.username, "role": self.who.role,
                                           "after": self.cursor}))
        while not self.ws.closed:
            if self.revoked:
                await self.ws.close(code=ACCESS_REVOKED, message=b"account changed; sign in again")
                return
            left = self.auth.seconds_left(self.who)
            if left <= 0:
                await self.ws.close(code=TOKEN_EXPIRED, message=b"access token expired")
                return
            if not self.live:
                await self.catch_up()
                continue
            self.wake.clear()
            try:
                # asyncio.timeout, not wait_for: wait_for wraps each wait in a new Task
                async with asyncio.timeout(min(self.beat, max(0.01, left))):
                    await self.wake.wait()         # woken only to catch up or close, not per event
            except TimeoutError:
                if self.live:      # the fan-out has given it every event up to the feed's position
                    self.cursor = max(self.cursor, self.feed.last_id)
                    await self.ws.send_str(json.dumps({"type": "heartbeat", "last_event_id": self.cursor}))


@endpoint(None, query=StreamQuery, token_in_query=True)
async def websocket(request: web.Request, query: StreamQuery) -> web.StreamResponse:
    """The live event stream, filtered by the caller's role (see the module's docstring)."""
    who = request[PRINCIPAL]
    feed = request.app[FEED]
    cursor = query.after if query.after is not None else feed.last_id
    ws = web.WebSocketResponse(heartbeat=request.app[SETTINGS].api.heartbeat_seconds * 2, compress=False)
    await ws.prepare(request)
    stream = _Stream(request, ws, who, cursor)
    feed.subscribe(stream)           # not live yet: it first reads the table up to the feed's position
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    WS_CLIENTS.inc()
    task = asyncio.create_task(stream.run())
    try:
        async for msg in ws:         # reading keeps pings answered and notices the client leaving
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
            await task
        feed.unsubscribe(stream)
        sockets.discard(ws)
        WS_CLIENTS.dec()
    return ws
