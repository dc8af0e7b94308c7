"""The node against real dcmtk peers on loopback: what a scanner sends is what the node keeps."""
from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select

from neuropetrix.store.db import open_database
from neuropetrix.store.models import Event, Instance, Study
from tests.conftest import dcmtk, storescu
from tests.support.dicomfiles import dataset_bytes
from tests.support.nodeproc import running_node
from tests.support.synthetic import StudySpec, write_petct_study


def stored_path(node, path: Path) -> Path:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return node.data_dir / "storage" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"


def studies(node) -> list[dict]:
    result = node.cli("studies", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_echo_from_known_caller_and_refusal_of_unknown(tmp_path):
    with running_node(tmp_path) as node:
        ok = dcmtk("echoscu", "-aet", "STORESCU", "-aec", node.ae_title, "127.0.0.1", str(node.dicom_port))
        assert ok.returncode == 0, ok.stderr
        refused = dcmtk("echoscu", "-aet", "INTRUDER", "-aec", node.ae_title, "127.0.0.1", str(node.dicom_port))
        assert refused.returncode != 0
        assert "Calling AE Title Not Recognized" in refused.stderr
        wrong_called = dcmtk("echoscu", "-aet", "STORESCU", "-aec", "SOMEONE", "127.0.0.1", str(node.dicom_port))
        assert wrong_called.returncode != 0
        # the node goes on serving after refusals
        assert dcmtk("echoscu", "-aet", "STORESCU", "-aec", node.ae_title, "127.0.0.1",
                     str(node.dicom_port)).returncode == 0
        log = node.log_text()
    assert "refused association from INTRUDER (127.0.0.1:" in log
    assert "calling AE title not recognised" in log


def test_unknown_callers_accepted_when_configured(tmp_path):
    with running_node(tmp_path, {"node": {"accept_unknown_callers": True}}) as node:
        ok = dcmtk("echoscu", "-aet", "ANYBODY", "-aec", node.ae_title, "127.0.0.1", str(node.dicom_port))
        assert ok.returncode == 0, ok.stderr


def test_study_stored_byte_for_byte_indexed_and_completed(tmp_path, small_study):
    spec, files = small_study
    with running_node(tmp_path) as node:
        sent = storescu(node.dicom_port, files[0].parent.parent)
        assert sent.returncode == 0, sent.stderr
        for f in files:
            kept = stored_path(node, f)
            assert kept.is_file(), f"{f.name} was acknowledged but not stored"
            assert dataset_bytes(kept) == dataset_bytes(f), f"{f.name} changed on the way in"
            meta = pydicom.dcmread(kept, stop_before_pixels=True).file_meta
            assert meta.SourceApplicationEntityTitle == "STORESCU"
        rows = wait_for(lambda: [s for s in studies(node) if s["state"] == "complete"], what="completion")
        log = node.log_text()
    assert len(rows) == 1
    row = rows[0]
    assert row["study_uid"] == spec.study_uid
    assert row["patient_id"] == spec.patient_id and row["patient_name"] == spec.patient_name
    assert row["modalities"] == ["CT", "PT"] and row["series"] == 2 and row["instances"] == len(files)
    assert "association from STORESCU (127.0.0.1:" in log and f"released: {len(files)} stored" in log
    assert spec.patient_name not in log and "YILMAZ" not in log, "patient name logged at INFO/WARNING"
    assert spec.patient_id not in log, "patient ID logged at INFO/WARNING"
    assert f"study {spec.study_uid} complete (quiet time): 2 series (CT, PT), {len(files)} instances" in log


def test_several_scanners_at_once(tmp_path):
    folders = []
    for i in range(3):
        spec, files = write_petct_study(tmp_path / f"study{i}", StudySpec(ct_slices=8, pet_slices=8,
                                                                          patient_id=f"P{i}"))
        folders.append((spec, files))
    with running_node(tmp_path / "node") as node:
        results: list = [None] * len(folders)

        def send(i: int) -> None:
            results[i] = storescu(node.dicom_port, tmp_path / f"study{i}")
        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(folders))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
        for _, files in folders:
            for f in files:
                assert dataset_bytes(stored_path(node, f)) == dataset_bytes(f)
        by_uid = {s["study_uid"]: s for s in studies(node)}
    assert {spec.study_uid for spec, _ in folders} == set(by_uid)
    assert all(by_uid[spec.study_uid]["instances"] == 16 for spec, _ in folders)


