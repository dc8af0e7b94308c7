"""Role leaks and revocation (issue 14, item 9): a study page shows only the events the caller's role
may see, and disabling an account, changing its role or its password closes its open WebSockets at
once, whether done through the API or by the `users` command (another process)."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest

from neuropetrix.api import users
from neuropetrix.api.ws import ACCESS_REVOKED
from tests.api.conftest import bearer, login

pytestmark = [pytest.mark.asyncio, pytest.mark.faults]
UID = "1.2.826.0.1.3680043.10.4.1"


async def test_a_viewers_study_page_shows_no_analysis_or_delivery_events(env, aiohttp_client):
    env.add_instance(UID)
    env.add_event("analysis.done", UID, lesions=3)
    env.add_event("delivery.failed", UID, destination="dicom:pacs", error="refused")
    env.add_event("notification", UID, route="r", recipients=["physician"])
    env.add_event("job.retried", UID, job=1)
    client = await aiohttp_client(env.app())
    kinds = {}
    for role in ("viewer", "technologist", "physician", "admin"):
        r = await client.get(f"/api/studies/{UID}", headers=bearer(await login(client, role)))
        assert r.status == 200
        kinds[role] = [e["kind"] for e in (await r.json())["events"]]
    assert kinds["viewer"] == ["study.received"]
    assert kinds["physician"] == ["study.received", "analysis.done", "delivery.failed", "notification"]
    assert kinds["technologist"] == ["study.received", "analysis.done", "delivery.failed", "notification",
                                     "job.retried"]
    assert kinds["admin"] == kinds["technologist"]


async def _closed_with(ws: aiohttp.ClientWebSocketResponse) -> int:
    """The close code, reading past any hello or heartbeat; fails if it does not come within 5 s."""
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.PING):
                assert msg.type == aiohttp.WSMsgType.CLOSE, msg
                return msg.data


@pytest.mark.parametrize("change", [{"disabled": True}, {"role": "viewer"}])
async def test_an_account_changed_through_the_api_loses_its_sockets_at_once(client, change):
    admin = bearer(await login(client, "admin"))
    tech = bearer(await login(client, "technologist"))
    doomed = [await client.ws_connect("/api/ws", headers=tech, autoclose=False, autoping=False) for _ in range(2)]
    bystander = await client.ws_connect("/api/ws", headers=bearer(await login(client, "physician")))
    r = await client.patch("/api/users/technologist", json=change, headers=admin)
    assert r.status == 200
    for ws in doomed:
        assert await _closed_with(ws) == ACCESS_REVOKED
    assert (await bystander.receive_json(timeout=5))["type"] == "hello"
    assert not bystander.closed
    await bystander.close()


async def test_a_password_changed_by_the_users_command_closes_the_sockets(client, env):
    ws = await client.ws_connect("/api/ws", headers=bearer(await login(client, "physician")), autoclose=False,
                                 autoping=False)
    with env.sessions.begin() as s:       # what `neuropetrix users passwd physician` does, in its process
        users.set_password(s, "physician", "a brand new password")
    assert await _closed_with(ws) == ACCESS_REVOKED
