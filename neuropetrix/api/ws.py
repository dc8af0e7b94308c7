"""`/api/ws`: the live event stream, filtered by the caller's role, with heartbeats and resume.

Protocol (server → client, JSON text frames):
  {"type": "hello", "user", "role", "after"}   first; then the backlog after `after`, then live events
  {"type": "event", "id", "kind", "study_uid", "created_at", "payload"}
  {"type": "heartbeat", "last_event_id"}   every heartbeat_seconds; the id also covers events this
                                           role may not see, so a client can resume past them
A client that reconnects with `?after=<last id seen>` gets every event after it, then the live stream;
the socket closes with code 4001 when the access token expires (reconnect with a fresh one), and with
4003 when the account is disabled, its role or password changed, or it logs out everywhere.
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
from neuropetrix.api.event_feed import FEED, PAGE, FeedItem, Subscription, read_after
from neuropetrix.api.node_config import SETTINGS
from neuropetrix.api.params import MAX_ID
from neuropetrix.api.users import ACCOUNT_REVOKED
from neuropetrix.metrics import WS_CLIENTS

TOKEN_EXPIRED = 4001
ACCESS_REVOKED = 4003
log = logging.getLogger("neuropetrix.api")
SOCKETS = web.AppKey("websockets", set[web.WebSocketResponse])     # open ones, closed when the node stops


class StreamQuery(BaseModel):
    token: str | None = Field(None, description="the access token, for browsers (they cannot set headers)")
    after: int | None = Field(None, ge=0, le=MAX_ID, description="the last event id seen: resume after it")


class _Stream:
    def __init__(self, app: web.Application, ws: web.WebSocketResponse, who: Principal, sub: Subscription,
                 cursor: int) -> None:
        self.ws, self.who, self.sub, self.cursor = ws, who, sub, cursor
        self.db, self.feed, self.auth = app[DATABASE], app[FEED], app[AUTH]
        self.beat = app[SETTINGS].api.heartbeat_seconds

    async def _send(self, items: list[FeedItem]) -> None:
        for item in items:
            if item.id <= self.cursor:
                continue             # already sent from the table while catching up
            self.cursor = item.id
            if item.kind == ACCOUNT_REVOKED and item.payload.get("user_id") == self.who.user_id:
                await self.ws.close(code=ACCESS_REVOKED, message=b"account changed; sign in again")
                return
            if item.permission in self.who.permissions:
                await self.ws.send_str(item.text)

    async def catch_up(self) -> None:
        """Everything after the cursor, from the table, page by page."""
        while not self.ws.closed:
            items = await self.db(read_after, self.cursor, PAGE)
            await self._send(items)
            if len(items) < PAGE:
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
        await self.catch_up()
        while not self.ws.closed:
            if self.auth.seconds_left(self.who) <= 0:
                await self.ws.close(code=TOKEN_EXPIRED, message=b"access token expired")
                return
            if self.sub.lagging:
                self.sub.queue = asyncio.Queue(maxsize=self.sub.queue.maxsize)
                self.sub.lagging = False
                await self.catch_up()
            try:
                # asyncio.timeout, not wait_for: wait_for wraps each get in a new Task, 500 clients × every event
                async with asyncio.timeout(min(self.beat, max(0.01, self.auth.seconds_left(self.who)))):
                    item = await self.sub.queue.get()
            except TimeoutError:
                self.cursor = max(self.cursor, self.feed.last_id)
                await self.ws.send_str(json.dumps({"type": "heartbeat", "last_event_id": self.cursor}))
                continue
            batch = [item]
            while not self.sub.queue.empty():
                batch.append(self.sub.queue.get_nowait())
            await self._send(batch)



@endpoint(None, query=StreamQuery, token_in_query=True)
async def websocket(request: web.Request, query: StreamQuery) -> web.StreamResponse:
    """The live event stream, filtered by the caller's role (see the module's docstring)."""
    who = request[PRINCIPAL]
    feed = request.app[FEED]
    cursor = query.after if query.after is not None else feed.last_id
    ws = web.WebSocketResponse(heartbeat=request.app[SETTINGS].api.heartbeat_seconds * 2, compress=False)
    await ws.prepare(request)
    sub = feed.subscribe()           # before reading the backlog, so nothing falls in between
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    WS_CLIENTS.inc()
    stream = asyncio.create_task(_Stream(request.app, ws, who, sub, cursor).run())
    try:
        async for msg in ws:         # reading keeps pings answered and notices the client leaving
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        stream.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
            await stream
        feed.unsubscribe(sub)
        sockets.discard(ws)
        WS_CLIENTS.dec()
    return ws
