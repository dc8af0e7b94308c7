"""Browser hardening and lock-out (issue 14, item 12): every response of the dashboard and the API
carries Content-Security-Policy, X-Frame-Options and X-Content-Type-Options; failed logins are
throttled per account and address together, so someone who knows a user name cannot lock that user
out from another machine."""
from __future__ import annotations

import aiohttp
import pytest

from tests.api.conftest import PASSWORD, bearer, login

pytestmark = [pytest.mark.asyncio, pytest.mark.faults]


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/api/me", "/api/studies", "/healthz", "/api/nothing"])
async def test_every_response_carries_the_security_headers(client, path):
    r = await client.get(path, headers=bearer(await login(client, "viewer")))
    assert r.status in (200, 404)
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
    policy = r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy and "unsafe" not in policy


async def test_guessing_from_one_address_does_not_lock_out_the_user_elsewhere(client):
    for _ in range(3):      # login_failures_per_account: 3 in the test settings; the attacker is 127.0.0.1
        r = await client.post("/api/auth/login", json={"username": "physician", "password": "guess guess"})
        assert r.status == 401
    r = await client.post("/api/auth/login", json={"username": "physician", "password": PASSWORD})
    assert r.status == 429                        # the guesser's address is held back …
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as physician:   # … the physician's is not
        async with physician.post(client.make_url("/api/auth/login"),
                                  json={"username": "physician", "password": PASSWORD}) as r:
            assert r.status == 200, await r.text()
