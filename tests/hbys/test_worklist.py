"""The Modality Worklist provider on Datasets: orders from HL7 (through the Intake), queries as a
scanner's console sends them, PS3.4 K.6 matching, return keys and character sets."""
from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from neuropetrix.engine.orders import Intake
from neuropetrix.engine.worklist import Worklist
from tests.hbys import corpus
from tests.hbys.conftest import listen_settings


@pytest.fixture
def worklist(sessions) -> Worklist:
    intake = Intake(sessions, listen_settings())
    for raw in (corpus.orm("W1", "PL1", "ACC1", name="ŞAHİN^ĞÜLSÜM", start="20261201093000"),
                corpus.orm("W2", "PL2", "ACC2", "UNICODE UTF-8", name="ÇAKIR^İPEK", patient_id=corpus.TCKN2,
                           start="20261201143000"),
                corpus.orm("W3", "PL3", "ACC3", name="ŞAHİN^ĞÜLSÜM", start="20261202081500"),
                corpus.orm("W4", "PL4", "ACC4", patient_id="55555555555", start="20261201110000"),
                corpus.orm("W5", "PL4", "ACC4", order_control="CA", status="CA", patient_id="55555555555")):
        assert b"MSA|AA" in intake.receive(raw, "127.0.0.1")
    return Worklist(sessions, "ISO_IR 192", {"LATIN5CONSOLE": "ISO_IR 148"})


def query(**sps) -> Dataset:
    """What a console asks: patient and order keys empty (return keys), step keys as given."""
    q = Dataset()
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
                "StudyInstanceUID", "RequestedProcedureID", "RequestedProcedureDescription",
                "ReferringPhysicianName", "AdmissionID", "PatientWeight"):
        setattr(q, key, "")
    q.RequestedProcedureCodeSequence = Sequence()
    step = Dataset()
    for key in ("ScheduledStationAETitle", "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
                "Modality", "ScheduledProcedureStepID", "ScheduledProcedureStepDescription",
                "ScheduledPerformingPhysicianName"):
        setattr(step, key, "")
    for key, value in sps.items():
        setattr(step, key, value)
    q.ScheduledProcedureStepSequence = Sequence([step])
    return q


def accessions(results) -> list[str]:
    return [r.AccessionNumber for r in results]


def test_universal_query_offers_open_orders_only_with_every_return_key(worklist) -> None:
    results = list(worklist(query(), "PETCT1"))
    assert accessions(results) == ["ACC1", "ACC2", "ACC3"]           # ACC4 was cancelled
    first = results[0]
    assert first.SpecificCharacterSet == "ISO_IR 192"
    assert str(first.PatientName) == "ŞAHİN^ĞÜLSÜM" and first.PatientID == corpus.TCKN
    assert first.StudyInstanceUID.startswith("2.25.") and first.RequestedProcedureID == "RPACC1"
    assert "PatientWeight" in first and first.PatientWeight in (None, "")        # asked, unknown: empty
    assert [c.CodeValue for c in first.RequestedProcedureCodeSequence] == ["24472-5", "804210"]
    step = first.ScheduledProcedureStepSequence[0]
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == ("20261201", "093000")
    assert (step.Modality, step.ScheduledStationAETitle, step.ScheduledProcedureStepID) == ("PT", "PETCT1", "SPSACC1")
    assert "ScheduledProtocolCodeSequence" not in step                 # not asked, not returned
    assert "PlacerOrderNumberImagingServiceRequest" not in first


@pytest.mark.parametrize(("charset", "codec"), [("ISO_IR 192", "utf-8"), ("ISO_IR 148", "iso8859_9")])
def test_character_set_per_calling_ae_and_the_name_encodes(worklist, charset, codec) -> None:
    ae = "LATIN5CONSOLE" if charset == "ISO_IR 148" else "PETCT1"
    (result,) = [r for r in worklist(query(), ae) if r.AccessionNumber == "ACC2"]
    assert result.SpecificCharacterSet == charset
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, result)
    assert "ÇAKIR^İPEK".encode(codec) in fp.getvalue()


def test_date_and_date_time_ranges(worklist) -> None:
    assert accessions(worklist(query(ScheduledProcedureStepStartDate="20261201"), "X")) == ["ACC1", "ACC2"]
    assert accessions(worklist(query(ScheduledProcedureStepStartDate="20261202-"), "X")) == ["ACC3"]
    assert accessions(worklist(query(ScheduledProcedureStepStartDate="-20261201"), "X")) == ["ACC1", "ACC2"]
    assert accessions(worklist(query(ScheduledProcedureStepStartDate="20261130-20261203"), "X")) == [
        "ACC1", "ACC2", "ACC3"]
    assert accessions(worklist(query(ScheduledProcedureStepStartDate="20261201",
                                     ScheduledProcedureStepStartTime="1200-1800"), "X")) == ["ACC2"]
    # date and time together are one range: from 1 Dec 14:00 to 2 Dec 09:00
    assert accessions(worklist(query(ScheduledProcedureStepStartDate="20261201-20261202",
                                     ScheduledProcedureStepStartTime="1400-0900"), "X")) == ["ACC2", "ACC3"]
    assert accessions(worklist(query(ScheduledProcedureStepStartDate="20261203-"), "X")) == []


def test_wildcards_station_modality_and_keys_on_the_patient(worklist) -> None:
    named = query()
    named.PatientName = "ŞAH*"
    assert accessions(worklist(named, "X")) == ["ACC1", "ACC3"]
    named.PatientName = "şahin^ğülsüm"                   # case-insensitive, Turkish İ/ı included
    assert accessions(worklist(named, "X")) == ["ACC1", "ACC3"]
    named.PatientName = "?AKIR*"
    assert accessions(worklist(named, "X")) == ["ACC2"]
    by_id = query()
    by_id.PatientID = corpus.TCKN2
    assert accessions(worklist(by_id, "X")) == ["ACC2"]
    by_acc = query()
    by_acc.AccessionNumber = "ACC3"
    assert accessions(worklist(by_acc, "X")) == ["ACC3"]
    assert accessions(worklist(query(ScheduledStationAETitle="PETCT1", Modality="PT"), "X")) == ["ACC1", "ACC2", "ACC3"]
    assert accessions(worklist(query(ScheduledStationAETitle="PETCT2"), "X")) == []
    assert accessions(worklist(query(Modality="CT"), "X")) == []
    by_uid = query()
    uid = next(iter(worklist(by_acc, "X"))).StudyInstanceUID
    by_uid.StudyInstanceUID = f"1.2.3\\{uid}"
    assert accessions(worklist(by_uid, "X")) == ["ACC3"]


def test_a_cancelled_order_disappears_and_a_completed_one_too(worklist, sessions) -> None:
    intake = Intake(sessions, listen_settings())
    assert b"MSA|AA" in intake.receive(corpus.orm("W6", "PL1", "ACC1", order_control="CA", status="CA"), "h")
    assert b"MSA|AA" in intake.receive(corpus.orm("W7", "PL2", "ACC2", order_control="SC", status="CM"), "h")
    assert accessions(worklist(query(), "X")) == ["ACC3"]


def test_the_provider_is_lazy_so_a_cancel_stops_it(worklist) -> None:
    results = worklist(query(), "X")
    assert next(results).AccessionNumber == "ACC1"
    results.close()                                      # what the SCP does on C-CANCEL
