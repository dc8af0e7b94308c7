"""Query/Retrieve C-MOVE and C-GET of what the node holds, asked by dcmtk movescu and getscu.

A PET/CT study arrives by storescu and one derived object of ours (an encapsulated PDF in the study's
results folder) lies beside it. C-MOVE sends to a dcmtk storescp configured as a peer; C-GET brings
the instances back on getscu's own association. What arrived is compared with what was sent, byte for
byte (the dataset after the file meta, which each receiver writes its own), and the sub-operation
counts and final statuses dcmtk reports are asserted.
"""
from __future__ import annotations

import re
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import CTImageStorage
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as STUDY_ROOT_GET

from neuropetrix.config.settings import Peer
from neuropetrix.engine.query_retrieve import providers, retrieve_providers
from neuropetrix.node.scp.policy import AcceptancePolicy, ServerLimits
from neuropetrix.node.scp.server import DicomServer
from neuropetrix.node.scp.wire import split_file
from neuropetrix.store.db import open_database
from neuropetrix.store.files import FileStore
from neuropetrix.store.index import StudyIndex
from neuropetrix.store.ingest import Ingest
from tests.conftest import dcmtk, storescu
from tests.support.nodeproc import free_port
from tests.support.peers import storescp as dcmtk_storescp
from tests.support.synthetic import StudySpec, write_petct_study

