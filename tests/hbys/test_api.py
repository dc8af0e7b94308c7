"""/api/orders, /api/worklist, /api/reconcile (+ link) and /api/hl7/messages, by role."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from neuropetrix.engine.orders import Intake, OrderTracker
from neuropetrix.store.models import Event
from neuropetrix.store.orders_models import Order
from tests.api.conftest import bearer, login
from tests.hbys import corpus
from tests.hbys.conftest import listen_settings

pytestmark = pytest.mark.asyncio
STUDY = "1.2.826.0.1.3680043.10.1.900"


@pytest.fixture
def seeded(env):
    settings = listen_settings()
    intake = Intake(env.sessions, settings)
    assert b"MSA|AA" in intake.receive(corpus.orm("API1", "PL1", "ACC1", name="ŞAHİN^ĞÜLSÜM"), "127.0.0.1")
    assert b"MSA|AE" in intake.receive(corpus.orm("API2", "NOSUCH", "ACC9", order_control="CA"), "127.0.0.1")
    env.add_instance(STUDY, accession_number="UNKNOWN", patient_id=corpus.TCKN, patient_name="SAHIN^GULSUM",
                     study_date="20261201")
    tracker = OrderTracker(env.sessions, settings)
    tracker.run_once()
    return env, tracker


async def test_orders_worklist_and_messages(seeded, aiohttp_client) -> None:
    env, _ = seeded
    client = await aiohttp_client(env.app())
    tech = bearer(await login(client, "technologist"))
    orders = await (await client.get("/api/orders", headers=tech)).json()
    assert orders["total"] == 1
    order = orders["items"][0]
    assert (order["placer_number"], order["status"], order["patient"]["name"]) == ("PL1", "scheduled", "ŞAHİN^ĞÜLSÜM")
    assert order["procedure"] == {"code": "24472-5", "system": "LN", "text": "PET/BT Tüm vücut FDG"}
    items = (await (await client.get("/api/worklist?date=20261201&station=PETCT1", headers=tech)).json())["items"]
    assert [(i["accession_number"], i["patient_name"], i["status"]) for i in items] == [
        ("ACC1", "ŞAHİN^ĞÜLSÜM", "SCHEDULED")]
    assert (await (await client.get("/api/worklist?date=20261202", headers=tech)).json())["items"] == []
    assert (await client.get("/api/worklist?date=yesterday", headers=tech)).status == 400
    assert (await client.get("/api/hl7/messages", headers=tech)).status == 403
    admin = bearer(await login(client, "admin"))
    messages = (await (await client.get("/api/hl7/messages", headers=admin)).json())["items"]
    assert [(m["control_id"], m["ack_code"]) for m in messages] == [("API2", "AE"), ("API1", "AA")]
    assert "ŞAHİN" in messages[1]["message"] and "MSA|AE|API2" in messages[0]["ack"]
    viewer = bearer(await login(client, "viewer"))
    assert (await client.get("/api/orders", headers=viewer)).status == 403


async def test_reconcile_list_and_link(seeded, aiohttp_client) -> None:
    env, tracker = seeded
    client = await aiohttp_client(env.app())
    tech = bearer(await login(client, "technologist"))
    waiting = (await (await client.get("/api/reconcile", headers=tech)).json())["items"]
    # same patient, day and modality as the order, but typed without Turkish letters: asked, not guessed
    assert [(w["study_uid"], w["state"], w["differences"], w["study"]["accession_number"]) for w in waiting] == [
        (STUDY, "mismatch", ["PatientName"], "UNKNOWN")]
    physician = bearer(await login(client, "physician"))
    assert (await client.post(f"/api/reconcile/{STUDY}", json={"order_id": 1}, headers=physician)).status == 403
    assert (await client.post(f"/api/reconcile/{STUDY}", json={"order_id": "x"}, headers=tech)).status == 400
    assert (await client.post(f"/api/reconcile/{STUDY}", json={"order_id": 999}, headers=tech)).status == 404
    with env.sessions() as s:
        order_id = s.scalars(select(Order.id)).one()
    r = await client.post(f"/api/reconcile/{STUDY}", json={"order_id": order_id}, headers=tech)
    assert r.status == 200, await r.text()
    assert (await r.json())["state"] == "linked" and (await r.json())["resolved_by"] == "technologist"
    assert (await (await client.get("/api/reconcile", headers=tech)).json())["items"] == []
    with env.sessions() as s:
        assert tracker.release(s, STUDY) is True
        assert s.scalars(select(Order.status)).one() == "arrived"
        assert [e.payload for e in s.scalars(select(Event).where(Event.kind == "order.changed"))] == [
            {"order": order_id, "status": "arrived"}]
