"""The Turkish HBYS corpus sent over MLLP by python-hl7's client: every ACK checked, and what each
message did to the orders and patients checked in the database."""
from __future__ import annotations

import logging

import hl7
from sqlalchemy import func, select

from neuropetrix.store.models import Patient, Study
from neuropetrix.store.orders_models import CANCELLED, HbysPatient, Hl7Message, Order
from tests.hbys import corpus
from tests.hbys.conftest import ack_of


def orders(hbys) -> list[Order]:
    with hbys.sessions() as s:
        return list(s.scalars(select(Order).order_by(Order.id)))


def patient(hbys, patient_id: str = corpus.TCKN) -> HbysPatient:
    with hbys.sessions() as s:
        return s.scalars(select(HbysPatient).where(HbysPatient.patient_id == patient_id)).one()


def test_orm_in_latin5_and_utf8_become_orders_with_the_turkish_names_intact(hbys) -> None:
    assert ack_of(hbys.send(corpus.orm("M1", "PL1", "ACC1", "8859/9", name="ŞAHİN^ĞÜLSÜM IŞIL"))) == ("AA", "M1", "")
    assert patient(hbys).name == "ŞAHİN^ĞÜLSÜM IŞIL"
    assert ack_of(hbys.send(corpus.orm("M2", "PL2", "ACC2", "UNICODE UTF-8", name="ÇAKIR^İPEK")))[:2] == ("AA", "M2")
    assert patient(hbys).name == "ÇAKIR^İPEK"          # the same TCKN: the latest demographics
    assert ack_of(hbys.send(corpus.orm("M3", "PL3", "ACC3", "UTF-8", name="ÖZGÜR^ŞULE")))[:2] == ("AA", "M3")
    assert patient(hbys).name == "ÖZGÜR^ŞULE"
    first = orders(hbys)[0]
    assert (first.placer_number, first.placer_authority, first.filler_number, first.accession_number) == (
        "PL1", "ENLIL", "FPL1", "ACC1")
    assert (first.procedure_code, first.procedure_system, first.procedure_text) == (
        "24472-5", "LN", "PET/BT Tüm vücut FDG")
    assert (first.sut_code, first.sut_text) == ("804210", "PET-BT tüm vücut")
    assert first.ordering_physician == "ÖZTÜRK^İSMAİL" and first.referring_physician == "DEMİR^GÜLŞEN"
    assert (first.modality, first.station_ae, first.scheduled_start) == ("PT", "PETCT1", "20261201100000")
    assert (first.requested_procedure_id, first.sps_id, first.status) == ("RPACC1", "SPSACC1", "scheduled")
    assert first.study_uid.startswith("1.2.")


def test_no_msh18_uses_the_senders_configured_default(hbys) -> None:
    latin5 = corpus.orm("D1", "PL1", "ACC1", "", name="GÜNEŞ^IŞIK")          # default 8859/9
    assert ack_of(hbys.send(latin5))[0] == "AA"
    assert patient(hbys).name == "GÜNEŞ^IŞIK"
    utf8 = corpus.encode([corpus.msh("ORM^O01", "D2", "", app="UTFHBYS"), corpus.pid(name="DOĞAN^ŞİFA"),
                          corpus.orc("NW", "PL9", "F9"), corpus.obr("PL9", "F9", "ACC9")], "UNICODE UTF-8")
    assert ack_of(hbys.send(utf8))[0] == "AA"
    assert patient(hbys).name == "DOĞAN^ŞİFA"


def test_omg_o19_v251_with_tq1_start(hbys) -> None:
    ack = hbys.send(corpus.omg("G1", "PLG", "ACCG"))
    assert ack_of(ack)[:2] == ("AA", "G1")
    assert str(ack.segment("MSH")(12)) == "2.5.1" and str(ack.segment("MSH")(9)) == "ACK^O19^ACK"
    (order,) = orders(hbys)
    assert order.scheduled_start == "20261202093000" and order.hl7_version == "2.5.1"
    assert patient(hbys, corpus.TCKN2).name == "ÇELİK^AYŞEGÜL"


def test_change_and_cancel(hbys) -> None:
    hbys.send(corpus.orm("C1", "PL1", "ACC1"))
    assert ack_of(hbys.send(corpus.orm("C2", "PL1", "ACC1", order_control="XO", start="20261203140000")))[0] == "AA"
    (order,) = orders(hbys)
    assert order.scheduled_start == "20261203140000"
    assert ack_of(hbys.send(corpus.orm("C3", "PL1", "ACC1", order_control="CA", status="CA")))[0] == "AA"
    assert orders(hbys)[0].status == CANCELLED
    ack = hbys.send(corpus.orm("C4", "NOSUCH", "ACC7", order_control="CA"))
    assert ack_of(ack)[0] == "AE" and "no order" in ack_of(ack)[2]
    assert str(ack.segment("ERR")(1)).startswith("ORC^1^2^204")


