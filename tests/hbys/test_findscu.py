"""dcmtk findscu -W as the scanner's console against the node's Modality Worklist: the Turkish name
arrives intact in UTF-8 and in Latin-5 (per calling AE), a date range selects, a cancelled order
disappears. Orders come in over MLLP from python-hl7's client, as from the HBYS."""
from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from hl7.client import MLLPClient

from tests.conftest import dcmtk
from tests.hbys import corpus
from tests.hbys.conftest import ack_of, parse_ack
from tests.support.nodeproc import free_port, running_node

RETURN_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
               "StudyInstanceUID", "RequestedProcedureID", "RequestedProcedureDescription")
SPS = "ScheduledProcedureStepSequence[0]"
STEP_KEYS = ("ScheduledStationAETitle", "ScheduledProcedureStepStartTime", "ScheduledProcedureStepID")


def send(port: int, raw: bytes) -> str:
    with MLLPClient("127.0.0.1", port) as client:
        return ack_of(parse_ack(client.send_message(raw)))[0]


def findscu(node, out: Path, aet: str, date: str = "", modality: str = "PT",
            options: tuple[str, ...] = ()) -> list[pydicom.Dataset]:
    """A console's worklist query; the responses as dcmtk wrote them (-X), in order."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.dcm"):
        old.unlink()
    keys = [arg for key in RETURN_KEYS for arg in ("-k", key)]
    keys += [arg for key in STEP_KEYS for arg in ("-k", f"{SPS}.{key}")]
    keys += ["-k", f"{SPS}.ScheduledProcedureStepStartDate={date}", "-k", f"{SPS}.Modality={modality}"]
    done = dcmtk("findscu", "-W", "-aet", aet, "-aec", node.ae_title, "-X", "-od", str(out), *options, *keys,
                 "127.0.0.1", str(node.dicom_port), timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
    findscu.last_output = done.stdout + done.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


@pytest.fixture
def node_with_orders(tmp_path: Path):
    listen = free_port()
    peers = [{"name": name, "ae_title": name, "host": "127.0.0.1", "port": free_port()}
             for name in ("PETCT1", "LATIN5")]
    with running_node(tmp_path / "node", {"peers": peers, "hbys": {
            "mllp_listen": {"enabled": True, "host": "127.0.0.1", "port": listen},
            "worklist_charsets": {"LATIN5": "ISO_IR 148"}}}) as node:
        assert send(listen, corpus.orm("F1", "PL1", "ACC1", name="ŞAHİN^ĞÜLSÜM IŞIL", start="20261201093000")) == "AA"
        assert send(listen, corpus.orm("F2", "PL2", "ACC2", "UNICODE UTF-8", name="ÇAKIR^İPEK",
                                       patient_id=corpus.TCKN2, start="20261202110000")) == "AA"
        assert send(listen, corpus.orm("F3", "PL3", "ACC3", name="ÖZ^ŞÜKRÜ", patient_id="55555555555",
                                       start="20261205080000")) == "AA"
        yield node, listen


def test_the_console_sees_the_turkish_names_in_both_character_sets(node_with_orders, tmp_path) -> None:
    node, _ = node_with_orders
    utf8 = findscu(node, tmp_path / "utf8", "PETCT1")
    assert [(r.AccessionNumber, str(r.PatientName)) for r in utf8] == [
        ("ACC1", "ŞAHİN^ĞÜLSÜM IŞIL"), ("ACC2", "ÇAKIR^İPEK"), ("ACC3", "ÖZ^ŞÜKRÜ")]
    assert {r.SpecificCharacterSet for r in utf8} == {"ISO_IR 192"}
    latin5 = findscu(node, tmp_path / "latin5", "LATIN5")
    assert {r.SpecificCharacterSet for r in latin5} == {"ISO_IR 148"}
    assert [str(r.PatientName) for r in latin5] == ["ŞAHİN^ĞÜLSÜM IŞIL", "ÇAKIR^İPEK", "ÖZ^ŞÜKRÜ"]
    raw = (tmp_path / "latin5" / "rsp0001.dcm").read_bytes()
    assert "ŞAHİN^ĞÜLSÜM IŞIL".encode("iso8859_9") in raw            # Latin-5 bytes on the wire
    first = utf8[0]
    for key in RETURN_KEYS:                                          # every requested key came back
        assert key in first, key
    step = first.ScheduledProcedureStepSequence[0]
    assert (step.ScheduledStationAETitle, step.ScheduledProcedureStepStartDate, step.Modality) == (
        "PETCT1", "20261201", "PT")
    assert first.StudyInstanceUID.startswith("1.2.") and first.RequestedProcedureID == "RPACC1"


def test_date_range_and_a_cancelled_order_disappears(node_with_orders, tmp_path) -> None:
    node, listen = node_with_orders
    assert [r.AccessionNumber for r in findscu(node, tmp_path / "a", "PETCT1", "20261201-20261202")] == ["ACC1", "ACC2"]
    assert [r.AccessionNumber for r in findscu(node, tmp_path / "b", "PETCT1", "20261203-")] == ["ACC3"]
    assert findscu(node, tmp_path / "c", "PETCT1", modality="CT") == []
    assert send(listen, corpus.orm("F4", "PL2", "ACC2", order_control="CA", status="CA",
                                   patient_id=corpus.TCKN2)) == "AA"
    assert [r.AccessionNumber for r in findscu(node, tmp_path / "d", "PETCT1")] == ["ACC1", "ACC3"]



def test_c_cancel_ends_the_query(node_with_orders, tmp_path) -> None:
    node, listen = node_with_orders
    with MLLPClient("127.0.0.1", listen) as client:           # a busy day: 150 more orders
        for n in range(150):
            raw = corpus.orm(f"B{n}", f"PLB{n}", f"ACCB{n}", patient_id="55555555555", start="20261201120000")
            assert ack_of(parse_ack(client.send_message(raw)))[0] == "AA"
    answered = findscu(node, tmp_path / "cancel", "PETCT1", options=("--cancel", "1", "-v"))
    assert 1 <= len(answered) < 153, len(answered)
    assert "Cancel" in findscu.last_output, findscu.last_output[-2000:]
