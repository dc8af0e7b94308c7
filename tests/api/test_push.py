"""Push through pyfcm to a local fake FCM: who gets what with which priority, device registration,
an unregistered token dropped, a 5xx retried as a durable job with back-off until delivered or parked."""
from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from sqlalchemy import select

from neuropetrix.engine.worker import build_worker
from neuropetrix.store.accounts import Device
from neuropetrix.store.files import FileStore
from neuropetrix.store.jobs_models import Job
from tests.api.conftest import bearer, login
from tests.support.fakefcm import FakeFcm

pytestmark = pytest.mark.asyncio
UID = "1.2.826.0.1.3680043.10.4.1"


@pytest_asyncio.fixture
async def push_env(make_env, aiohttp_server, aiohttp_client, tmp_path):
    fake = FakeFcm()
    server = await aiohttp_server(fake.app())
    base = str(server.make_url("")).rstrip("/")
    env = make_env(push={"credentials_file": str(fake.credentials_file(tmp_path / "sa.json", base)),
                         "fcm_endpoint": f"{base}/v1/projects", "max_attempts": 3})
    client = await aiohttp_client(env.app())
    # push messages are engine jobs: the node's worker makes and sends them, the API only registers devices
    worker = build_worker(env.settings, env.sessions, FileStore(env.settings.node.storage_dir))
    worker.start()
    yield fake, env, client
    worker.stop(grace=5)


async def _device(client, role: str, token: str, platform: str = "android") -> dict:
    r = await client.post("/api/devices", json={"token": token, "platform": platform},
                          headers=bearer(await login(client, role)))
    assert r.status in (200, 201), await r.text()
    return await r.json()


def _jobs(env) -> list[Job]:
    with env.sessions() as s:
        return list(s.scalars(select(Job).where(Job.kind == "push").order_by(Job.id)))


async def _until(predicate, timeout: float = 30) -> None:
    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(0.05)
    await asyncio.wait_for(loop(), timeout)


async def test_results_go_to_physicians_and_failures_to_everyone_who_acts(push_env):
    fake, env, client = push_env
    await _device(client, "physician", "phone-physician")
    await _device(client, "technologist", "phone-tech", "ios")
    await _device(client, "viewer", "phone-viewer")
    env.add_event("analysis.failed", UID, job=7, parked=False, error="transient")   # retried: nobody told
    env.add_event("analysis.done", UID, job=7, lesions=3, suv_max=9.1)
    env.add_event("analysis.failed", UID, job=8, parked=True, error="no PET series")
    await fake.wait_for(lambda: len(fake.delivered) == 3)
    done, *failed = fake.delivered
    assert done["token"] == "phone-physician"
    assert done["notification"] == {"title": "PET/CT analysis done", "body": "Results are ready: 3 lesion(s)"}
    assert done["data"]["kind"] == "analysis.done" and done["data"]["study_uid"] == UID
    assert done["android"] == {"priority": "normal"}
    assert sorted(m["token"] for m in failed) == ["phone-physician", "phone-tech"]
    tech = next(m for m in failed if m["token"] == "phone-tech")
    assert tech["android"] == {"priority": "high"} and tech["apns"] == {"headers": {"apns-priority": "10"}}
    assert all("YILMAZ" not in str(m) for m in fake.delivered)     # no patient data crosses to Google
    await _until(lambda: [j.state for j in _jobs(env)] == ["done"] * 3)
    assert {j.destination for j in _jobs(env)} == {"fcm"}


async def test_registering_twice_updates_and_devices_are_per_user(push_env):
    _, _, client = push_env
    first = await _device(client, "physician", "same-token")
    again = await _device(client, "physician", "same-token", "web")
    assert again["id"] == first["id"] and again["platform"] == "web"
    r = await client.post("/api/devices", json={"token": "t", "platform": "symbian"},
                          headers=bearer(await login(client, "physician")))
    assert r.status == 400 and r.content_type == "application/json"
    viewer = bearer(await login(client, "viewer"))
    assert (await (await client.get("/api/devices", headers=viewer)).json())["items"] == []
    assert (await client.delete(f"/api/devices/{first['id']}", headers=viewer)).status == 404
    physician = bearer(await login(client, "physician"))
    assert (await client.delete(f"/api/devices/{first['id']}", headers=physician)).status == 204


async def test_an_unregistered_token_is_dropped(push_env):
    fake, env, client = push_env
    await _device(client, "physician", "stale-token")
    fake.answers["stale-token"] = [404]
    env.add_event("analysis.done", UID, job=1, lesions=0)
    await _until(lambda: [(j.state, j.result.get("device")) for j in _jobs(env)] == [("done", "dropped")])
    with env.sessions() as s:
        assert s.scalars(select(Device)).all() == []
    assert fake.attempts == {"stale-token": 1} and fake.delivered == []
    env.add_event("analysis.done", UID, job=2, lesions=0)       # the dropped device gets nothing more
    await _device(client, "physician", "new-token")
    env.add_event("analysis.done", UID, job=3, lesions=0)
    await fake.wait_for(lambda: len(fake.delivered) == 1)
    assert fake.delivered[0]["token"] == "new-token" and fake.attempts["stale-token"] == 1


async def test_a_5xx_is_retried_as_a_durable_job_until_delivered_or_parked(push_env):
    fake, env, client = push_env
    await _device(client, "physician", "flaky")
    await _device(client, "technologist", "down")
    fake.answers["flaky"] = [503, 500]
    fake.answers["down"] = [503, 503, 503, 503]
    env.add_event("analysis.failed", UID, job=5, parked=True, error="x")
    await _until(lambda: sorted(j.state for j in _jobs(env)) == ["done", "failed"])
    by_token = {j.params["token"]: j for j in _jobs(env)}
    assert (by_token["flaky"].state, by_token["flaky"].attempts) == ("done", 3)
    assert (by_token["down"].state, by_token["down"].attempts) == ("failed", 3)     # push.max_attempts: 3
    assert "503" in by_token["down"].last_error
    assert fake.attempts == {"flaky": 3, "down": 3}
    with env.sessions() as s:
        assert len(s.scalars(select(Device)).all()) == 2     # a server error never drops a device


async def test_a_parked_push_is_sent_when_an_operator_retries_it(push_env):
    fake, env, client = push_env
    await _device(client, "physician", "phone")
    fake.answers["phone"] = [503, 503, 503]
    env.add_event("analysis.done", UID, job=9, lesions=1)
    await _until(lambda: [j.state for j in _jobs(env)] == ["failed"])
    r = await client.post(f"/api/jobs/{_jobs(env)[0].id}/retry", headers=bearer(await login(client, "admin")))
    assert r.status == 200
    await fake.wait_for(lambda: len(fake.delivered) == 1)
    await _until(lambda: [j.state for j in _jobs(env)] == ["done"])
    assert fake.attempts == {"phone": 4}
