"""/api/ws: authentication, live events filtered by role, heartbeats, resume after a reconnect without
a gap, events written by another process, and closing when the access token expires."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import aiohttp
import pytest

from neuropetrix.api import event_feed
from neuropetrix.api.event_feed import _CommitWatch, last_event_id
from neuropetrix.api.tokens import TokenSigner, load_signing_key
from neuropetrix.api.ws import TOKEN_EXPIRED
from neuropetrix.store.db import utcnow
from neuropetrix.store.models import Event
from tests.api.conftest import bearer, login

pytestmark = pytest.mark.asyncio
UID = "1.2.826.0.1.3680043.10.3.1"


async def _next(ws, kind: str = "event") -> dict:
    """The next message of `kind` within 10 s, skipping others (heartbeats, which alone would keep a
    wait for a lost event going for ever)."""
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive_json()
            if msg["type"] == kind:
                return msg


async def test_refused_without_a_valid_token(client):
    for kwargs in ({}, {"headers": {"Authorization": "Bearer nonsense"}}, {"params": {"token": "x.y.z"}}):
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await client.ws_connect("/api/ws", **kwargs)
        assert err.value.status == 401


async def test_live_events_by_header_or_query_token(client, env):
    tokens = await login(client, "technologist")
    by_header = await client.ws_connect("/api/ws", headers=bearer(tokens))
    by_query = await client.ws_connect("/api/ws", params={"token": tokens["access_token"]})
    for ws in (by_header, by_query):
        hello = await _next(ws, "hello")
        assert hello["user"] == "technologist" and hello["role"] == "technologist"
    env.add_instance(UID)
    for ws in (by_header, by_query):
        event = await _next(ws)
        assert event["kind"] == "study.received" and event["study_uid"] == UID
        assert event["payload"]["calling_ae"] == "STORESCU" and event["created_at"].endswith("Z")
        await ws.close()


async def test_events_are_filtered_by_role_and_heartbeats_carry_the_position(client, env):
    viewer = await client.ws_connect("/api/ws", headers=bearer(await login(client, "viewer")))
    tech = await client.ws_connect("/api/ws", headers=bearer(await login(client, "technologist")))
    await _next(viewer, "hello")
    await _next(tech, "hello")
    done = env.add_event("analysis.done", UID, lesions=2)
    complete = env.add_event("study.complete", UID)
    assert [(await _next(tech))["id"] for _ in range(2)] == [done, complete]
    assert (await _next(viewer))["id"] == complete           # the analysis event is not the viewer's
    beat = await _next(viewer, "heartbeat")
    assert beat["last_event_id"] >= complete


async def test_resume_after_reconnect_misses_nothing(client, env):
    tokens = await login(client, "admin")
    ws = await client.ws_connect("/api/ws", headers=bearer(tokens))
    await _next(ws, "hello")
    first = env.add_event("study.received", UID)
    assert (await _next(ws))["id"] == first
    await ws.close()
    missed = [env.add_event("delivery.failed", UID, destination="dicom:pacs", n=i) for i in range(3)]
    ws = await client.ws_connect("/api/ws", params={"after": str(first)}, headers=bearer(tokens))
    assert (await _next(ws, "hello"))["after"] == first
    assert [(await _next(ws))["id"] for _ in missed] == missed
    live = env.add_event("study.complete", UID)
    assert (await _next(ws))["id"] == live
    await ws.close()


async def test_an_event_just_after_start_reaches_a_client_that_connected_first(env, aiohttp_client,
                                                                             monkeypatch):
    """The feed's first read of the log's end may be slow (a busy database); a client served before it
    went live at position 0, and the event committed meanwhile reached no one."""
    committed = threading.Event()

    def slow_end(s):                  # answers once the event is in, or after 2 s if it is served first
        committed.wait(2)
        return last_event_id(s)
    monkeypatch.setattr(event_feed, "last_event_id", slow_end)
    client = await aiohttp_client(env.app())
    ws = await client.ws_connect("/api/ws", headers=bearer(await login(client, "admin")))
    await _next(ws, "hello")
    first = env.add_event("study.received", UID)
    committed.set()
    assert (await _next(ws))["id"] == first
    await ws.close()


async def test_a_long_backlog_arrives_whole_and_in_order(client, env):
    with env.sessions.begin() as s:
        s.add_all([Event(kind="study.received", study_uid=UID, created_at=utcnow(), payload={"n": i})
                   for i in range(1200)])
    ws = await client.ws_connect("/api/ws", params={"after": "0"}, headers=bearer(await login(client, "viewer")))
    got = [(await _next(ws))["payload"]["n"] for _ in range(1200)]
    assert got == list(range(1200))
    await ws.close()


async def test_events_written_by_another_process_arrive(client, env):
    ws = await client.ws_connect("/api/ws", headers=bearer(await login(client, "admin")))
    await _next(ws, "hello")
    script = ("import sys; from neuropetrix.store.db import open_database, utcnow; "
              "from neuropetrix.store.models import Event; _, S = open_database(sys.argv[1]); "
              "s = S.begin().__enter__(); s.add(Event(kind='analysis.failed', study_uid=sys.argv[2], "
              "created_at=utcnow(), payload={'by': 'worker'})); s.commit()")
    subprocess.run([sys.executable, "-c", script, env.settings.node.db_url, UID], check=True, timeout=60)
    event = await _next(ws)
    assert event["kind"] == "analysis.failed" and event["payload"] == {"by": "worker"}
    await ws.close()


async def test_the_socket_closes_when_the_access_token_expires(client, env):
    signer = TokenSigner(load_signing_key(None, env.data_dir), 30)
    short = signer.issue(1, "admin", "admin", 0, now=env.clock())
    ws = await client.ws_connect("/api/ws", headers=bearer(short))
    await _next(ws, "hello")
    await _next(ws, "heartbeat")                     # still open while the token is valid
    env.clock.advance(30)
    msg = await ws.receive(timeout=10)
    while msg.type == aiohttp.WSMsgType.TEXT:       # heartbeats until then
        msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == TOKEN_EXPIRED


async def test_commits_of_events_in_this_process_wake_the_feed(env):
    woken = []
    watch = _CommitWatch(lambda: woken.append(1))
    env.add_instance(UID)                          # a new study: its study.received event
    env.add_instance(UID)                          # one more instance: no event, no wake
    env.add_event("analysis.done", UID)
    watch.remove()
    env.add_event("analysis.done", UID)            # after remove(): not watched
    assert woken == [1, 1]


async def test_a_slow_client_holds_up_no_one_and_catches_up_from_the_table(client, env, caplog):
    """A client that stops reading fills its socket: the fan-out leaves it (a log line) and goes on to
    the others; when it reads again it gets every event, in order, from the event log."""
    slow = await client.ws_connect("/api/ws", headers=bearer(await login(client, "viewer")))
    fast = await client.ws_connect("/api/ws", headers=bearer(await login(client, "technologist")))
    await _next(slow, "hello")
    await _next(fast, "hello")
    bulk = "x" * 20_000                    # 400 × 20 kB: more than the loopback socket buffers hold
    with env.sessions.begin() as s:
        s.add_all([Event(kind="study.received", study_uid=UID, created_at=utcnow(), payload={"n": i, "bulk": bulk})
                   for i in range(400)])
    assert [(await _next(fast))["payload"]["n"] for _ in range(400)] == list(range(400))   # slow has read nothing
    assert any("fell behind" in r.getMessage() for r in caplog.records)
    live = env.add_event("study.complete", UID)
    assert (await _next(fast))["id"] == live
    got = [await _next(slow) for _ in range(401)]
    assert [m["payload"].get("n") for m in got[:400]] == list(range(400)) and got[400]["id"] == live
    await slow.close()
    await fast.close()
