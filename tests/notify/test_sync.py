"""GET /api/sync: a client offline across 50 changes catches up page by page, in order, missing none
of what its role may see and seeing nothing else; the cursor it ends on resumes the WebSocket."""
from __future__ import annotations

import asyncio
import itertools

import pytest
from sqlalchemy import select

from neuropetrix.api.permissions import allows, event_permission
from neuropetrix.store.models import Event
from tests.api.conftest import bearer, login

pytestmark = pytest.mark.asyncio
KINDS = ("study.received", "analysis.done", "review.signed", "delivery.done", "notification", "order.changed",
         "job.retried", "notification.acked")


async def _catch_up(client, headers, cursor: int, limit: int) -> tuple[list[dict], int, int]:
    seen, requests = [], 0
    while True:
        r = await client.get(f"/api/sync?since={cursor}&limit={limit}", headers=headers)
        assert r.status == 200, await r.text()
        page = await r.json()
        requests += 1
        seen += page["items"]
        assert page["next"] >= cursor
        cursor = page["next"]
        if not page["more"]:
            return seen, cursor, requests


@pytest.mark.parametrize("role", ["physician", "viewer", "admin"])
async def test_offline_across_50_changes_catches_up_in_order_missing_none(env, aiohttp_client, role):
    client = await aiohttp_client(env.app())
    headers = bearer(await login(client, role))
    first = await (await client.get("/api/sync", headers=headers)).json()
    cursor = first["next"]
    # … the phone goes offline; 50 things happen
    kinds = itertools.cycle(KINDS)
    made = [env.add_event(next(kinds), f"1.2.3.{i % 7}", n=i) for i in range(50)]
    seen, end, requests = await _catch_up(client, headers, cursor, limit=8)
    with env.sessions() as s:
        expected = [(e.id, e.kind, e.payload["n"]) for e in s.scalars(select(Event).where(Event.id.in_(made))
                                                                       .order_by(Event.id))
                    if allows(role, event_permission(e.kind))]
    assert [(i["id"], i["kind"], i["payload"]["n"]) for i in seen] == expected
    assert len(expected) < 50 or role == "admin"
    assert end == made[-1] and requests == 7                       # ceil(50 / 8) pages
    nothing = await (await client.get(f"/api/sync?since={end}", headers=headers)).json()
    assert nothing == {"items": [], "next": end, "more": False}
    async with client.ws_connect(f"/api/ws?after={end}", headers=headers) as ws:   # the stream resumes there
        env.add_event("study.received", "1.2.3.99", n=50)
        async with asyncio.timeout(10):                             # heartbeats alone never end it
            msg = await ws.receive_json()
            while msg.get("type") != "event":
                msg = await ws.receive_json()
        assert msg["id"] == end + 1 and msg["kind"] == "study.received"


async def test_sync_needs_a_login_and_a_number(env, aiohttp_client):
    client = await aiohttp_client(env.app())
    assert (await client.get("/api/sync?since=0")).status == 401
    r = await client.get("/api/sync?since=yesterday", headers=bearer(await login(client, "viewer")))
    assert r.status == 400 and "since" in await r.text()
