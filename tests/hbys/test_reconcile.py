"""Reconciliation of arriving studies with orders, and the order's state: Accession Number, else
Study Instance UID, else patient + day + modality; otherwise (or when the patient differs) the
reconcile list, held until a technologist decides. The engine's real pieces on one database."""
from __future__ import annotations

import itertools

import pytest
from sqlalchemy import select

from neuropetrix.engine.mpps import ProcedureSteps
from neuropetrix.engine.orders import Intake, OrderTracker, link, order_facts
from neuropetrix.store import eventlog as events
from neuropetrix.store.db import utcnow
from neuropetrix.store.eventlog import EventKind
from neuropetrix.store.index import InstanceRecord, StudyIndex
from neuropetrix.store.models import Event, Study
from neuropetrix.store.orders_models import Order, StudyOrder
from tests.hbys import corpus
from tests.hbys.conftest import listen_settings

_n = itertools.count(1)


@pytest.fixture
def tracker(sessions) -> OrderTracker:
    settings = listen_settings()
    intake = Intake(sessions, settings)
    for raw in (corpus.orm("R1", "PL1", "ACC1", name="ŞAHİN^ĞÜLSÜM", start="20261124080000"),
                corpus.orm("R2", "PL2", "ACC2", name="ŞAHİN^ĞÜLSÜM", start="20261125080000",
                           study_uid="1.2.826.0.1.3680043.10.1.77"),
                corpus.orm("R3", "PL3", "ACC3", patient_id=corpus.TCKN2, name="ÇAKIR^İPEK", start="20261126080000")):
        assert b"MSA|AA" in intake.receive(raw, "h")
    return OrderTracker(sessions, settings)


def receive(sessions, study_uid: str, accession: str = "", patient_id: str = corpus.TCKN,
            name: str = "ŞAHİN^ĞÜLSÜM", date: str = "20261124", modality: str = "PT") -> None:
    n = next(_n)
    StudyIndex(sessions).add(InstanceRecord(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.128", sop_instance_uid=f"1.2.3.9.{n}", study_uid=study_uid,
        series_uid=f"1.2.3.8.{n}", transfer_syntax_uid="1.2.840.10008.1.2.1", path=f"x/{n}.dcm", size_bytes=1,
        patient_id=patient_id, patient_name=name, study_date=date, accession_number=accession, modality=modality))


def state_of(sessions, study_uid: str) -> StudyOrder:
    with sessions() as s:
        return s.scalars(select(StudyOrder).where(StudyOrder.study_uid == study_uid)).one()


def order(sessions, placer: str) -> Order:
    with sessions() as s:
        return s.scalars(select(Order).where(Order.placer_number == placer)).one()


def complete(sessions, study_uid: str) -> None:
    with sessions.begin() as s:
        events.record(s, EventKind.STUDY_COMPLETE, study_uid, {"reason": "test"})


def test_match_by_accession_then_study_uid_then_patient_day_modality(tracker, sessions) -> None:
    receive(sessions, "1.2.3.100", accession="ACC1")
    receive(sessions, "1.2.826.0.1.3680043.10.1.77", accession="TYPED-WRONG", date="20261125")
    receive(sessions, "1.2.3.102", patient_id=corpus.TCKN2, name="ÇAKIR^İPEK", date="20261126")
    tracker.run_once()
    assert [(state_of(sessions, u).state, state_of(sessions, u).matched_by) for u in
            ("1.2.3.100", "1.2.826.0.1.3680043.10.1.77", "1.2.3.102")] == [
        ("matched", "accession"), ("matched", "study_uid"), ("matched", "patient_date_modality")]
    assert [order(sessions, p).status for p in ("PL1", "PL2", "PL3")] == ["arrived"] * 3


def test_state_follows_mpps_and_completion(tracker, sessions) -> None:
    uid = order(sessions, "PL1").study_uid
    from pydicom.dataset import Dataset
    mpps = Dataset()
    mpps.PerformedProcedureStepStatus = "IN PROGRESS"
    step = Dataset()
    step.StudyInstanceUID = uid
    mpps.ScheduledStepAttributesSequence = [step]
    assert ProcedureSteps(sessions).create("1.2.3.555", mpps, "PETCT1").status == 0
    tracker.run_once()
    assert order(sessions, "PL1").status == "in progress"
    receive(sessions, uid, accession="ACC1")
    tracker.run_once()
    assert order(sessions, "PL1").status == "in progress"        # never backwards to arrived
    complete(sessions, uid)
    tracker.run_once()
    assert order(sessions, "PL1").status == "completed"
    with sessions() as s:
        changes = [e.payload["status"] for e in s.scalars(select(Event).where(Event.kind == "order.changed"))]
    assert changes == ["in progress", "completed"]


def test_unknown_accession_is_held_until_linked_then_completed_again(tracker, sessions) -> None:
    receive(sessions, "1.2.3.200", accession="NOPE", date="20260101")
    tracker.run_once()
    assert state_of(sessions, "1.2.3.200").state == "unmatched"
    with sessions.begin() as s:
        s.execute(Study.__table__.update().where(Study.study_uid == "1.2.3.200").values(state="complete"))
        assert tracker.release(s, "1.2.3.200") is False
    assert state_of(sessions, "1.2.3.200").held == 1
    with sessions.begin() as s:
        before = s.scalar(select(Event.id).order_by(Event.id.desc()).limit(1))
        link(s, "1.2.3.200", order(sessions, "PL3").id, "tech1", utcnow())
    row = state_of(sessions, "1.2.3.200")
    assert (row.state, row.resolved_by, row.held) == ("linked", "tech1", 0)
    with sessions() as s:
        again = list(s.scalars(select(Event).where(Event.id > before, Event.kind == "study.complete")))
        assert [e.payload["reason"] for e in again] == ["reconciled"]
        assert tracker.release(s, "1.2.3.200") is True
        facts = order_facts(s, "1.2.3.200")
    assert facts.placer_order_number == "PL3" and facts.patient_family_name == "ÇAKIR"
    assert order(sessions, "PL3").status == "completed"


def test_different_patient_data_go_to_the_list_not_silently_matched(tracker, sessions) -> None:
    receive(sessions, "1.2.3.300", accession="ACC1", name="SAHIN^GULSUM")       # typed without Turkish letters
    tracker.run_once()
    row = state_of(sessions, "1.2.3.300")
    assert (row.state, row.differences) == ("mismatch", ["PatientName"])
    with sessions() as s:
        assert tracker.release(s, "1.2.3.300") is False and order_facts(s, "1.2.3.300") is None


def test_two_candidates_are_never_guessed(tracker, sessions) -> None:
    intake = Intake(sessions, listen_settings())
    assert b"MSA|AA" in intake.receive(corpus.orm("R9", "PL9", "ACC9", start="20261124150000"), "h")
    receive(sessions, "1.2.3.400", date="20261124")                    # no accession: two orders that day
    tracker.run_once()
    assert state_of(sessions, "1.2.3.400").state == "unmatched"


def test_confirmed_unordered_is_released_without_an_order(tracker, sessions) -> None:
    receive(sessions, "1.2.3.500", date="20250101")
    tracker.run_once()
    with sessions.begin() as s:
        link(s, "1.2.3.500", None, "tech1", utcnow())
    with sessions() as s:
        assert state_of(sessions, "1.2.3.500").state == "unordered" and tracker.release(s, "1.2.3.500")
        assert order_facts(s, "1.2.3.500") is None


