"""Order status messages back to the HBYS: ORM^O01 (v2.3.1/2.5) or OMG^O19 (v2.5.1) with ORC-5 IP
then CM, one each per order, as durable jobs; read back with python-hl7 (not the library that wrote
them)."""
from __future__ import annotations

import hl7
import pytest
from sqlalchemy import select

from neuropetrix.config.settings import HbysSettings, MllpIn, MllpOut
from neuropetrix.engine.orders import Intake, OrderTracker, set_status
from neuropetrix.store.db import utcnow
from neuropetrix.store.jobs_models import Job
from neuropetrix.store.orders_models import Order
from tests.hbys import corpus
from tests.support.nodeproc import free_port


@pytest.mark.parametrize(("version", "charset", "kind"), [
    ("2.3.1", "8859/9", "ORM^O01"), ("2.5", "UNICODE UTF-8", "ORM^O01^ORM_O01"),
    ("2.5.1", "UNICODE UTF-8", "OMG^O19^OMG_O19")])
def test_ip_then_cm_once_each_in_the_destinations_version(sessions, version, charset, kind) -> None:
    settings = HbysSettings(mllp=MllpOut(version=version, charset=charset), order_status=True,
                            mllp_listen=MllpIn(enabled=True, port=free_port()))
    assert b"MSA|AA" in Intake(sessions, settings).receive(corpus.orm("S1", "PL1", "ACC1", name="ŞAHİN^ĞÜLSÜM"), "h")
    tracker = OrderTracker(sessions, settings)
    for status in ("arrived", "in progress", "completed"):
        with sessions.begin() as s:
            set_status(s, s.scalars(select(Order)).one(), status, utcnow())
        tracker.run_once()
    tracker.run_once()
    with sessions() as s:
        jobs = list(s.scalars(select(Job).order_by(Job.id)))
    assert [(j.kind, j.params["code"], j.destination, j.state) for j in jobs] == [
        ("order_status", "IP", "hl7:hbys", "queued"), ("order_status", "CM", "hl7:hbys", "queued")]
    for job, code in zip(jobs, ("IP", "CM")):
        raw = job.params["message"].encode({"8859/9": "iso8859_9"}.get(charset, "utf-8"))
        message = hl7.parse(raw.decode("iso8859_9" if charset == "8859/9" else "utf-8"))
        assert str(message.segment("MSH")(9)) == kind and str(message.segment("MSH")(12)) == version
        assert str(message.segment("MSH")(18)) == charset
        orc, obr = message.segment("ORC"), message.segment("OBR")
        assert (str(orc(1)), str(orc(5)), str(orc(2)), str(orc(3))) == ("SC", code, "PL1^ENLIL", "FPL1")
        assert str(obr(18)) == "ACC1" and str(obr(4)).startswith("24472-5^")
        assert str(message.segment("PID")(5)) == "ŞAHİN^ĞÜLSÜM"


def test_off_by_default(sessions) -> None:
    settings = HbysSettings(mllp_listen=MllpIn(enabled=True, port=free_port()))
    Intake(sessions, settings).receive(corpus.orm("S1", "PL1", "ACC1"), "h")
    with sessions.begin() as s:
        set_status(s, s.scalars(select(Order)).one(), "arrived", utcnow())
    OrderTracker(sessions, settings).run_once()
    with sessions() as s:
        assert s.scalars(select(Job)).first() is None