def test_duplicate_stored_once(tmp_path, small_study):
    _, files = small_study
    with running_node(tmp_path) as node:
        assert storescu(node.dicom_port, files[0]).returncode == 0
        first = stored_path(node, files[0]).stat()
        again = storescu(node.dicom_port, files[0])
        assert again.returncode == 0, "a duplicate must be acknowledged, not refused"
        assert stored_path(node, files[0]).stat().st_ino == first.st_ino, "the first copy must be kept"
        engine, sessions = open_database(f"sqlite:///{node.data_dir / 'neuropetrix.db'}")
        with sessions() as s:
            assert s.scalar(select(func.count(Instance.id))) == 1
        engine.dispose()
        assert "duplicate" in node.log_text()


def test_dataset_without_uids_refused_rest_of_study_lands(tmp_path, small_study):
    _, files = small_study
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    ds = pydicom.dcmread(files[0])
    del ds.StudyInstanceUID
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(broken_dir / "nostudyuid.dcm")
    bad_uid = pydicom.dcmread(files[1])
    bad_uid.SeriesInstanceUID = "../../../etc/passwd"
    bad_uid.SOPInstanceUID = pydicom.uid.generate_uid()
    bad_uid.file_meta.MediaStorageSOPInstanceUID = bad_uid.SOPInstanceUID
    bad_uid.save_as(broken_dir / "baduid.dcm")
    with running_node(tmp_path / "node") as node:
        sent = storescu(node.dicom_port, broken_dir / "nostudyuid.dcm", broken_dir / "baduid.dcm",
                        *files[2:], options=("--no-halt", "-v"))
        assert sent.stderr.count("Received Store Response (Error") == 2, sent.stderr
        for f in files[2:]:
            assert dataset_bytes(stored_path(node, f)) == dataset_bytes(f)
        assert not list((node.data_dir / "storage" / ".incoming").rglob("*.part"))
        assert not (tmp_path / "etc").exists() and not (node.data_dir / "etc").exists()
        log = node.log_text()
    assert "StudyInstanceUID is missing" in log
    assert "'../../../etc/passwd' is not a valid UID" in log
    assert f"released: {len(files) - 2} stored (" in log and "2 failed" in log


def test_reopened_study_completes_again_and_survives_restart(tmp_path, small_study):
    spec, files = small_study
    with running_node(tmp_path, {"node": {"study_quiet_seconds": 1}}) as node:
        assert storescu(node.dicom_port, *files[:-1]).returncode == 0
        wait_for(lambda: studies(node)[0]["state"] == "complete", what="first completion")
        assert storescu(node.dicom_port, files[-1]).returncode == 0
        wait_for(lambda: studies(node)[0]["instances"] == len(files) and studies(node)[0]["state"] == "complete",
                 what="second completion")
        config = node.config
        assert node.stop() == 0, "SIGTERM must end the node with status 0"
        assert "stopped" in node.log_text()
    with running_node(tmp_path, config=config) as node:
        rows = studies(node)
        assert [(r["study_uid"], r["instances"]) for r in rows] == [(spec.study_uid, len(files))]
        engine, sessions = open_database(f"sqlite:///{node.data_dir / 'neuropetrix.db'}")
        with sessions() as s:
            kinds = [k for k in s.scalars(select(Event.kind).where(Event.study_uid == spec.study_uid)
                                          .order_by(Event.id))]
            count = s.scalar(select(Study.completion_count))
        engine.dispose()
    assert kinds == ["study.received", "study.complete", "study.reopened", "study.complete"]
    assert count == 2


def test_sigterm_finishes_the_transfer_in_hand(tmp_path):
    spec, files = write_petct_study(tmp_path / "big", StudySpec(ct_slices=150, pet_slices=0))
    with running_node(tmp_path / "node") as node:
        sender = threading.Thread(target=lambda: storescu(node.dicom_port, tmp_path / "big"))
        sender.start()
        wait_for(lambda: (node.data_dir / "storage" / spec.study_uid).exists(), what="first instance")
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(30) == 0
        sender.join()
        log = node.log_text()
        stored = list((node.data_dir / "storage" / spec.study_uid).rglob("*.dcm"))
        assert not list((node.data_dir / "storage" / ".incoming").rglob("*.part")), "a partial file was left"
        for kept in stored:   # every file kept is whole
            number = pydicom.dcmread(kept, stop_before_pixels=True).InstanceNumber
            assert dataset_bytes(kept) == dataset_bytes(tmp_path / "big" / "CT" / f"CT{number:04d}.dcm")
    assert 0 < len(stored) < len(files), "the test must stop the node mid-study"
    assert "refusing new associations" in log and "stopped" in log