def test_adt_updates_and_a_merge_moves_orders_and_studies(hbys) -> None:
    assert ack_of(hbys.send(corpus.adt("A04", "A1", "KARA^ELİF", patient_id=corpus.TCKN2)))[0] == "AA"
    hbys.send(corpus.orm("A2", "PL1", "ACC1", patient_id=corpus.TCKN2, name="KARA^ELİF"))
    assert ack_of(hbys.send(corpus.adt("A08", "A3", "KARAKAYA^ELİF", patient_id=corpus.TCKN2)))[0] == "AA"
    assert patient(hbys, corpus.TCKN2).name == "KARAKAYA^ELİF"
    with hbys.sessions.begin() as s:               # a study the scanner sent under the old identifier
        old = Patient(patient_id=corpus.TCKN2, issuer="TCKN", name="KARA^ELIF")
        s.add(old)
        s.flush()
        from neuropetrix.store.db import utcnow
        s.add(Study(study_uid="1.2.3.4", patient_pk=old.id, first_received_at=utcnow(), last_received_at=utcnow()))
    ack = hbys.send(corpus.merge("A4", corpus.TCKN, corpus.TCKN2, "KARAKAYA^ELİF"))
    assert ack_of(ack)[0] == "AA"
    survivor = patient(hbys, corpus.TCKN)
    assert [o.patient_pk for o in orders(hbys)] == [survivor.id]
    assert patient(hbys, corpus.TCKN2).merged_into == survivor.id
    with hbys.sessions() as s:
        study = s.scalars(select(Study).where(Study.study_uid == "1.2.3.4")).one()
        assert s.get(Patient, study.patient_pk).patient_id == corpus.TCKN


def test_a_message_sent_again_is_acknowledged_again_and_not_applied_twice(hbys) -> None:
    first = hbys.send(corpus.adt("A08", "DUP1", "ESKİ^AD"))
    assert ack_of(hbys.send(corpus.adt("A08", "DUP2", "YENİ^AD")))[0] == "AA"
    again = hbys.send(corpus.adt("A08", "DUP1", "ESKİ^AD"))
    assert ack_of(again) == ack_of(first) == ("AA", "DUP1", "")
    assert str(again.segment("MSH")(10)) == str(first.segment("MSH")(10))     # the very same ACK
    assert patient(hbys).name == "YENİ^AD"
    with hbys.sessions() as s:
        rows = list(s.scalars(select(Hl7Message).where(Hl7Message.control_id == "DUP1").order_by(Hl7Message.id)))
    assert [r.ack_code for r in rows] == ["AA", "AA"] and rows[1].duplicate_of == rows[0].id


def test_content_errors_are_answered_ae_with_the_field_in_err(hbys) -> None:
    no_pid3 = corpus.encode([corpus.msh("ORM^O01", "E1", "8859/9"), "PID|1||||YILDIZ^ALİ",
                             corpus.orc("NW", "PL1", "F1"), corpus.obr("PL1", "F1", "ACC1")], "8859/9")
    ack = hbys.send(no_pid3)
    assert ack_of(ack)[:2] == ("AE", "E1") and "PID-3" in ack_of(ack)[2]
    assert str(ack.segment("ERR")(1)).startswith("PID^1^3^101")
    no_placer = corpus.encode([corpus.msh("ORM^O01", "E2", "8859/9"), corpus.pid(), "ORC|NW",
                               corpus.obr("", "F1", "ACC1")], "8859/9")
    ack = hbys.send(no_placer)
    assert ack_of(ack)[0] == "AE" and str(ack.segment("ERR")(1)).startswith("ORC^1^2^101")
    bad_utf8 = corpus.orm("E3", "PL1", "ACC1", "8859/9").replace(b"|8859/9", b"|UNICODE UTF-8")
    ack = hbys.send(bad_utf8)
    assert ack_of(ack)[0] == "AE" and str(ack.segment("ERR")(1)).startswith("MSH^1^18")
    assert orders(hbys) == []


def test_envelope_errors_are_answered_ar(hbys) -> None:
    oru = corpus.encode([corpus.msh("ORU^R01", "R1", "8859/9"), corpus.pid()], "8859/9")
    assert ack_of(hbys.send(oru))[:2] == ("AR", "R1")
    assert ack_of(hbys.send(corpus.orm("R2", "PL1", "ACC1").replace(b"|8859/9", b"|ISO-2022")))[0] == "AR"
    assert ack_of(hbys.send(corpus.orm("R3", "PL1", "ACC1").replace(b"|2.3.1|", b"|9.9|")))[0] == "AR"
    assert ack_of(hbys.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == "AR"
    truncated = corpus.orm("R4", "PL1", "ACC1")[:120]          # cut inside PID
    assert ack_of(hbys.send(truncated))[0] in ("AE", "AR")
    with hbys.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Hl7Message)) == 5      # every one stored
        assert s.scalar(select(func.count()).select_from(Hl7Message).where(Hl7Message.ack_code == "")) == 0


def test_an_invalid_tckn_is_a_warning_and_never_logged(hbys, caplog) -> None:
    caplog.set_level(logging.DEBUG, "neuropetrix")
    ack = hbys.send(corpus.orm("T1", "PL1", "ACC1", patient_id="12345678901"))
    code, _, text = ack_of(ack)
    assert code == "AA" and "T.C. Kimlik" in text
    assert orders(hbys)[0].accession_number == "ACC1"
    assert ack_of(hbys.send(corpus.orm("T2", "PL2", "ACC2", patient_id=corpus.FOREIGN)))[:1] == ("AA",)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "T.C. Kimlik" in logged
    assert "12345678901" not in logged and corpus.TCKN not in logged and "ŞÜKRÜ" not in logged


def test_the_ack_is_valid_hl7_for_another_parser(hbys) -> None:
    ack = hbys.send(corpus.orm("V1", "PL1", "ACC1", "8859/9"))
    assert str(ack.segment("MSH")(9)) == "ACK^O01" and str(ack.segment("MSH")(5)) == "ENLIL"
    assert str(ack.segment("MSH")(18)) == "8859/9" and isinstance(ack, hl7.Message)
