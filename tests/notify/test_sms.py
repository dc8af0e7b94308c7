"""SMS through a local HTTP gateway that checks what it gets: the configured URL, auth header and body
template (JSON or form), Turkish text intact, no patient name; 503 retried after Retry-After; a
number the gateway refuses marked and reported, not retried."""
from __future__ import annotations

import json
import urllib.parse

import pytest
from aiohttp import web
from sqlalchemy import select

from neuropetrix.store.jobs_models import Job
from neuropetrix.store.models import Event
from neuropetrix.store.notify_models import Contact
from tests.notify.conftest import notifications, notify_event, set_contact, until

pytestmark = pytest.mark.asyncio
UID = "1.2.826.0.1.3680043.10.18.2"
KEY = "gizli-anahtar-42"


class Gateway:
    """A provider's send endpoint: 401 without the key, 400 for numbers in `unknown`, `busy` 503s first."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.unknown: set[str] = set()
        self.busy = 0

    async def send(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Api-Key") != KEY:
            return web.json_response({"error": "bad key"}, status=401)
        raw = await request.text()
        if request.content_type == "application/json":
            body = json.loads(raw)
        else:
            body = {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}
        if self.busy:
            self.busy -= 1
            return web.json_response({"error": "busy"}, status=503, headers={"Retry-After": "0"})
        number = body.get("gsm") or body.get("to")
        if number in self.unknown:
            return web.json_response({"error": "invalid number"}, status=400)
        self.received.append({"content_type": request.content_type, "path": request.path, **body})
        return web.json_response({"status": "queued", "id": len(self.received)})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1/send", self.send)
        return app


async def _gateway(aiohttp_server) -> tuple[Gateway, str]:
    gateway = Gateway()
    server = await aiohttp_server(gateway.app())
    return gateway, str(server.make_url("/api/v1/send"))


def _sms_jobs(env) -> list[Job]:
    with env.sessions() as s:
        return list(s.scalars(select(Job).where(Job.kind == "sms").order_by(Job.id)))


async def test_urgent_sms_with_the_configured_template_header_and_retry_after(notify_env, aiohttp_server, running):
    gateway, url = await _gateway(aiohttp_server)
    gateway.busy = 1
    env = notify_env({"sms": {"url": url, "headers": {"X-Api-Key": KEY},
                              "body_template": '{"gsm": "{to}", "mesaj": "{text}", "originator": "PETCT"}'},
                      "study_link": "https://petct.local/#/s/"})
    env.add_instance(UID, patient_name="ŞAHİN^GÜLŞEN", study_date="20261201")
    set_contact(env, "physician", phone="+90 532 123 45 67")
    running(env)
    notify_event(env, UID, route="akciğer-nodülü", users=["physician"], priority="urgent", channels=["sms"])
    await until(lambda: len(gateway.received) == 1)
    [sms] = gateway.received
    assert sms["gsm"] == "+905321234567" and sms["originator"] == "PETCT"
    assert sms["mesaj"] == f"[URGENT] PET/CT study flagged https://petct.local/#/s/{UID}"
    assert "ŞAHİN" not in json.dumps(sms, ensure_ascii=False)
    await until(lambda: _sms_jobs(env)[0].state == "done")
    job = _sms_jobs(env)[0]
    assert job.attempts == 2 and job.destination == "sms" and job.result["gateway"].startswith('{"status": "queued"')
    assert notifications(env)[0].state == "sent"


async def test_form_encoded_gateway_and_patient_initials_when_allowed(notify_env, aiohttp_server, running):
    gateway, url = await _gateway(aiohttp_server)
    env = notify_env({"sms": {"url": url, "headers": {"X-Api-Key": KEY}, "body_template": "to={to}&text={text}",
                              "content_type": "application/x-www-form-urlencoded"}, "patient_data": "initials"})
    env.add_instance(UID, patient_name="ŞAHİN^GÜLŞEN")
    set_contact(env, "physician", phone="+905321234567")
    running(env)
    notify_event(env, UID, users=["physician"], priority="urgent", channels=["sms"])
    await until(lambda: len(gateway.received) == 1)
    [sms] = gateway.received
    assert sms["content_type"] == "application/x-www-form-urlencoded" and sms["to"] == "+905321234567"
    assert sms["text"] == f"[URGENT] PET/CT study flagged: G.Ş. study {UID}"


async def test_a_number_the_gateway_refuses_is_marked_and_not_retried(notify_env, aiohttp_server, running):
    gateway, url = await _gateway(aiohttp_server)
    gateway.unknown.add("+905550000000")
    env = notify_env({"sms": {"url": url, "headers": {"X-Api-Key": KEY}}})
    set_contact(env, "physician", phone="+905550000000")
    set_contact(env, "technologist", phone="+905321234567")
    running(env)
    notify_event(env, UID, roles=["physician", "technologist"], priority="urgent", channels=["sms"])
    await until(lambda: sorted(j.state for j in _sms_jobs(env)) == ["done", "failed"])
    failed = next(j for j in _sms_jobs(env) if j.state == "failed")
    assert failed.attempts == 1 and "400" in failed.last_error
    assert [m["to"] for m in gateway.received] == ["+905321234567"]
    with env.sessions() as s:
        assert "invalid number" in s.get(Contact, failed.params["user_id"]).phone_failed
        reported = s.scalars(select(Event.payload).where(Event.kind == "notification.undeliverable")).one()
        assert reported["channel"] == "sms"


async def test_wrong_credentials_are_permanent_for_the_message_not_the_number(notify_env, aiohttp_server, running):
    gateway, url = await _gateway(aiohttp_server)
    env = notify_env({"sms": {"url": url, "headers": {"X-Api-Key": "wrong"}}})
    set_contact(env, "physician", phone="+905321234567")
    running(env)
    notify_event(env, UID, users=["physician"], priority="urgent", channels=["sms"])
    await until(lambda: _sms_jobs(env) and _sms_jobs(env)[0].state == "failed")
    assert "401" in _sms_jobs(env)[0].last_error and _sms_jobs(env)[0].attempts == 1
    with env.sessions() as s:
        assert s.get(Contact, _sms_jobs(env)[0].params["user_id"]).phone_failed == ""
