"""The SCP in-process under hostile or broken input: it answers with a status, logs the cause and
keeps serving everyone else."""
from __future__ import annotations

import logging
import os
import socket
import struct
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from neuropetrix import metrics
from neuropetrix.node.scp.policy import AcceptancePolicy, ServerLimits
from neuropetrix.node.scp.server import DicomServer
from neuropetrix.node.scp.wire import ABORT
from neuropetrix.store.db import open_database
from neuropetrix.store.files import FileStore, TempFile
from neuropetrix.store.index import StudyIndex
from neuropetrix.store.ingest import Ingest
from tests.conftest import storescu
from tests.support.dicomfiles import dataset_bytes
from tests.support.rawdicom import RawAssociation


class FullDisk(FileStore):
    """Storage whose disk is full while `full` is set: writes land on /dev/full (ENOSPC)."""

    full = True

    def new_temp(self) -> TempFile:
        if self.full:
            return TempFile(os.open("/dev/full", os.O_RDWR))
        return super().new_temp()


def receiving(files: FileStore) -> int:
    """How many temporary files in `files.incoming` this process holds open (nameless ones have no
    directory entry to count): files being received, or leaked."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(str(files.incoming.absolute()) + "/")
    return count


def nothing_in_incoming(files: FileStore, within: float = 5.0) -> bool:
    """No partial file left behind: neither a name in `incoming` nor an open nameless file, once the
    associations have ended (`within` seconds: an association also holds the empty file it opened
    for its next instance until it ends)."""
    deadline = time.monotonic() + within
    while list(files.incoming.iterdir()) or receiving(files):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def make_server(tmp_path: Path, files_class=FileStore, **limits) -> tuple[DicomServer, FileStore]:
    _, sessions = open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    files = files_class(tmp_path / "storage")
    policy = AcceptancePolicy("NEUROPETRIX", frozenset({"STORESCU", "PYNETDICOM"}))
    server = DicomServer("127.0.0.1", 0, policy, Ingest(files, StudyIndex(sessions)),
                         ServerLimits(**limits))
    server.start()
    return server, files


@pytest.fixture
def server(tmp_path):
    srv, files = make_server(tmp_path, acse_timeout=1.0, network_timeout=2.0, max_associations=4)
    yield srv, files
    srv.stop(grace=2)


def stored(files: FileStore, path: Path) -> Path:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return files.root / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"


def pynetdicom_association(port: int):
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(CTImageStorage, [pydicom.uid.ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="NEUROPETRIX")
    assert assoc.is_established
    return assoc


def test_unparseable_dataset_gets_failure_status_and_association_goes_on(server, small_study, caplog):
    srv, files = server
    _, sent = small_study
    ct = [f for f in sent if f.name.startswith("CT")]
    caplog.set_level(logging.INFO)
    raw = RawAssociation(srv.port, CTImageStorage, ExplicitVRLittleEndian)
    sop = generate_uid()
    # a sequence of undefined length whose item ends before its declared length: undecodable
    garbage = (b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 192" + b"\x08\x00\x16\x00SQ\x00\x00\xff\xff\xff\xff"
               + b"\xfe\xff\x00\xe0\x10\x00\x00\x00" + b"\x01" * 8)
    assert raw.store_status(sop, garbage) == 0xC000
    # the association goes on: the rest is stored
    assert [raw.store_status(pydicom.dcmread(f).SOPInstanceUID, dataset_bytes(f)) for f in ct] == [0] * len(ct)
    raw.abort()
    assert all(dataset_bytes(stored(files, f)) == dataset_bytes(f) for f in ct)
    assert f"rejected {sop} from PYNETDICOM" in caplog.text
    assert "cannot parse the dataset" in caplog.text


def test_silent_garbage_and_aborting_connections_do_not_starve_a_scanner(server, small_study, caplog):
    srv, files = server
    _, sent = small_study
    caplog.set_level(logging.INFO)
    silent = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(6)]
    garbage = socket.create_connection(("127.0.0.1", srv.port))
    garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(256))

    # a caller that aborts mid-dataset: command and half a dataset, then A-ABORT
    aborting = RawAssociation(srv.port, CTImageStorage, ExplicitVRLittleEndian)
    aborting.send_store(generate_uid(), os.urandom(5000), last=False)
    time.sleep(0.2)
    aborting.abort()

    result = storescu(srv.port, *sent)
    assert result.returncode == 0, result.stderr
    assert all(dataset_bytes(stored(files, f)) == dataset_bytes(f) for f in sent)
    time.sleep(1.5)   # past acse_timeout: the silent connections are dropped
    for s in silent:
        s.settimeout(2)
        received = s.recv(16)
        assert received in (b"", bytes.fromhex("07000000000400000200")), received   # closed, or A-ABORT
        assert s.recv(16) == b"", "a silent connection must be closed by the node"
        s.close()
    garbage.close()
    assert nothing_in_incoming(files), "the aborted transfer left a partial file"
    assert "expected A-ASSOCIATE-RQ" in caplog.text
    assert "ended mid-transfer" in caplog.text
    assert "closed before association" in caplog.text or "silent for too long" in caplog.text


def test_association_limit_refuses_politely(tmp_path, small_study):
    srv, _ = make_server(tmp_path, max_associations=1)
    try:
        first = pynetdicom_association(srv.port)
        second = AE(ae_title="PYNETDICOM")
        second.add_requested_context(CTImageStorage)
        refused = second.associate("127.0.0.1", srv.port, ae_title="NEUROPETRIX")
        assert refused.is_rejected
        first.release()
        time.sleep(0.2)
        assert storescu(srv.port, small_study[1][0]).returncode == 0
    finally:
        srv.stop(grace=2)


def refused(status: str) -> float:
    return metrics.INSTANCES_REFUSED.labels(status)._value.get()


def test_full_disk_answers_out_of_resources_and_recovers(tmp_path, small_study, caplog):
    srv, files = make_server(tmp_path, files_class=FullDisk)
    refused_before = refused("0xA700")
    _, sent = small_study
    caplog.set_level(logging.INFO)
    try:
        assoc = pynetdicom_association(srv.port)
        try:
            ct = [f for f in sent if f.name.startswith("CT")]
            status = assoc.send_c_store(ct[0])
            assert status.Status == 0xA700
            FullDisk.full = False
            assert assoc.send_c_store(ct[1]).Status == 0
        finally:
            assoc.release()
            FullDisk.full = True
        assert not stored(files, ct[0]).exists()
        assert dataset_bytes(stored(files, ct[1])) == dataset_bytes(ct[1])
        assert "out of storage space" in caplog.text
        assert refused("0xA700") == refused_before + 1      # what /metrics shows operators
    finally:
        srv.stop(grace=2)


def test_shutdown_refuses_new_associations(tmp_path, small_study):
    srv, _ = make_server(tmp_path)
    srv.stop(grace=1)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).recv(1)


def test_stop_has_one_deadline_for_all_associations(tmp_path):
    srv, files = make_server(tmp_path, network_timeout=30.0)
    stuck = [RawAssociation(srv.port, CTImageStorage, ExplicitVRLittleEndian) for _ in range(4)]
    for raw in stuck:     # an instance in hand that never finishes
        raw.send_store(generate_uid(), os.urandom(5000), last=False)
    deadline = time.monotonic() + 10
    while receiving(files) < len(stuck) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert receiving(files) == len(stuck), "each instance in hand is being written"
    started = time.monotonic()
    srv.stop(grace=1.0)
    took = time.monotonic() - started
    assert took < 2.5, f"stop took {took:.1f} s: the grace must be one deadline, not one per association"
    for raw in stuck:
        raw.sock.settimeout(5)
        assert raw.sock.recv(16) == b"", "a cut-off association must be closed"
    while srv.active_associations and time.monotonic() < deadline:
        time.sleep(0.02)
    assert nothing_in_incoming(files), "an unanswered instance must not be kept"


def test_idle_association_is_aborted_after_the_dimse_timeout(tmp_path, caplog):
    srv, _ = make_server(tmp_path, dimse_timeout=0.3, network_timeout=30.0)
    try:
        raw = RawAssociation(srv.port, CTImageStorage, ExplicitVRLittleEndian)
        raw.sock.settimeout(10)
        pdu_type, _ = raw.read_pdu()    # nothing sent after the association: the node gives up
        assert pdu_type == ABORT
    finally:
        srv.stop(grace=1)
    assert "silent for too long" in caplog.text


def pixel_data_at(encoded: bytes) -> tuple[int, int]:
    """(offset, declared length) of an Explicit VR Little Endian Pixel Data element."""
    at = encoded.rindex(b"\xe0\x7f\x10\x00")
    return at, struct.unpack_from("<I", encoded, at + 8)[0]


@pytest.mark.faults
def test_truncated_datasets_are_refused_not_acknowledged(server, small_study, caplog):
    srv, files = server
    _, sent = small_study
    ct = next(f for f in sent if f.name.startswith("CT"))
    encoded, sop = dataset_bytes(ct), pydicom.dcmread(ct).SOPInstanceUID
    at, length = pixel_data_at(encoded)
    assert at + 12 + length == len(encoded)
    inside_name = encoded.index(b"\x10\x00\x10\x00") + 9            # within Patient's Name's value
    raw = RawAssociation(srv.port, CTImageStorage, ExplicitVRLittleEndian)
    assert raw.store_status(sop, encoded[:inside_name]) == 0xC000
    assert raw.store_status(sop, encoded[:at + 12 + length // 2]) == 0xC000    # half the Pixel Data
    assert raw.store_status(sop, encoded[:at + 6]) == 0xC000                    # inside its header
    assert not stored(files, ct).exists()
    assert raw.store_status(sop, encoded) == 0x0000                             # the whole one is kept
    raw.abort()
    assert dataset_bytes(stored(files, ct)) == encoded
    assert f"declares {length} bytes, {length // 2} arrived" in caplog.text
    assert nothing_in_incoming(files)
