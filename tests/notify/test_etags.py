"""ETags on the study list and the study page: the same answer again is a bodiless 304; a change (a new
series) or another role's view of the study gives another tag."""
from __future__ import annotations

import asyncio

import pytest

from tests.api.conftest import bearer, login

pytestmark = pytest.mark.asyncio
UID = "1.2.826.0.1.3680043.10.18.70"


async def _changed(client, path: str, headers: dict, old: str) -> str:
    """The new ETag once the answer changed (the list is shared for up to a second between clients)."""
    for _ in range(100):
        r = await client.get(path, headers={**headers, "If-None-Match": old})
        if r.status == 200:
            return r.headers["ETag"]
        assert r.status == 304
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} did not change")


@pytest.mark.parametrize("path", ["/api/studies", f"/api/studies/{UID}"])
async def test_unchanged_answers_are_304_and_changes_get_a_new_tag(env, aiohttp_client, path):
    env.add_instance(UID)
    client = await aiohttp_client(env.app())
    headers = bearer(await login(client, "physician"))
    first = await client.get(path, headers=headers)
    assert first.status == 200 and (await first.json())
    tag = first.headers["ETag"]
    assert first.headers["Cache-Control"] == "private, no-cache"
    again = await client.get(path, headers={**headers, "If-None-Match": tag})
    assert again.status == 304 and await again.read() == b"" and again.headers["ETag"] == tag
    env.add_instance(UID, series=2)                       # the study changes
    new = await _changed(client, path, headers, tag)
    assert new != tag
    assert (await client.get(path, headers={**headers, "If-None-Match": f"W/{new}, \"other\""})).status == 304


async def test_a_role_that_sees_less_gets_its_own_tag(env, aiohttp_client):
    env.add_instance(UID)
    env.add_event("delivery.done", UID, destination="dicom:pacs")
    client = await aiohttp_client(env.app())
    physician = await client.get(f"/api/studies/{UID}", headers=bearer(await login(client, "physician")))
    viewer_headers = bearer(await login(client, "viewer"))
    viewer = await client.get(f"/api/studies/{UID}", headers={**viewer_headers,
                                                             "If-None-Match": physician.headers["ETag"]})
    assert viewer.status == 200 and viewer.headers["ETag"] != physician.headers["ETag"]
    assert "deliveries" in await physician.json() and "deliveries" not in await viewer.json()
