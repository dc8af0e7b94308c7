"""Recipients, priorities and escalation with the engine's injectable clock: an urgent notification
not acknowledged within notify.escalate_after goes to the next user on call (recorded), and does not
when acknowledged through POST /api/notifications/{id}/ack; quiet hours and preferences narrow the
channels of all but urgent ones; the plain `{notify: [role]}` stays a high-priority push."""
from __future__ import annotations

from datetime import datetime

import pytest
import pytest_asyncio
from sqlalchemy import select

from neuropetrix.engine.notifications import NotificationPlanner
from neuropetrix.store.accounts import User
from neuropetrix.store.jobs_models import Job
from neuropetrix.store.models import Event
from tests.api.conftest import bearer, login
from tests.engine.conftest import ManualClock
from tests.notify.conftest import notifications, notify_event, set_contact

pytestmark = pytest.mark.asyncio
UID = "1.2.826.0.1.3680043.10.18.3"
EMAIL = {"smtp_host": "127.0.0.1", "smtp_port": 2525, "sender": "petct@hastane.local"}


@pytest_asyncio.fixture
async def oncall(notify_env, aiohttp_client):
    env = notify_env({"email": EMAIL, "escalate_after": 600, "oncall": ["physician", "technologist", "admin"]})
    for name in ("physician", "technologist", "admin"):
        set_contact(env, name, email=f"{name}@hastane.local")
    clock = ManualClock()
    planner = NotificationPlanner(env.sessions, env.settings, push_on=False, clock=clock)
    planner.run_once()                          # the cursor: events from now on
    return env, clock, planner, await aiohttp_client(env.app())


def _users(env) -> dict[int, str]:
    with env.sessions() as s:
        return dict(s.execute(select(User.id, User.username)).all())


def _emails(env) -> list[str]:
    with env.sessions() as s:
        return [j.params["to"] for j in s.scalars(select(Job).where(Job.kind == "email").order_by(Job.id))]


async def test_unacknowledged_urgent_goes_to_the_next_on_call_and_is_recorded(oncall):
    env, clock, planner, _ = oncall
    notify_event(env, UID, users=["physician"], priority="urgent", channels=["email"])
    assert planner.run_once() == 1
    clock.advance(599)
    assert planner.run_once() == 0
    assert [n.state for n in notifications(env)] == ["queued"]
    clock.advance(2)
    assert planner.run_once() == 1
    first, second = notifications(env)
    names = _users(env)
    assert (first.state, names[second.user_id], second.escalated_from) == ("escalated", "technologist", first.id)
    assert _emails(env) == ["physician@hastane.local", "technologist@hastane.local"]
    with env.sessions() as s:
        [escalated] = s.scalars(select(Event).where(Event.kind == "notification.escalated")).all()
    assert escalated.payload == {"notification": first.id, "from": "physician", "to": "technologist",
                                 "to_notification": second.id}
    clock.advance(601)                           # the technologist does not answer either
    planner.run_once()
    assert [names[n.user_id] for n in notifications(env)] == ["physician", "technologist", "admin"]
    clock.advance(601)                           # nobody left: recorded, nobody told twice
    assert planner.run_once() == 0
    assert len(notifications(env)) == 3 and notifications(env)[2].state == "escalated"


async def test_acknowledged_urgent_does_not_escalate(oncall):
    env, clock, planner, client = oncall
    notify_event(env, UID, users=["physician"], priority="urgent", channels=["email"])
    planner.run_once()
    [n] = notifications(env)
    other = await client.post(f"/api/notifications/{n.id}/ack", headers=bearer(await login(client, "technologist")))
    assert other.status == 404                   # not theirs
    r = await client.post(f"/api/notifications/{n.id}/ack", headers=bearer(await login(client, "physician")))
    assert r.status == 200, await r.text()
    shown = await r.json()
    assert (shown["state"], shown["acked_by"], shown["escalate_at"]) == ("acknowledged", "physician", None)
    clock.advance(3600)
    assert planner.run_once() == 0
    assert [n.state for n in notifications(env)] == ["acknowledged"]
    with env.sessions() as s:
        assert s.scalars(select(Event.kind).where(Event.kind.like("notification.%"))).all() == ["notification.acked"]
    mine = await client.get("/api/notifications", headers=bearer(await login(client, "physician")))
    assert [i["state"] for i in (await mine.json())["items"]] == ["acknowledged"]


async def test_the_on_call_list_set_from_the_dashboard_replaces_the_configured_one(oncall):
    env, clock, planner, client = oncall
    r = await client.put("/api/oncall", json={"users": ["physician", "admin", "technologist"]},
                         headers=bearer(await login(client, "viewer")))
    assert r.status == 403
    admin = bearer(await login(client, "admin"))
    r = await client.put("/api/oncall", json={"users": ["physician", "nobody"]}, headers=admin)
    assert r.status == 400 and "nobody" in await r.text()
    r = await client.put("/api/oncall", json={"users": ["physician", "admin", "technologist"]}, headers=admin)
    assert (await r.json()) == {"users": ["physician", "admin", "technologist"],
                                "configured": ["physician", "technologist", "admin"]}
    notify_event(env, UID, users=["physician"], priority="urgent", channels=["email"])
    planner.run_once()
    clock.advance(601)
    planner.run_once()
    names = _users(env)
    assert [names[n.user_id] for n in notifications(env)] == ["physician", "admin"]
    r = await client.put("/api/oncall", json={"users": []}, headers=admin)       # back to the configured list
    assert (await r.json())["users"] == ["physician", "technologist", "admin"]


async def test_quiet_hours_and_preferences_narrow_all_but_urgent(notify_env):
    env = notify_env({"email": EMAIL, "sms": {"url": "http://127.0.0.1:9/send"}, "timezone": "Europe/Istanbul"})
    set_contact(env, "physician", email="p@hastane.local", phone="+905321234567", quiet_from="22:00",
                quiet_until="07:00")
    set_contact(env, "technologist", email="t@hastane.local", phone="+905321234568", channels=["sms"])
    clock = ManualClock()
    clock._now = datetime(2026, 12, 1, 21, 30)        # 00:30 in Istanbul (UTC+3): the physician's quiet hours
    planner = NotificationPlanner(env.sessions, env.settings, push_on=False, clock=clock)
    planner.run_once()
    notify_event(env, UID, users=["physician", "technologist"], priority="high", channels=["email", "sms"])
    notify_event(env, UID, users=["physician", "technologist"], priority="urgent", channels=["email", "sms"])
    planner.run_once()
    names = _users(env)
    assert [(n.priority, names[n.user_id], n.channels) for n in notifications(env)] == [
        ("high", "physician", ["email"]),              # quiet: no SMS in the night
        ("high", "technologist", ["sms"]),             # prefers SMS only
        ("urgent", "physician", ["email", "sms"]),     # urgent overrides both
        ("urgent", "technologist", ["email", "sms"])]


async def test_roles_are_resolved_to_their_enabled_users(notify_env):
    env = notify_env({"email": EMAIL})
    for name in ("physician", "viewer", "admin"):
        set_contact(env, name, email=f"{name}@hastane.local")
    with env.sessions.begin() as s:
        s.scalars(select(User).where(User.username == "viewer")).one().disabled = True
    planner = NotificationPlanner(env.sessions, env.settings, push_on=False)
    planner.run_once()
    notify_event(env, UID, roles=["physician", "viewer"], users=["admin"], priority="low")
    planner.run_once()
    assert sorted(_emails(env)) == ["admin@hastane.local", "physician@hastane.local"]
