"""C-FIND through a provider registered by SOP Class UID: matches as Pending responses in their own
character set (dcmtk findscu reads them), C-CANCEL between matches, a failing provider answered."""
from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from io import BytesIO

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dsutils import decode, encode
from pynetdicom.sop_class import ModalityWorklistInformationFind as MWL

from neuropetrix.node.scp.policy import AcceptancePolicy, ServerLimits
from neuropetrix.node.scp.server import DicomServer
from neuropetrix.store.db import open_database
from neuropetrix.store.files import FileStore
from neuropetrix.store.index import StudyIndex
from neuropetrix.store.ingest import Ingest
from tests.conftest import dcmtk
from tests.support.rawdicom import RawAssociation, encode_command

NAMES = ["ÖZTÜRK^ŞEYMA", "YILDIZ^İBRAHİM", "ÇELİK^AĞAH"]


def match(name: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 148"      # Latin-5: holds Ş, İ, ğ
    ds.PatientName = name
    ds.PatientID = "10000000146"
    ds.AccessionNumber = f"ACC{len(name)}"
    return ds


def server_with(tmp_path, provider) -> DicomServer:
    _, sessions = open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ingest = Ingest(FileStore(tmp_path / "storage"), StudyIndex(sessions))
    server = DicomServer("127.0.0.1", 0, AcceptancePolicy("NEUROPETRIX", frozenset({"STORESCU", "PYNETDICOM"})),
                         ingest, ServerLimits(network_timeout=10), find_providers={MWL: provider})
    server.start()
    return server


def test_findscu_gets_every_match_in_its_own_character_set(tmp_path):
    asked: list[tuple[Dataset, str]] = []

    def provider(identifier: Dataset, calling_ae: str) -> Iterator[Dataset]:
        asked.append((identifier, calling_ae))
        yield from (match(n) for n in NAMES)
    srv = server_with(tmp_path, provider)
    out = tmp_path / "responses"
    out.mkdir()
    try:
        result = dcmtk("findscu", "-W", "-aet", "STORESCU", "-aec", "NEUROPETRIX", "-k", "PatientName=",
                       "-k", "AccessionNumber=", "-X", "-od", str(out), "127.0.0.1", str(srv.port))
    finally:
        srv.stop(grace=2)
    assert result.returncode == 0, result.stderr
    responses = sorted(out.glob("rsp*.dcm"))
    assert len(responses) == len(NAMES)
    for path, name in zip(responses, NAMES):
        assert name.encode("iso8859_9") in path.read_bytes()      # encoded in Latin-5, as declared
        ds = pydicom.dcmread(path)
        assert ds.SpecificCharacterSet == "ISO_IR 148" and ds.PatientName == name
    (identifier, calling_ae), = asked
    assert calling_ae == "STORESCU"
    assert "PatientName" in identifier and "AccessionNumber" in identifier


def test_a_sop_class_without_provider_is_not_accepted(tmp_path):
    srv = server_with(tmp_path, lambda identifier, ae: iter(()))
    try:
        refused = dcmtk("findscu", "-P", "-aet", "STORESCU", "-aec", "NEUROPETRIX", "-k", "QueryRetrieveLevel=STUDY",
                        "127.0.0.1", str(srv.port))
    finally:
        srv.stop(grace=2)
    assert refused.returncode != 0
    assert "No Acceptable Presentation Contexts" in refused.stderr


class RawFind(RawAssociation):
    """C-FIND on a raw socket, so that a C-CANCEL is on the wire exactly when the test says."""

    def __init__(self, port: int) -> None:
        super().__init__(port, MWL, ExplicitVRLittleEndian)

    def find(self, identifier: Dataset, message_id: int = 7) -> None:
        cmd = Dataset()
        cmd.AffectedSOPClassUID = MWL
        cmd.CommandField, cmd.MessageID, cmd.Priority, cmd.CommandDataSetType = 0x0020, message_id, 0, 0x0000
        self._send_pdv(encode_command(cmd), 0x03)
        self._send_pdv(encode(identifier, False, True), 0x02)

    def cancel(self, message_id: int = 7) -> None:
        cmd = Dataset()
        cmd.CommandField, cmd.MessageIDBeingRespondedTo, cmd.CommandDataSetType = 0x0FFF, message_id, 0x0101
        self._send_pdv(encode_command(cmd), 0x03)

    def _send_pdv(self, data: bytes, control: int) -> None:
        pdv = struct.pack(">IBB", len(data) + 2, 1, control) + data
        self.sock.sendall(struct.pack(">BBI", 4, 0, len(pdv)) + pdv)

    def response(self) -> tuple[int, Dataset | None]:
        """(status, identifier) of the next C-FIND response."""
        _, body = self.read_pdu()
        cmd = decode(BytesIO(body[6:]), True, True)
        if cmd.CommandDataSetType == 0x0101:
            return int(cmd.Status), None
        _, body = self.read_pdu()
        return int(cmd.Status), decode(BytesIO(body[6:]), False, True)


def test_c_cancel_between_matches_ends_the_query_with_cancel(tmp_path):
    cancel_sent = threading.Event()
    produced: list[str] = []

    def provider(identifier: Dataset, calling_ae: str) -> Iterator[Dataset]:
        for i, name in enumerate(NAMES):
            if i == 1:
                assert cancel_sent.wait(10)
            produced.append(name)
            yield match(name)
    srv = server_with(tmp_path, provider)
    try:
        raw = RawFind(srv.port)
        raw.find(Dataset())
        status, first = raw.response()
        assert (status, first.PatientName) == (0xFF00, NAMES[0])
        raw.cancel()
        cancel_sent.set()
        assert raw.response() == (0xFE00, None)
        raw.abort()
    finally:
        srv.stop(grace=2)
    assert len(produced) == 2, "the match made after the C-CANCEL is not sent"


@pytest.mark.parametrize("fail_after", [0, 2])
def test_a_failing_provider_is_answered_unable_to_process_and_logged(tmp_path, caplog, fail_after):
    def provider(identifier: Dataset, calling_ae: str) -> Iterator[Dataset]:
        yield from (match(n) for n in NAMES[:fail_after])
        raise RuntimeError("worklist database unreachable")
    srv = server_with(tmp_path, provider)
    try:
        raw = RawFind(srv.port)
        raw.find(Dataset())
        statuses = [raw.response()[0] for _ in range(fail_after + 1)]
        raw.find(Dataset(), message_id=8)      # the association goes on
        assert raw.response()[0] == (0xFF00 if fail_after else 0xC000)
        raw.abort()
    finally:
        srv.stop(grace=2)
    assert statuses == [0xFF00] * fail_after + [0xC000]
    assert f"C-FIND from PYNETDICOM failed after {fail_after} match(es): RuntimeError" in caplog.text


def test_an_undecodable_identifier_is_answered_and_the_association_goes_on(tmp_path, caplog):
    srv = server_with(tmp_path, lambda identifier, ae: iter([match(NAMES[0])]))
    try:
        raw = RawFind(srv.port)
        cmd = Dataset()
        cmd.AffectedSOPClassUID = MWL
        cmd.CommandField, cmd.MessageID, cmd.Priority, cmd.CommandDataSetType = 0x0020, 3, 0, 0x0000
        raw._send_pdv(encode_command(cmd), 0x03)
        # a sequence whose item is longer than what follows it
        raw._send_pdv(b"\x08\x00\x16\x00SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\x10\x00\x00\x00" + b"\x01" * 8, 0x02)
        assert raw.response() == (0xC000, None)
        raw.find(Dataset())
        assert raw.response()[0] == 0xFF00
        raw.abort()
    finally:
        srv.stop(grace=2)
    assert "C-FIND from PYNETDICOM (127.0.0.1:" in caplog.text and "undecodable identifier" in caplog.text
