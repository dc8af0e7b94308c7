"""How notifications are configured: a route's `{notify: {...}}` (checked at start-up, the plain list
kept), the `notify:` section, and users' contacts from the CLI and the API."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from neuropetrix.config.loader import ConfigError
from neuropetrix.config.settings import NotifySettings, Settings
from neuropetrix.engine.routes.rules import RouteError, compile_routes
from neuropetrix.engine.worker import build_worker
from neuropetrix.store.files import FileStore
from tests.api.conftest import PASSWORD, bearer, login
from tests.support.nodeproc import run_cli


def _notify_action(action) -> dict:
    route = {"name": "urgent-finding", "match": {"modality": "PT"}, "actions": [{"notify": action}]}
    [rule] = compile_routes(Settings.model_validate({"routes": [route]}))
    return rule.actions[0].params


def test_route_notify_forms():
    assert _notify_action(["physician"]) == {"recipients": ["physician"]}
    assert _notify_action({"roles": ["physician"], "users": ["ayse"], "priority": "urgent",
                           "channels": ["push", "sms"]}) == {
        "recipients": ["physician"], "users": ["ayse"], "priority": "urgent", "channels": ["push", "sms"]}
    assert _notify_action({"users": ["ayse"], "priority": "low"})["channels"] == ["email"]     # the default
    assert _notify_action({"roles": ["technologist"]})["priority"] == "high"


@pytest.mark.parametrize("action, message", [
    ({"roles": ["physician"], "priority": "asap"}, "priority is one of urgent, high, medium, low"),
    ({"roles": ["physician"], "channels": ["fax"]}, "unknown channel(s) fax"),
    ({"roles": ["surgeon"]}, "unknown role(s) surgeon"),
    ({"priority": "high"}, "name roles or users"),
    ({"roles": ["physician"], "when": "night"}, "unknown key(s) when"),
])
def test_bad_notify_actions_are_refused_naming_the_rule(action, message):
    with pytest.raises(RouteError) as exc:
        _notify_action(action)
    assert message in str(exc.value) and "urgent-finding" in str(exc.value)


def test_notify_section_is_checked():
    assert NotifySettings().patient_data == "none" and NotifySettings().email is None
    with pytest.raises(ValidationError):
        NotifySettings.model_validate({"email": {"smtp_host": "mail", "sender": "not an address"}})
    with pytest.raises(ValidationError):
        NotifySettings.model_validate({"patient_data": "everything"})
    with pytest.raises(ValidationError, match="not a time zone name"):
        NotifySettings.model_validate({"timezone": "Turkey/Ankara"})


def test_an_unreadable_smtp_password_file_stops_the_engine_with_a_clear_error(make_env, tmp_path):
    env = make_env()
    env.settings = env.settings.model_copy(update={"notify": NotifySettings.model_validate(
        {"email": {"smtp_host": "127.0.0.1", "sender": "petct@hastane.local",
                   "password_file": str(tmp_path / "missing.pw")}})})
    with pytest.raises(ConfigError, match="notify.email.password_file: cannot read"):
        build_worker(env.settings, env.sessions, FileStore(env.settings.node.storage_dir))


def test_users_add_and_contact_commands(tmp_path):
    config = tmp_path / "node.yaml"
    config.write_text(json.dumps({"node": {"data_dir": str(tmp_path / "var")}}))
    add = run_cli("users", "add", "ayse", "--role", "physician", "--email", "ayse@hastane.local", "--phone",
                  "+90 532 123 45 67", "--config", str(config), input=PASSWORD + "\n")
    assert add.returncode == 0, add.stderr
    shown = run_cli("users", "contact", "ayse", "--quiet", "22:00-07:30", "--channels", "push,email",
                    "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {"email": "ayse@hastane.local", "phone": "+905321234567",
                                        "quiet_from": "22:00", "quiet_until": "07:30",
                                        "channels": ["push", "email"], "email_failed": "", "phone_failed": ""}
    bad = run_cli("users", "contact", "ayse", "--phone", "call me", "--config", str(config))
    assert bad.returncode == 2 and "phone: digits with the country code" in bad.stderr
    half = run_cli("users", "contact", "ayse", "--quiet", "", "--config", str(config))
    assert half.returncode == 0, half.stderr


@pytest.mark.asyncio
async def test_my_contact_over_the_api(env, aiohttp_client):
    client = await aiohttp_client(env.app())
    headers = bearer(await login(client, "viewer"))
    r = await client.put("/api/me/contact", json={"email": "v@hastane.local", "channels": ["email"]}, headers=headers)
    assert r.status == 200, await r.text()
    assert (await (await client.get("/api/me/contact", headers=headers)).json())["channels"] == ["email"]
    r = await client.put("/api/me/contact", json={"quiet_from": "25:00", "quiet_until": "07:00"}, headers=headers)
    assert r.status == 400 and "HH:MM" in await r.text()
    r = await client.put("/api/me/contact", json={"quiet_from": "22:00"}, headers=headers)
    assert r.status == 400 and "give both" in await r.text()
