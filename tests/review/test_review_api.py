"""The review API on a really analysed study: roles, bad input, decisions and totals, physiological
regions, signing once, review.* events on the WebSocket, the push to
physicians, and the OpenAPI description."""
from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from neuropetrix.store.jobs_models import Job
from tests.api.test_push import push_env  # noqa: F401  (fixture)
from tests.review.conftest import bearer, login, open_review

pytestmark = pytest.mark.asyncio


async def _as(client, role: str) -> dict:
    return bearer(await login(client, role))


async def test_roles_and_authentication(review_client):
    review, client = review_client
    base = f"/api/studies/{review.study_uid}"
    assert (await client.post(f"{base}/sign")).status == 401
    assert (await client.get(f"{base}/review")).status == 401
    for role in ("technologist", "viewer"):
        r = await client.post(f"{base}/sign", headers=await _as(client, role))
        assert r.status == 403 and "results.sign" in (await r.json())["message"]
    assert (await client.get(f"{base}/review", headers=await _as(client, "viewer"))).status == 403
    tech = await client.get(f"{base}/review", headers=await _as(client, "technologist"))
    assert tech.status == 200 and (await tech.json())["status"] == "preliminary"
    assert (await client.get("/api/studies/1.2.3/review", headers=await _as(client, "physician"))).status == 404


async def test_decisions_move_the_totals_and_bad_input_is_refused(review_client):
    review, client = review_client
    url, who = f"/api/studies/{review.study_uid}/review", await _as(client, "physician")
    before = await (await client.get(url, headers=who)).json()
    assert before["totals"]["lesion_count"] == len(before["lesions"]) == 2
    r = await client.post(url, headers=who, json={"decisions": [{"label": 1, "decision": "physiological"}]})
    body = await r.json()
    second = next(les for les in before["lesions"] if les["label"] == 2)
    assert body["totals"] == {"lesion_count": 1, "tmtv_ml": second["volume_ml"], "tlg_total": second["tlg"],
                              "suv_max": second["suv_max"]}
    back = await (await client.post(url, headers=who, json={"decisions": [{"label": 1, "decision": "lesion"}]})).json()
    assert back["totals"] == before["totals"]                     # and back again
    for bad, says in (({"decisions": {"label": 1}}, "decisions"), ({"decisions": [{"label": 1, "decision": "maybe"}]},
                      "decision is one of"), ({"decisions": [{"label": 7, "decision": "rejected"}]}, "no region"),
                      ({"impression": 5}, "impression"), ({"analysis": {"colour": "red"}}, "unknown setting"),
                      ({"analysis": {"method": "percent_max", "threshold": 4}}, "fraction")):
        r = await client.post(url, headers=who, json=bad)
        assert r.status == 400 and says in (await r.json())["message"], (bad, await r.text())
    audit = (await (await client.get(url, headers=who)).json())["audit"]
    assert [(a["action"], a["detail"]) for a in audit] == [
        ("version made", audit[0]["detail"]), ("reviewed", {"decisions": {"1": "physiological"}}),
        ("reviewed", {"decisions": {"1": "lesion"}})]


async def test_physiological_regions_are_listed_and_stay_excluded(named_physician, analysed, aiohttp_client):
    brain = {"organ": "brain", "suv_max": 11.2, "volume_ml": 1714.0, "evidence": ["skull around it (CT)"]}
    review = open_review(named_physician, analysed, physiological=[brain])
    client = await aiohttp_client(named_physician.app())
    url, who = f"/api/studies/{review.study_uid}/review", await _as(client, "physician")
    body = await (await client.get(url, headers=who)).json()
    assert body["physiological"] == [{**brain, "label": 1000, "decision": "physiological"}]
    assert body["totals"]["tmtv_ml"] < 1714.0                    # not counted
    r = await client.post(url, headers=who, json={"decisions": [{"label": 1000, "decision": "lesion"}]})
    assert r.status == 400 and "stays physiological" in (await r.json())["message"]


async def test_signing_twice_makes_one_final(review_client):
    review, client = review_client
    url, who = f"/api/studies/{review.study_uid}/sign", await _as(client, "physician")
    answers = await asyncio.gather(*(client.post(url, headers=who) for _ in range(4)))
    statuses = sorted(r.status for r in answers)
    assert statuses == [202, 409, 409, 409], statuses
    (signed,) = [await r.json() for r in answers if r.status == 202]
    assert (signed["version"], signed["status"], signed["state"]) == (2, "final", "pending")
    with review.env.sessions() as s:
        jobs = s.scalars(select(Job).where(Job.study_uid == review.study_uid).order_by(Job.id)).all()
    made = [j for j in jobs if j.params.get("review")]
    assert len(made) == 1 and made[0].params["review"]["signer"]["display_name"] == "Ayşe Yılmaz"
    assert [(j.kind, j.after_id) for j in jobs if j.source_event_id == made[0].source_event_id] == [
        ("analyze", None), ("hl7", made[0].id)]                  # the same deliveries as the first analysis
    state = await (await client.get(f"/api/studies/{review.study_uid}/review", headers=who)).json()
    assert state["pending_version"] == 2 and state["version"] == 1


