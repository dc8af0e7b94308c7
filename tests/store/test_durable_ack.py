"""When a C-STORE is answered: after the instance's data and its name are on disk, before its index
row is written (a row lost then is rebuilt from the file), and what happens when the row fails; a
file named before its data was flushed, cut short by a crash, is told from a whole one by its seal."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy.exc import OperationalError

from neuropetrix.node.scp import association
from neuropetrix.node.scp.policy import AcceptancePolicy, ServerLimits
from neuropetrix.node.scp.server import DicomServer
from neuropetrix.node.scp.wire import RELEASE_RP_PDU
from neuropetrix.store import files as files_module
from neuropetrix.store import ingest
from neuropetrix.store.db import open_database
from neuropetrix.store.files import CHECKSUM_XATTR, FileStore, TempFile
from neuropetrix.store.index import InstanceRecord, StudyIndex
from neuropetrix.store.ingest import Ingest
from neuropetrix.store.recovery import reindex_since
from tests.conftest import storescu
from tests.node.test_scp_faults import nothing_in_incoming, pynetdicom_association, stored
from tests.support.dicomfiles import dataset_bytes
from tests.support.rawdicom import RawAssociation


class RecordingFiles(FileStore):
    """Storage that notes when an instance's data and its name are made durable."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=True)
        self.events: list[str] = []

    def sync_file(self, temp: TempFile) -> None:
        super().sync_file(temp)
        self.events.append("data")

    def sync_dir(self, relative: str) -> None:
        super().sync_dir(relative)
        self.events.append(f"name {relative}")


class GatedIndex(StudyIndex):
    """An index whose row writes wait until the test lets them through."""

    def __init__(self, sessions) -> None:
        super().__init__(sessions)
        self.gate = threading.Event()
        self.written = threading.Event()

    def add_many(self, records: list[InstanceRecord]) -> int:
        self.gate.wait(10)
        added = super().add_many(records)
        self.written.set()
        return added


class FailingIndex(StudyIndex):
    """An index whose next row write fails (the database locked past its timeout)."""

    failures = 1

    def add_many(self, records: list[InstanceRecord]) -> int:
        if self.failures:
            self.failures -= 1
            raise OperationalError("INSERT INTO instances", {}, Exception("database is locked"))
        return super().add_many(records)


def serve(tmp_path: Path, files: FileStore, index_class: type[StudyIndex]) -> tuple[DicomServer, StudyIndex]:
    _, sessions = open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    index = index_class(sessions)
    policy = AcceptancePolicy("NEUROPETRIX", frozenset({"STORESCU", "PYNETDICOM"}))
    server = DicomServer("127.0.0.1", 0, policy, Ingest(files, index), ServerLimits(network_timeout=20.0))
    server.start()
    return server, index


def store_all(tmp_path: Path, files: FileStore, index_class: type[StudyIndex],
              paths: list[Path]) -> tuple[DicomServer, StudyIndex]:
    """Send `paths` with storescu to a server over `files`, stop it, check every file is stored as sent."""
    srv, index = serve(tmp_path, files, index_class)
    try:
        result = storescu(srv.port, *paths)
    finally:
        srv.stop(grace=2)
    assert result.returncode == 0, result.stderr
    assert all(dataset_bytes(stored(files, f)) == dataset_bytes(f) for f in paths)
    return srv, index


def test_answer_comes_once_data_and_name_are_durable_before_the_index_row(tmp_path, small_study):
    _, sent = small_study
    ct = next(f for f in sent if f.name.startswith("CT"))
    sop, encoded = pydicom.dcmread(ct, stop_before_pixels=True).SOPInstanceUID, dataset_bytes(ct)
    files = RecordingFiles(tmp_path / "storage")
    srv, index = serve(tmp_path, files, GatedIndex)
    try:
        raw = RawAssociation(srv.port, CTImageStorage, ExplicitVRLittleEndian)
        raw.sock.settimeout(5)      # an answer that waited for the gated row would come after 10 s
        assert raw.store_status(sop, encoded) == 0x0000
        rel = stored(files, ct).relative_to(files.root).as_posix()
        # sealed, the file is named first and both flushes run at once: both done before the answer
        assert sorted(files.events) == ["data", f"name {rel}"], "answered before the file and its name were durable"
        assert dataset_bytes(stored(files, ct)) == encoded
        assert FileStore.intact(stored(files, ct)) and os.getxattr(stored(files, ct), CHECKSUM_XATTR)
        assert not index.contains(sop), "the row is written after the answer, not before"
        index.gate.set()
        assert index.written.wait(10)
        assert index.contains(sop)
        raw.abort()
    finally:
        index.gate.set()
        srv.stop(grace=2)


