"""The push channel of route notifications through pyfcm to the local fake FCM: the plain
`{notify: [physician]}` keeps today's meaning (a high-priority push to the role's devices), a named
user is pushed at the route's priority, and a delivered push marks the notification sent."""
from __future__ import annotations

import pytest
import pytest_asyncio

from tests.api.conftest import bearer, login
from tests.notify.conftest import notifications, notify_event, until
from tests.support.fakefcm import FakeFcm

pytestmark = pytest.mark.asyncio
UID = "1.2.826.0.1.3680043.10.18.4"


@pytest_asyncio.fixture
async def fcm_env(notify_env, aiohttp_server, aiohttp_client, tmp_path, running):
    fake = FakeFcm()
    server = await aiohttp_server(fake.app())
    base = str(server.make_url("")).rstrip("/")
    env = notify_env({}, push={"credentials_file": str(fake.credentials_file(tmp_path / "sa.json", base)),
                               "fcm_endpoint": f"{base}/v1/projects", "max_attempts": 3})
    client = await aiohttp_client(env.app())
    for role, token in (("physician", "phone-physician"), ("technologist", "phone-tech")):
        r = await client.post("/api/devices", json={"token": token, "platform": "android"},
                              headers=bearer(await login(client, role)))
        assert r.status == 201
    running(env)
    return fake, env


async def test_plain_notify_list_is_a_high_priority_push_to_the_role(fcm_env):
    fake, env = fcm_env
    notify_event(env, UID, route="flagged")                        # {notify: [physician]}
    await fake.wait_for(lambda: len(fake.delivered) == 1)
    [m] = fake.delivered
    assert m["token"] == "phone-physician" and m["android"] == {"priority": "high"}
    assert m["notification"] == {"title": "PET/CT study flagged (high)", "body": "Rule flagged asks you to look"}
    assert m["data"]["kind"] == "notification" and m["data"]["study_uid"] == UID
    await until(lambda: [n.state for n in notifications(env)] == ["sent"])


async def test_named_user_at_low_priority_is_a_normal_push(fcm_env):
    fake, env = fcm_env
    notify_event(env, UID, users=["technologist"], priority="low", channels=["push"])
    await fake.wait_for(lambda: len(fake.delivered) == 1)
    assert fake.delivered[0]["token"] == "phone-tech" and fake.delivered[0]["android"] == {"priority": "normal"}
