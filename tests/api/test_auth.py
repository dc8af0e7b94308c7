"""Login, tokens and their refusal: expired, tampered, alg:none, foreign key, revoked; refresh rotation
with reuse detection; failed-login limits per account and per address; the signing key file."""
from __future__ import annotations

import asyncio
import base64
import json

import pytest

from neuropetrix.api import users
from neuropetrix.api.auth import Auth
from neuropetrix.api.tokens import TokenSigner, load_signing_key
from tests.api.conftest import PASSWORD, bearer, login

pytestmark = pytest.mark.asyncio


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


async def test_login_gives_tokens_that_open_the_api(client):
    tokens = await login(client, "physician")
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 900
    r = await client.get("/api/me", headers=bearer(tokens))
    assert r.status == 200
    assert (await r.json())["role"] == "physician"


@pytest.mark.parametrize("body", [{"username": "physician", "password": "wrong password"},
                                  {"username": "nobody", "password": PASSWORD}])
async def test_bad_credentials_are_one_json_401(client, body):
    r = await client.post("/api/auth/login", json=body)
    assert r.status == 401
    assert await r.json() == {"status": 401, "message": "invalid user name or password"}


async def test_malformed_login_is_400(client):
    r = await client.post("/api/auth/login", data=b"not json")
    assert r.status == 400 and "JSON" in (await r.json())["message"]
    r = await client.post("/api/auth/login", json={"username": "admin"})
    assert r.status == 400 and (await r.json())["message"].startswith("password")


async def test_missing_expired_tampered_none_and_foreign_tokens_are_refused(client, env):
    tokens = await login(client, "admin")
    good = tokens["access_token"]
    head, payload, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    key = load_signing_key(None, env.data_dir)
    expired = TokenSigner(key, 60).issue(claims["sub"] and int(claims["sub"]), "admin", "admin", 0,
                                         now=env.clock() - 3600)
    tampered = ".".join([head, _b64({**claims, "role": "admin", "sub": "2"}), sig])
    alg_none = ".".join([_b64({"alg": "none", "typ": "JWT"}), _b64(claims), ""])
    foreign = TokenSigner("x" * 40, 900).issue(int(claims["sub"]), "admin", "admin", 0)
    refresh_as_access = tokens["refresh_token"]
    assert (await client.get("/api/users", headers=bearer(good))).status == 200
    assert (await client.get("/api/users")).status == 401
    for bad in (expired, tampered, alg_none, foreign, refresh_as_access, "garbage"):
        r = await client.get("/api/users", headers=bearer(bad))
        assert r.status == 401, bad
        assert (await r.json())["message"].startswith("invalid access token")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


async def test_refresh_rotates_and_reuse_revokes_the_family(client):
    first = await login(client, "technologist")
    r = await client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status == 200
    second = await r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await client.get("/api/me", headers=bearer(second))).status == 200
    # the first refresh token, used again (a stolen copy): refused, and the whole login revoked
    r = await client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status == 401 and "revoked" in (await r.json())["message"]
    r = await client.post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert r.status == 401
    # another login of the same user (another device) is a different family and still works
    other = await login(client, "technologist")
    assert (await client.post("/api/auth/refresh", json={"refresh_token": other["refresh_token"]})).status == 200


async def test_logout_revokes_the_refresh_token(client):
    tokens = await login(client, "viewer")
    assert (await client.post("/api/auth/logout", json={"refresh_token": tokens["refresh_token"]})).status == 204
    assert (await client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})).status == 401


async def test_logout_everywhere_refuses_every_token_at_once(client):
    phone, browser = await login(client, "physician"), await login(client, "physician")
    assert (await client.post("/api/auth/logout-all", headers=bearer(phone))).status == 204
    for tokens in (phone, browser):
        assert (await client.get("/api/me", headers=bearer(tokens))).status == 401
        assert (await client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})).status == 401
    assert (await client.get("/api/me", headers=bearer(await login(client, "physician")))).status == 200


async def test_disabling_an_account_revokes_its_tokens(client):
    admin, tech = await login(client, "admin"), await login(client, "technologist")
    r = await client.patch("/api/users/technologist", json={"disabled": True}, headers=bearer(admin))
    assert r.status == 200 and (await r.json())["disabled"] is True
    assert (await client.get("/api/me", headers=bearer(tech))).status == 401
    assert (await client.post("/api/auth/refresh", json={"refresh_token": tech["refresh_token"]})).status == 401
    r = await client.post("/api/auth/login", json={"username": "technologist", "password": PASSWORD})
    assert r.status == 401


async def test_failed_logins_are_limited_per_account(client):
    for _ in range(3):      # login_failures_per_account: 3 in the test settings
        r = await client.post("/api/auth/login", json={"username": "viewer", "password": "guess guess"})
        assert r.status == 401
    r = await client.post("/api/auth/login", json={"username": "viewer", "password": PASSWORD})
    assert r.status == 429 and int(r.headers["Retry-After"]) > 0
    assert "too many" in (await r.json())["message"]
    assert (await client.post("/api/auth/login", json={"username": "admin", "password": PASSWORD})).status == 200


async def test_failed_logins_are_limited_per_address(client):
    # login_failures_per_address: 6 — two wrong guesses at each of three accounts, then any login is refused
    for name in ("admin", "physician", "technologist"):
        for _ in range(2):
            r = await client.post("/api/auth/login", json={"username": name, "password": "guess guess"})
            assert r.status == 401
    r = await client.post("/api/auth/login", json={"username": "viewer", "password": PASSWORD})
    assert r.status == 429


async def test_a_revocation_by_another_process_takes_effect_within_the_check_window(client, env):
    tokens = await login(client, "viewer")
    assert (await client.get("/api/me", headers=bearer(tokens))).status == 200     # checked and remembered
    with env.sessions.begin() as s:                 # what `neuropetrix users disable viewer` does
        users.update_user(s, "viewer", disabled=True)
    env.clock.advance(Auth.CHECK_SECONDS)
    assert (await client.get("/api/me", headers=bearer(tokens))).status == 401


async def test_a_revocation_by_another_process_arrives_with_its_event(client, env):
    tokens = await login(client, "viewer")
    assert (await client.get("/api/me", headers=bearer(tokens))).status == 200     # checked and remembered
    with env.sessions.begin() as s:
        users.set_password(s, "viewer", "another long password")
    async with asyncio.timeout(5):                  # the feed reads the account.revoked event (no clock moved)
        while (await client.get("/api/me", headers=bearer(tokens))).status != 401:
            await asyncio.sleep(0.02)


async def test_an_access_token_expires_by_the_clock(client, env):
    tokens = await login(client, "viewer")
    assert (await client.get("/api/me", headers=bearer(tokens))).status == 200
    env.clock.advance(tokens["expires_in"])
    r = await client.get("/api/me", headers=bearer(tokens))
    assert r.status == 401 and "expired" in (await r.json())["message"]