def test_a_row_that_fails_after_the_answer_keeps_the_file_for_recovery(tmp_path, small_study, caplog):
    _, sent = small_study
    ct = [f for f in sent if f.name.startswith("CT")][:2]
    files = FileStore(tmp_path / "storage")
    srv, index = store_all(tmp_path, files, FailingIndex, ct)    # both acknowledged: both files are durable
    first, second = (pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in ct)
    assert not index.contains(first) and index.contains(second)
    assert srv.ingest.unindexed == 1                       # the run marker is kept for it (runtime.stop)
    assert f"indexing {first} failed; its file is stored and the next start re-indexes it" in caplog.text
    assert reindex_since(files, index, since=0.0) == 1     # what the next start does
    assert index.contains(first)


class NamedTemps(FileStore):
    """Storage on a file system without nameless files (NFS): named `.part` files instead."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.nameless = False


def test_without_nameless_files_named_temporary_files_are_used_and_removed(tmp_path, small_study):
    _, sent = small_study
    files = NamedTemps(tmp_path / "storage")
    _, index = store_all(tmp_path, files, StudyIndex, sent)
    assert all(index.contains(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in sent)
    assert nothing_in_incoming(files)


def test_a_stored_file_without_a_row_is_swapped_for_the_copy_received(tmp_path, small_study):
    _, sent = small_study
    ct = next(f for f in sent if f.name.startswith("CT"))
    files = FileStore(tmp_path / "storage")
    leftover = stored(files, ct)          # an interrupted run's file, or one whose row failed
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"left by an earlier run")
    _, index = store_all(tmp_path, files, StudyIndex, [ct])
    assert index.contains(pydicom.dcmread(ct, stop_before_pixels=True).SOPInstanceUID)
    assert [p.name for p in leftover.parent.iterdir()] == [leftover.name], "no side file left"


def test_recovery_removes_the_side_name_of_a_swap_a_crash_interrupted(tmp_path, small_study):
    _, sent = small_study
    files = FileStore(tmp_path / "storage")
    _, index = store_all(tmp_path, files, StudyIndex, sent[:1])
    kept = stored(files, sent[0])
    side = kept.with_name(f".{kept.name}.0123abcd.part")     # linked, not yet renamed over the instance
    side.write_bytes(kept.read_bytes())
    assert reindex_since(files, index, since=0.0) == 0
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]


class NoAttributes(RecordingFiles):
    """Storage on a file system that keeps no extended attributes."""

    def seal(self, temp: TempFile, crc: int, size: int) -> None:
        self.sealing = False


def test_unsealed_files_have_their_data_flushed_before_their_name(tmp_path, small_study):
    _, sent = small_study
    files = NoAttributes(tmp_path / "storage")
    store_all(tmp_path, files, StudyIndex, sent[:2])
    names = [f"name {stored(files, f).relative_to(files.root).as_posix()}" for f in sent[:2]]
    assert files.events == ["data", names[0], "data", names[1]]


def test_a_copy_replacing_a_file_without_a_row_is_flushed_before_it_takes_the_name(tmp_path, small_study):
    _, sent = small_study
    ct = next(f for f in sent if f.name.startswith("CT"))
    files = RecordingFiles(tmp_path / "storage")
    leftover = stored(files, ct)        # may be an acknowledged instance whose row failed: never swapped for
    leftover.parent.mkdir(parents=True)  # a copy that is not yet on disk
    leftover.write_bytes(b"left by an earlier run")
    store_all(tmp_path, files, StudyIndex, [ct])
    assert files.events == ["data", f"name {leftover.relative_to(files.root).as_posix()}"]


def test_recovery_removes_a_sealed_file_cut_short_and_the_resent_copy_is_stored(tmp_path, small_study):
    _, sent = small_study
    files = FileStore(tmp_path / "storage")
    _, index = store_all(tmp_path, files, StudyIndex, sent[:2])
    cut, whole = stored(files, sent[0]), stored(files, sent[1])
    # what a power cut between the link and the flushes leaves: the name, part of the data, the seal
    sop = pydicom.dcmread(cut, stop_before_pixels=True).SOPInstanceUID
    with open(cut, "r+b") as fp:
        fp.truncate(cut.stat().st_size // 2)
    assert os.getxattr(cut, CHECKSUM_XATTR), "the seal stays with the file"
    with index.engine.begin() as conn:          # never acknowledged: no row
        conn.exec_driver_sql("DELETE FROM instances WHERE sop_instance_uid = ?", (sop,))
    assert not FileStore.intact(cut) and FileStore.intact(whole)
    assert reindex_since(files, index, since=0.0) == 0
    assert not cut.exists() and whole.exists()
    assert not index.contains(sop)
    _, index = store_all(tmp_path, files, StudyIndex, sent[:1])      # the scanner sends it again
    assert index.contains(sop) and dataset_bytes(cut) == dataset_bytes(sent[0])


class FailingSecondCommit(StudyIndex):
    """An index whose second commit fails (the database locked past its timeout), whatever it holds:
    with instances coming back to back, a group of rows."""

    commits = 0

    def add_many(self, records: list[InstanceRecord]) -> int:
        self.commits += 1
        if self.commits == 2:
            self.failed = [rec.sop_instance_uid for rec in records]
            raise OperationalError("INSERT INTO instances", {}, Exception("database is locked"))
        return super().add_many(records)


def test_a_failed_group_commit_leaves_every_file_of_it_for_recovery(tmp_path, small_study, caplog):
    _, sent = small_study
    ct = sorted(f for f in sent if f.name.startswith("CT"))
    files = FileStore(tmp_path / "storage")
    srv, index = store_all(tmp_path, files, FailingSecondCommit, ct)    # all acknowledged, all stored
    sops = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in ct]
    missing = [sop for sop in sops if not index.contains(sop)]
    assert missing and sorted(missing) == sorted(index.failed)
    assert srv.ingest.unindexed == len(missing)           # the run marker is kept for them (runtime.stop)
    assert f"indexing {', '.join(index.failed)} failed" in caplog.text
    assert reindex_since(files, index, since=0.0) == len(missing)
    assert all(index.contains(sop) for sop in sops)


class NotedRows(StudyIndex):
    """An index that notes each commit of rows (how many) in `events`."""

    events: list = []

    def add_many(self, records: list[InstanceRecord]) -> int:
        added = super().add_many(records)
        self.events.append(("rows", len(records)))
        return added


def test_rows_held_for_a_group_commit_are_written_before_the_release_is_answered(tmp_path, small_study,
                                                                                 monkeypatch):
    monkeypatch.setattr(association, "ROWS_WAIT_S", 30.0)    # the peer never seems idle,
    monkeypatch.setattr(ingest, "ROW_GROUP", 1000)           # and no group fills: only the release writes them
    events: list = []
    monkeypatch.setattr(NotedRows, "events", events)
    send = association.Association._send
    monkeypatch.setattr(association.Association, "_send", lambda self, data: (
        events.append("A-RELEASE-RP") if data == RELEASE_RP_PDU else None, send(self, data)))
    _, sent = small_study
    ct = sorted(f for f in sent if f.name.startswith("CT"))
    srv, index = serve(tmp_path, FileStore(tmp_path / "storage"), NotedRows)
    try:
        assoc = pynetdicom_association(srv.port)
        assert all(assoc.send_c_store(pydicom.dcmread(f)).Status == 0x0000 for f in ct)
        assoc.release()
    finally:
        srv.stop(grace=2)
    # the first instance's row made its series known at once; the other nine waited for the release
    assert events == [("rows", 1), ("rows", len(ct) - 1), "A-RELEASE-RP"]
    assert all(index.contains(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in ct)


def test_a_new_folder_is_taken_by_a_second_association_only_once_its_parents_are_flushed(tmp_path, monkeypatch):
    files = FileStore(tmp_path / "storage")
    folder = files.root / "1.2.3" / "1.2.3.4"
    order: list[str] = []
    flushing, release = threading.Event(), threading.Event()
    flush = files_module.fsync_dir

    def slow_fsync_dir(path: Path) -> None:     # the first association's flush of the new folder's parents
        if threading.current_thread().name == "first":
            flushing.set()
            release.wait(10)
        flush(path)
        order.append(f"{threading.current_thread().name} flushed {path.name}")
    monkeypatch.setattr(files_module, "fsync_dir", slow_fsync_dir)
    first = threading.Thread(target=files._ensure_dir, args=(folder,), name="first")
    first.start()
    assert flushing.wait(10)
    second = threading.Thread(target=lambda: (files._ensure_dir(folder), order.append("second took it")),
                              name="second")
    second.start()
    second.join(0.2)              # room to run ahead, were it not held until the flushes are done
    release.set()
    first.join(10)
    second.join(10)
    assert order == ["first flushed 1.2.3", "first flushed storage", "second took it"]
