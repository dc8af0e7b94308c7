"""Each role's allowed and denied calls, as the permission table in docs/api.md says."""
from __future__ import annotations

import pytest

from neuropetrix.store.db import utcnow
from neuropetrix.store.jobs_models import FAILED, QUEUED, Job
from tests.api.conftest import bearer, login

pytestmark = pytest.mark.asyncio

STUDY = "1.2.826.0.1.3680043.10.1.1"
A, P, T, V = "admin", "physician", "technologist", "viewer"

# (method, path, body, roles allowed); every other role gets 403
CALLS = [
    ("GET", "/api/me", None, {A, P, T, V}),
    ("GET", "/api/studies", None, {A, P, T, V}),
    ("GET", f"/api/studies/{STUDY}", None, {A, P, T, V}),
    ("GET", f"/api/studies/{STUDY}/mip.png", None, {A, P, T}),
    ("GET", f"/api/studies/{STUDY}/analysis.json", None, {A, P, T}),
    ("GET", f"/api/studies/{STUDY}/report.pdf", None, {A, P}),
    ("GET", f"/api/studies/{STUDY}/seg.dcm", None, {A, P}),
    ("GET", "/api/jobs", None, {A, T}),
    ("POST", "/api/jobs/1/retry", None, {A}),
    ("GET", "/api/routes", None, {A, T}),
    ("GET", "/api/peers", None, {A, T}),
    ("GET", "/api/users", None, {A}),
    ("POST", "/api/users", {"username": "new", "password": "a long password", "role": "viewer"}, {A}),
    ("PATCH", "/api/users/viewer", {"role": "viewer"}, {A}),
    ("GET", "/api/devices", None, {A, P, T, V}),
    ("POST", "/api/devices", {"token": "tok", "platform": "android"}, {A, P, T, V}),
]


@pytest.fixture
def seeded(env):
    env.add_instance(STUDY)
    folder = env.settings.node.data_dir / "results" / STUDY
    folder.mkdir(parents=True)
    for name, data in (("mip.png", b"\x89PNG\r\n\x1a\n"), ("analysis.json", b'{"lesions": []}'),
                       ("report.pdf", b"%PDF-1.4"), ("seg.dcm", b"DICM")):
        (folder / name).write_bytes(data)
    now = utcnow()
    with env.sessions.begin() as s:
        s.add(Job(kind="forward", study_uid=STUDY, route="r", action_index=0, destination="dicom:pacs",
                  objects=["seg"], params={}, state=FAILED, attempts=10, max_attempts=10, next_attempt_at=now,
                  worker="", last_error="refused", result={}, created_at=now, updated_at=now))
    return env


@pytest.mark.parametrize("role", [A, P, T, V])
async def test_each_role_gets_what_the_table_allows(seeded, aiohttp_client, role):
    client = await aiohttp_client(seeded.app())
    tokens = await login(client, role)
    for method, path, body, allowed in CALLS:
        r = await client.request(method, path, json=body, headers=bearer(tokens))
        if role in allowed:
            assert r.status in (200, 201), (method, path, r.status, await r.text())
        else:
            assert r.status == 403, (method, path, r.status)
            assert (await r.json())["message"].startswith(f"role {role} may not")


async def test_study_page_shows_each_role_only_its_parts(seeded, aiohttp_client):
    client = await aiohttp_client(seeded.app())
    parts = {}
    for role in (A, P, T, V):
        r = await client.get(f"/api/studies/{STUDY}", headers=bearer(await login(client, role)))
        parts[role] = await r.json()
    assert "analysis" not in parts[V] and "deliveries" not in parts[V]
    assert parts[T]["analysis"] == {"lesions": []}
    assert set(parts[T]["files"]) == {"mip.png", "analysis.json"}
    assert set(parts[P]["files"]) == {"mip.png", "analysis.json", "report.pdf", "seg.dcm"}
    assert parts[P]["deliveries"][0]["state"] == FAILED and parts[P]["deliveries"][0]["last_error"] == "refused"


async def test_admin_retries_a_failed_job(seeded, aiohttp_client):
    client = await aiohttp_client(seeded.app())
    admin = bearer(await login(client, A))
    r = await client.post("/api/jobs/1/retry", headers=admin)
    assert r.status == 200 and (await r.json())["state"] == QUEUED and (await r.json())["attempts"] == 0
    assert (await client.post("/api/jobs/99/retry", headers=admin)).status == 404


async def test_admin_manages_users(client):
    admin = bearer(await login(client, A))
    r = await client.post("/api/users", json={"username": "dr.demir", "password": "short", "role": "physician"},
                          headers=admin)
    assert r.status == 400 and "too short" in (await r.json())["message"]
    r = await client.post("/api/users", json={"username": "dr.demir", "password": "long enough pw",
                                              "role": "surgeon"}, headers=admin)
    assert r.status == 400 and "unknown role" in (await r.json())["message"]
    r = await client.post("/api/users", json={"username": "dr.demir", "password": "long enough pw",
                                              "role": "physician"}, headers=admin)
    assert r.status == 201
    assert (await client.patch("/api/users/nobody", json={"disabled": True}, headers=admin)).status == 404
    names = [u["username"] for u in (await (await client.get("/api/users", headers=admin)).json())["items"]]
    assert "dr.demir" in names and all("password" not in n for n in names)
