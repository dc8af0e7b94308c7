"""The study list: pagination, filters, bad parameters; one study with its series; result files."""
from __future__ import annotations

import pytest

from tests.api.conftest import bearer, login

pytestmark = pytest.mark.asyncio


@pytest.fixture
def seven(env):
    """Seven studies, newest last: PET/CT ones on 20261101…03, CT-only ones on 20261104…07; patients P0
    and P1 alternate, but study 4 is DEMIR^ALI's (P9)."""
    for i in range(7):
        uid = f"1.2.826.0.1.3680043.10.2.{i}"
        env.add_instance(uid, "CT", 1, patient_id="P9" if i == 4 else f"P{i % 2}", study_date=f"2026110{i + 1}",
                         accession_number=f"ACC{i}", patient_name="DEMIR^ALI" if i == 4 else "KAYA^AYSE")
        if i < 3:
            env.add_instance(uid, "PT", 2, patient_id=f"P{i % 2}", study_date=f"2026110{i + 1}")
    return env


async def _get(client, tokens, query: str = "") -> tuple[int, dict]:
    r = await client.get(f"/api/studies{query}", headers=bearer(tokens))
    return r.status, await r.json()


async def test_pages_cover_every_study_once_newest_first(seven, aiohttp_client):
    client = await aiohttp_client(seven.app())
    tokens = await login(client, "viewer")
    seen = []
    for offset in (0, 3, 6):
        status, page = await _get(client, tokens, f"?limit=3&offset={offset}")
        assert status == 200 and page["total"] == 7 and page["limit"] == 3 and page["offset"] == offset
        seen += [s["study_uid"] for s in page["items"]]
    assert seen == [f"1.2.826.0.1.3680043.10.2.{i}" for i in range(6, -1, -1)]
    _, page = await _get(client, tokens)
    assert page["limit"] == 50 and len(page["items"]) == 7


async def test_filters_combine(seven, aiohttp_client):
    client = await aiohttp_client(seven.app())
    tokens = await login(client, "viewer")
    cases = {"?modality=PT": {0, 1, 2}, "?patient_id=P1": {1, 3, 5}, "?modality=PT&patient_id=P0": {0, 2},
             "?date_from=20261103&date_to=20261105": {2, 3, 4}, "?accession_number=ACC6": {6},
             "?q=demir": {4}, "?state=complete": set(), "?state=receiving&modality=CT": set(range(7))}
    for query, expected in cases.items():
        status, page = await _get(client, tokens, query)
        assert status == 200
        got = {int(s["study_uid"].rsplit(".", 1)[1]) for s in page["items"]}
        assert got == expected and page["total"] == len(expected), query


@pytest.mark.parametrize("query,message", [("?limit=0", "limit"), ("?limit=501", "limit"), ("?offset=-1", "offset"),
                                           ("?limit=x", "limit"), ("?state=lost", "state"),
                                           ("?date_from=2026-11-01", "date_from")])
async def test_bad_parameters_are_400_naming_the_parameter(client, query, message):
    status, body = await _get(client, await login(client, "viewer"), query)
    assert status == 400 and body["message"].startswith(message)


async def test_one_study_with_series_events_and_files(seven, aiohttp_client):
    client = await aiohttp_client(seven.app())
    tokens = await login(client, "physician")
    uid = "1.2.826.0.1.3680043.10.2.0"
    r = await client.get(f"/api/studies/{uid}", headers=bearer(tokens))
    study = await r.json()
    assert [(s["modality"], s["instances"]) for s in study["series"]] == [("CT", 1), ("PT", 1)]
    assert [e["kind"] for e in study["events"]] == ["study.received"]
    assert study["analysis"] is None and study["files"] == {}
    assert (await client.get(f"/api/studies/{uid}/mip.png", headers=bearer(tokens))).status == 404
    (seven.data_dir / "results" / uid).mkdir(parents=True)
    (seven.data_dir / "results" / uid / "mip.png").write_bytes(b"\x89PNG\r\n\x1a\nrest")
    r = await client.get(f"/api/studies/{uid}/mip.png", headers=bearer(tokens))
    assert r.status == 200 and r.content_type == "image/png" and await r.read() == b"\x89PNG\r\n\x1a\nrest"
    r = await client.get("/api/studies/1.2.3.4", headers=bearer(tokens))
    assert r.status == 404 and (await r.json())["message"] == "no study 1.2.3.4"
    r = await client.get("/api/studies/..%2F..%2Fetc", headers=bearer(tokens))
    assert r.status in (400, 404)
    for not_uid in ("1.02.3", "1", "1.2.3.", "1.2." + "3" * 70):       # the store's grammar, not a looser one
        r = await client.get(f"/api/studies/{not_uid}/mip.png", headers=bearer(tokens))
        assert r.status == 400 and (await r.json())["message"] == "study_uid: not a DICOM UID"