SMALL = dict(ct_slices=3, pet_slices=4, ct_matrix=32, pet_matrix=16)
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def _pdf_object(spec: StudySpec, path: Path) -> str:
    """An encapsulated PDF of the study, as the report writer leaves one in results/<study>/."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ENCAPSULATED_PDF, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = ENCAPSULATED_PDF, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = spec.study_uid, generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = spec.patient_id, spec.patient_name, "DOC"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4 report\n%%EOF\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds.SOPInstanceUID


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory):
    """(node, spec, {SOP Instance UID: dataset bytes} of everything it holds of the study, storescp port)."""
    root = tmp_path_factory.mktemp("retrieve")
    spec, paths = write_petct_study(root / "study", StudySpec(**SMALL))
    results = root / "node" / "results"
    pdf_uid = _pdf_object(spec, results / spec.study_uid / "report.dcm")
    _, sessions = open_database(f"sqlite:///{root / 'node' / 'db.sqlite'}")
    storage = root / "node" / "storage"
    ingest = Ingest(FileStore(storage), StudyIndex(sessions))
    store_port = free_port()
    peer = Peer(name="viewer", ae_title="STORESCP", host="127.0.0.1", port=store_port)
    down = Peer(name="down", ae_title="DOWN", host="127.0.0.1", port=free_port())     # nothing listens
    server = DicomServer("127.0.0.1", 0, AcceptancePolicy("NEUROPETRIX", frozenset({"STORESCU", "VIEWER"})),
                         ingest, ServerLimits(network_timeout=10),
                         find_providers=providers(sessions, "NEUROPETRIX", results),
                         retrieve_providers=retrieve_providers(sessions, storage, results),
                         move_destinations={peer.ae_title: peer, down.ae_title: down})
    server.start()
    sent = storescu(server.port, root / "study")
    assert sent.returncode == 0, sent.stderr
    expected = {}
    for path in [*paths, results / spec.study_uid / "report.dcm"]:
        meta, dataset = split_file(path.read_bytes())
        expected[meta[0x0003]] = bytes(dataset)
    originals = {uid: path for uid, path in zip(expected, [*paths, results / spec.study_uid / "report.dcm"])}
    yield server, spec, expected, store_port, pdf_uid, originals
    server.stop(grace=2)


def _arrived(folder: Path) -> dict[str, bytes]:
    out = {}
    for path in folder.iterdir():
        meta, dataset = split_file(path.read_bytes())
        out[meta[0x0003]] = bytes(dataset)
    return out


def _same_content(folder: Path, originals: dict[str, Path]) -> set[str]:
    """The SOP Instance UIDs in `folder`, each asserted equal, element by element and pixel for
    pixel, to the file sent (C-GET re-encodes to the transfer syntax the requestor accepted)."""
    seen = set()
    for path in folder.iterdir():
        got = pydicom.dcmread(path)
        sent = pydicom.dcmread(originals[got.SOPInstanceUID])
        assert got == sent and got.get("PixelData") == sent.get("PixelData")
        assert str(got.PatientName) == str(sent.PatientName)      # Turkish letters survive the re-encoding
        seen.add(got.SOPInstanceUID)
    return seen


def _final(output: str) -> tuple[str, dict[str, int]]:
    """The final response's status and its sub-operation counts, from a dcmtk tool's -d log."""
    blocks = re.split(r"=+ INCOMING DIMSE MESSAGE =+", output)
    final = next(b for b in reversed(blocks) if "C-MOVE RSP" in b or "C-GET RSP" in b)
    status = re.search(r"DIMSE Status\s*:\s*(0x[0-9a-fA-F]{4})", final).group(1).lower()
    counts = {name: int(n) for name, n in re.findall(r"(Remaining|Completed|Failed|Warning) Suboperations\s*:\s*(\d+)",
                                                     final)}
    return status, counts


@pytest.fixture
def storescp(held, tmp_path: Path):
    """A dcmtk storescp as the C-MOVE destination, writing what it receives to a folder."""
    with dcmtk_storescp(tmp_path / "arrived", "STORESCP", port=held[3]):
        yield tmp_path / "arrived"


def test_move_study_to_a_known_peer_sends_every_instance_and_our_derived_object(held, storescp):
    node, spec, expected, _, pdf_uid, _ = held
    done = dcmtk("movescu", "-S", "-d", "-aet", "VIEWER", "-aec", "NEUROPETRIX", "-aem", "STORESCP",
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={spec.study_uid}",
                 "127.0.0.1", str(node.port))
    assert done.returncode == 0, done.stdout + done.stderr
    status, counts = _final(done.stdout + done.stderr)
    assert status == "0x0000"
    assert counts["Completed"] == len(expected) == 3 + 4 + 1 and counts["Failed"] == 0
    arrived = _arrived(storescp)
    assert arrived == expected and pdf_uid in arrived


def test_move_series_in_patient_root_sends_that_series_only(held, storescp):
    node, spec, expected, _, _, _ = held
    done = dcmtk("movescu", "-P", "-d", "-aet", "VIEWER", "-aec", "NEUROPETRIX", "-aem", "STORESCP",
                 "-k", "QueryRetrieveLevel=SERIES", "-k", f"PatientID={spec.patient_id}",
                 "-k", f"StudyInstanceUID={spec.study_uid}", "-k", f"SeriesInstanceUID={spec.pet_series_uid}",
                 "127.0.0.1", str(node.port))
    assert done.returncode == 0, done.stdout + done.stderr
    status, counts = _final(done.stdout + done.stderr)
    assert status == "0x0000" and counts["Completed"] == 4
    arrived = _arrived(storescp)
    assert len(arrived) == 4 and all(expected[uid] == data for uid, data in arrived.items())


def test_move_to_an_unknown_destination_is_refused_with_a801(held, storescp):
    node, spec, _, _, _, _ = held
    done = dcmtk("movescu", "-S", "-d", "-aet", "VIEWER", "-aec", "NEUROPETRIX", "-aem", "NOBODY",
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={spec.study_uid}",
                 "127.0.0.1", str(node.port))
    status, _ = _final(done.stdout + done.stderr)
    assert status == "0xa801"
    assert not list(storescp.iterdir())


def test_move_without_the_levels_unique_key_is_unable_to_process(held, storescp):
    node, _, _, _, _, _ = held
    done = dcmtk("movescu", "-S", "-d", "-aet", "VIEWER", "-aec", "NEUROPETRIX", "-aem", "STORESCP",
                 "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=*", "127.0.0.1", str(node.port))
    status, _ = _final(done.stdout + done.stderr)
    assert status == "0xc000"
    assert not list(storescp.iterdir())


def test_get_study_returns_every_instance_on_the_same_association(held, tmp_path: Path):
    node, spec, expected, _, pdf_uid, originals = held
    out = tmp_path / "got"
    out.mkdir()
    done = dcmtk("getscu", "-S", "-d", "-aet", "VIEWER", "-aec", "NEUROPETRIX", "-od", str(out),
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={spec.study_uid}",
                 "127.0.0.1", str(node.port))
    assert done.returncode == 0, done.stdout + done.stderr
    status, counts = _final(done.stdout + done.stderr)
    assert status == "0x0000" and counts["Completed"] == len(expected) and counts["Failed"] == 0
    assert _same_content(out, originals) == set(expected) and pdf_uid in expected


def test_get_image_level_in_patient_root_returns_that_instance(held, tmp_path: Path):
    node, spec, expected, _, _, originals = held
    uid = next(iter(expected))
    out = tmp_path / "got"
    out.mkdir()
    done = dcmtk("getscu", "-P", "-d", "-aet", "VIEWER", "-aec", "NEUROPETRIX", "-od", str(out),
                 "-k", "QueryRetrieveLevel=IMAGE", "-k", f"PatientID={spec.patient_id}",
                 "-k", f"StudyInstanceUID={spec.study_uid}", "-k", f"SeriesInstanceUID={spec.ct_series_uid}",
                 "-k", f"SOPInstanceUID={uid}", "127.0.0.1", str(node.port))
    status, counts = _final(done.stdout + done.stderr)
    assert status == "0x0000" and counts["Completed"] == 1
    assert _same_content(out, originals) == {uid}


def test_an_unknown_caller_cannot_retrieve(held, tmp_path: Path):
    node, spec, _, _, _, _ = held
    done = dcmtk("getscu", "-S", "-aet", "STRANGER", "-aec", "NEUROPETRIX", "-od", str(tmp_path),
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={spec.study_uid}",
                 "127.0.0.1", str(node.port))
    assert done.returncode != 0
    assert "Association Rejected" in done.stdout + done.stderr
    assert not list(tmp_path.glob("*.dcm")) and not [p for p in tmp_path.iterdir() if p.is_file()]


def test_move_to_a_peer_that_is_down_fails_every_sub_operation_with_a702(held):
    node, spec, expected, _, _, _ = held
    done = dcmtk("movescu", "-S", "-d", "-aet", "VIEWER", "-aec", "NEUROPETRIX", "-aem", "DOWN",
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={spec.study_uid}",
                 "127.0.0.1", str(node.port))
    status, counts = _final(done.stdout + done.stderr)
    assert status == "0xa702" and counts["Failed"] == len(expected) and counts["Completed"] == 0


def test_get_of_a_sop_class_the_requestor_cannot_take_fails_that_part_with_b000(held):
    node, spec, expected, _, pdf_uid, _ = held
    received: list[str] = []

    def on_store(event) -> int:
        received.append(event.request.AffectedSOPInstanceUID)
        return 0x0000
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(STUDY_ROOT_GET)
    ae.add_requested_context(CTImageStorage)           # the viewer takes CT only: not PET, not the PDF
    assoc = ae.associate("127.0.0.1", node.port, ae_title="NEUROPETRIX", ext_neg=[build_role(CTImageStorage,
                         scp_role=True)], evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", spec.study_uid
    responses = list(assoc.send_c_get(query, STUDY_ROOT_GET))
    assoc.release()
    pending = [status for status, _ in responses[:-1]]
    assert [p.Status for p in pending] == [0xFF00] * (len(expected) - 1)
    assert [p.NumberOfRemainingSuboperations for p in pending] == list(range(len(expected) - 1, 0, -1))
    status, identifier = responses[-1]
    uids = list(expected)
    assert status.Status == 0xB000
    assert (status.NumberOfCompletedSuboperations, status.NumberOfFailedSuboperations) == (3, 5)
    assert sorted(identifier.FailedSOPInstanceUIDList) == sorted(uids[3:]) and pdf_uid in uids[3:]
    assert sorted(received) == sorted(uids[:3])


def test_a_cancelled_move_stops_between_sub_operations_with_fe00(held, storescp):
    node, spec, expected, _, _, _ = held
    done = dcmtk("movescu", "-S", "-d", "--cancel", "2", "-aet", "VIEWER", "-aec", "NEUROPETRIX", "-aem", "STORESCP",
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={spec.study_uid}",
                 "127.0.0.1", str(node.port))
    status, counts = _final(done.stdout + done.stderr)
    assert status == "0xfe00"
    assert counts["Remaining"] > 0 and counts["Completed"] + counts["Remaining"] == len(expected)
    assert len(list(storescp.iterdir())) == counts["Completed"] < len(expected)


def test_find_lists_our_derived_object_as_a_series_and_an_image_of_its_study(held, tmp_path: Path):
    node, spec, _, _, pdf_uid, _ = held
    series = _findscu(node, tmp_path / "series", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={spec.study_uid}",
                      "SeriesInstanceUID=", "Modality=", "NumberOfSeriesRelatedInstances=")
    assert sorted((ds.Modality, ds.NumberOfSeriesRelatedInstances) for ds in series) == [("CT", 3), ("DOC", 1),
                                                                                         ("PT", 4)]
    doc = next(ds for ds in series if ds.Modality == "DOC")
    images = _findscu(node, tmp_path / "images", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={spec.study_uid}",
                      f"SeriesInstanceUID={doc.SeriesInstanceUID}", "SOPInstanceUID=", "SOPClassUID=")
    assert [(ds.SOPInstanceUID, ds.SOPClassUID) for ds in images] == [(pdf_uid, ENCAPSULATED_PDF)]
    only_pt = _findscu(node, tmp_path / "pt", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={spec.study_uid}",
                       "SeriesInstanceUID=", "Modality=PT")
    assert [ds.Modality for ds in only_pt] == ["PT"]              # the derived series is matched like the others


def _findscu(node, out: Path, *keys: str) -> list:
    out.mkdir()
    done = dcmtk("findscu", "-S", "-aet", "VIEWER", "-aec", "NEUROPETRIX", *[a for k in keys for a in ("-k", k)],
                 "-X", "-od", str(out), "127.0.0.1", str(node.port))
    assert done.returncode == 0, done.stderr + done.stdout
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