async def test_a_signer_without_a_name_is_told_what_to_set(make_env, analysed, aiohttp_client):
    env = make_env()
    review = open_review(env, analysed)
    client = await aiohttp_client(env.app())
    r = await client.post(f"/api/studies/{review.study_uid}/sign", headers=await _as(client, "physician"))
    assert r.status == 400 and "--display-name" in (await r.json())["message"]


async def test_review_events_stream_to_those_who_read_results(review_client):
    review, client = review_client
    who, viewer_token = await _as(client, "physician"), await _as(client, "viewer")   # logins first: a socket
    # not read for a heartbeat is closed by the server, so each is read from the moment it opens

    async def review_events(ws, until: int | None) -> list[tuple[str, int]]:
        """Read (and so answer the server's pings) until `until` review events, or a quiet heartbeat."""
        seen: list[tuple[str, int]] = []
        async with asyncio.timeout(30):                             # heartbeats alone never end it
            while until is None or len(seen) < until:
                msg = await ws.receive_json()
                if msg["type"] == "event" and msg["kind"].startswith("review."):
                    seen.append((msg["kind"], msg["payload"].get("version")))
                if until is None and msg["type"] == "heartbeat" and msg["last_event_id"] >= 4:
                    return seen
        return seen

    physician = await client.ws_connect("/api/ws", params={"after": "0"}, headers=who)
    readers = [asyncio.create_task(review_events(physician, 3))]
    viewer = await client.ws_connect("/api/ws", params={"after": "0"}, headers=viewer_token)
    readers.append(asyncio.create_task(review_events(viewer, None)))
    await client.post(f"/api/studies/{review.study_uid}/review", headers=who,
                      json={"decisions": [{"label": 2, "decision": "rejected"}]})
    await client.post(f"/api/studies/{review.study_uid}/sign", headers=who)
    seen, unseen = await asyncio.gather(*readers)
    assert seen == [("review.ready", 1), ("review.changed", 1), ("review.signed", 2)]
    assert unseen == []                                           # a viewer does not read results
    await physician.close()
    await viewer.close()


async def test_openapi_documents_the_review_routes_with_their_permissions(review_client):
    _, client = review_client
    doc = await (await client.get("/api/openapi.json")).json()
    paths = doc["paths"]
    assert paths["/api/studies/{study_uid}/sign"]["post"]["x-permission"] == "results.sign"
    assert paths["/api/studies/{study_uid}/review"]["post"]["x-permission"] == "results.review"
    assert paths["/api/studies/{study_uid}/review"]["get"]["x-permission"] == "results.read"
    assert paths["/api/studies/{study_uid}/versions"]["get"]["x-permission"] == "results.read"
    body = paths["/api/studies/{study_uid}/review"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["decisions"]["items"]["properties"]["decision"]["enum"] == [
        "lesion", "rejected", "physiological"]


async def test_physicians_get_a_push_when_a_preliminary_result_is_ready(push_env, analysed):  # noqa: F811
    fake, env, client = push_env
    for role, token in (("physician", "phone-physician"), ("technologist", "phone-tech")):
        r = await client.post("/api/devices", json={"token": token, "platform": "android"},
                              headers=bearer(await login(client, role)))
        assert r.status in (200, 201)
    open_review(env, analysed)                  # analysis.done (versioned) + review.ready
    await fake.wait_for(lambda: len(fake.delivered) >= 1)
    with env.sessions() as s:                   # both events were handled: one message was made, no more
        assert [j.params["data"]["kind"] for j in s.scalars(select(Job).where(Job.kind == "push"))] == ["review.ready"]
    assert [(m["token"], m["notification"]["title"]) for m in fake.delivered] == [
        ("phone-physician", "PET/CT result to review")]
    # a signed version tells the roles the study's route notifies (here: the technologist)
    env.add_event("review.version", "1.2.826.0.1.3680043.10.4.1", version=2, status="final",
                  recipients=["technologist"], signer="Ayşe Yılmaz")
    await fake.wait_for(lambda: len(fake.delivered) == 2)
    told = fake.delivered[1]
    assert (told["token"], told["notification"]) == ("phone-tech", {"title": "PET/CT result final",
                                                                    "body": "Version 2 is final (signed)"})
