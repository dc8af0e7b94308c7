"""Bad input never becomes a 500 (issue 14, item 8): oversized numbers in tokens, paths and cursors,
deeply nested JSON, a body in a charset nobody knows. Each answers 400/401/404 with a message and
leaves no traceback in the log."""
from __future__ import annotations

import logging

import pytest

from neuropetrix.api.tokens import TokenSigner, load_signing_key
from tests.api.conftest import bearer, login

pytestmark = [pytest.mark.asyncio, pytest.mark.faults]
HUGE = "9" * 23


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logged = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not logged, [r.getMessage() for r in logged]


async def _json_error(r, status: int) -> str:
    assert r.status == status, (r.status, await r.text())
    body = await r.json()
    assert body["status"] == status and body["message"]
    return body["message"]


async def test_a_token_whose_subject_is_a_30_digit_number_is_401(client, env, caplog):
    caplog.set_level(logging.INFO)
    token = TokenSigner(load_signing_key(None, env.data_dir), 900).issue(10**30, "admin", "admin", 0)
    message = await _json_error(await client.get("/api/me", headers=bearer(token)), 401)
    assert message.startswith("invalid access token")
    _no_tracebacks(caplog)


async def test_ids_too_large_for_the_database_are_404(client, caplog):
    caplog.set_level(logging.INFO)
    admin = bearer(await login(client, "admin"))
    assert "no job" in await _json_error(await client.post(f"/api/jobs/{HUGE}/retry", headers=admin), 404)
    assert "no device" in await _json_error(await client.delete(f"/api/devices/{HUGE}", headers=admin), 404)
    with pytest.raises(Exception) as refused:     # the WebSocket handshake answers 400
        await client.ws_connect("/api/ws", params={"after": HUGE}, headers=admin)
    assert getattr(refused.value, "status", None) == 400
    _no_tracebacks(caplog)


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000],
                         ids=["100k arrays", "50k objects"])
async def test_deeply_nested_json_on_login_is_400(client, caplog, body):
    caplog.set_level(logging.INFO)
    r = await client.post("/api/auth/login", data=body, headers={"Content-Type": "application/json"})
    assert "nested" in await _json_error(r, 400)
    _no_tracebacks(caplog)


async def test_a_body_in_an_unknown_charset_is_400(client, caplog):
    caplog.set_level(logging.INFO)
    r = await client.post("/api/auth/login", data=b'{"username": "admin", "password": "x"}',
                          headers={"Content-Type": "application/json; charset=x-no-such-charset"})
    assert "charset" in await _json_error(r, 400)
    _no_tracebacks(caplog)
