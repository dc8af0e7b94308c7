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
import time

from aiohttp import WSCloseCode, WSMsgType, web

from neuropetrix.api.auth import AuthError, Principal, auth_error_response, authenticate
from neuropetrix.api.context import CTX, ApiContext
from neuropetrix.api.errors import json_error
from neuropetrix.api.events import PAGE, FeedItem, Subscription, read_after
from neuropetrix.api.params import MAX_ID
from neuropetrix.api.users import ACCOUNT_REVOKED
from neuropetrix.metrics import WS_CLIENTS

TOKEN_EXPIRED = 4001
ACCESS_REVOKED = 4003
log = logging.getLogger("neuropetrix.api")


class _Stream:
    def __init__(self, ctx: ApiContext, ws: web.WebSocketResponse, who: Principal, sub: Subscription,
                 cursor: int) -> None:
        self.ctx, self.ws, self.who, self.sub, self.cursor = ctx, ws, who, sub, cursor

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
            items = await self.ctx.db(read_after, self.cursor, PAGE)
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
        beat = self.ctx.settings.api.heartbeat_seconds
        while not self.ws.closed:
            if time.time() >= self.who.expires_at:
                await self.ws.close(code=TOKEN_EXPIRED, message=b"access token expired")
                return
            if self.sub.lagging:
                self.sub.queue = asyncio.Queue(maxsize=self.sub.queue.maxsize)
                self.sub.lagging = False
                await self.catch_up()
            try:
                item = await asyncio.wait_for(self.sub.queue.get(), timeout=min(beat, self._ttl()))
            except TimeoutError:
                self.cursor = max(self.cursor, self.ctx.feed.last_id)
                await self.ws.send_str(json.dumps({"type": "heartbeat", "last_event_id": self.cursor}))
                continue
            batch = [item]
            while not self.sub.queue.empty():
                batch.append(self.sub.queue.get_nowait())
            await self._send(batch)

    def _ttl(self) -> float:
        return max(0.01, self.who.expires_at - time.time())


async def websocket(request: web.Request) -> web.StreamResponse:
    """The live event stream (see the module's docstring for the protocol)."""
    ctx = request.app[CTX]
    try:
        who = await authenticate(request, allow_query=True)
    except AuthError as exc:
        return auth_error_response(exc)
    after = request.query.get("after")
    try:
        cursor = int(after) if after is not None else ctx.feed.last_id
    except ValueError:
        cursor = -1
    if not 0 <= cursor <= MAX_ID:
        return json_error(400, "after: an event id (integer)")
    ws = web.WebSocketResponse(heartbeat=ctx.settings.api.heartbeat_seconds * 2, compress=False)
    await ws.prepare(request)
    sub = ctx.feed.subscribe()       # before reading the backlog, so nothing falls in between
    ctx.websockets.add(ws)
    WS_CLIENTS.inc()
    stream = asyncio.create_task(_Stream(ctx, ws, who, sub, cursor).run())
    try:
        async for msg in ws:         # reading keeps pings answered and notices the client leaving
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        stream.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
            await stream
        ctx.feed.unsubscribe(sub)
        ctx.websockets.discard(ws)
        WS_CLIENTS.dec()
    return ws


websocket.permission = None   # any signed-in user (events are then filtered by role); read by openapi.py
