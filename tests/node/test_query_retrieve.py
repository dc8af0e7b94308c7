"""Query/Retrieve C-FIND (Patient Root and Study Root) over what the node holds, asked by dcmtk findscu.

Three studies arrive by storescu (a patient with a baseline and a follow-up, and another patient); the
answers are read from findscu's extracted response files.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT

from neuropetrix.engine import query_retrieve
from neuropetrix.engine.query_retrieve import providers
from neuropetrix.node.scp.policy import AcceptancePolicy, ServerLimits
from neuropetrix.node.scp.server import DicomServer
from neuropetrix.store.db import open_database
from neuropetrix.store.files import FileStore
from neuropetrix.store.index import StudyIndex
from neuropetrix.store.ingest import Ingest
from tests.conftest import dcmtk, storescu
from tests.support.nodeproc import running_node
from tests.support.synthetic import StudySpec, write_petct_study

SMALL = dict(ct_slices=3, pet_slices=3, ct_matrix=32, pet_matrix=16)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, StudySpec]:
    root = tmp_path_factory.mktemp("qr_studies")
    specs = {
        "follow_up": StudySpec(accession_number="ACC2026001", **SMALL),
        "baseline": StudySpec(accession_number="ACC2025007", scan_start=datetime(2025, 6, 2, 9, 30),
                              injection_time=datetime(2025, 6, 2, 8, 30), **SMALL),
        "other": StudySpec(patient_name="DEMIR^ALI", patient_id="22222222222", patient_sex="M",
                           accession_number="BCC2026002", **SMALL),
    }
    for name, spec in specs.items():
        write_petct_study(root / name, spec)
    specs["folder"] = root  # type: ignore[assignment]
    return specs


@pytest.fixture(scope="module")
def node(studies, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("qr_node")
    _, sessions = open_database(f"sqlite:///{tmp / 'db.sqlite'}")
    ingest = Ingest(FileStore(tmp / "storage"), StudyIndex(sessions))
    server = DicomServer("127.0.0.1", 0, AcceptancePolicy("NEUROPETRIX", frozenset({"STORESCU", "VIEWER"})),
                         ingest, ServerLimits(network_timeout=10), find_providers=providers(sessions, "NEUROPETRIX"))
    server.start()
    sent = storescu(server.port, studies["folder"])
    assert sent.returncode == 0, sent.stderr
    yield server
    server.stop(grace=2)


def find(node: DicomServer, tmp_path: Path, model: str, *keys: str, aet: str = "VIEWER") -> list[Dataset]:
    out = tmp_path / f"rsp{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    done = dcmtk("findscu", model, "-aet", aet, "-aec", "NEUROPETRIX", *[a for k in keys for a in ("-k", k)],
                 "-X", "-od", str(out), "127.0.0.1", str(node.port))
    assert done.returncode == 0, done.stderr + done.stdout
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_study_root_studies_of_a_patient_with_their_modalities(node, studies, tmp_path):
    found = find(node, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "PatientID=10000000146", "StudyInstanceUID=",
                 "StudyDate=", "AccessionNumber=", "ModalitiesInStudy=", "NumberOfStudyRelatedInstances=",
                 "ReferringPhysicianName=")
    by_uid = {ds.StudyInstanceUID: ds for ds in found}
    assert set(by_uid) == {studies["follow_up"].study_uid, studies["baseline"].study_uid}
    baseline = by_uid[studies["baseline"].study_uid]
    assert baseline.StudyDate == "20250602" and baseline.AccessionNumber == "ACC2025007"
    assert list(baseline.ModalitiesInStudy) == ["CT", "PT"] and baseline.NumberOfStudyRelatedInstances == 6
    assert baseline.RetrieveAETitle == "NEUROPETRIX" and baseline.QueryRetrieveLevel == "STUDY"
    assert baseline.ReferringPhysicianName == ""           # not kept by the index: returned empty
    assert "PatientName" not in baseline                   # only the keys asked for


def test_date_range_wildcards_and_universal_matching(node, studies, tmp_path):
    since = find(node, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "StudyDate=20260101-", "StudyInstanceUID=")
    assert {ds.StudyInstanceUID for ds in since} == {studies["follow_up"].study_uid, studies["other"].study_uid}
    until = find(node, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "StudyDate=-20251231", "StudyInstanceUID=")
    assert [ds.StudyInstanceUID for ds in until] == [studies["baseline"].study_uid]
    accession = find(node, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "AccessionNumber=ACC*", "PatientID=")
    assert {ds.PatientID for ds in accession} == {"10000000146"} and len(accession) == 2
    names = find(node, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "PatientName=dem?r*",
                 "StudyInstanceUID=")
    assert [ds.StudyInstanceUID for ds in names] == [studies["other"].study_uid]   # names fold case
    listed = find(node, tmp_path, "-S", "QueryRetrieveLevel=STUDY",
                  f"StudyInstanceUID={studies['baseline'].study_uid}\\{studies['other'].study_uid}")
    assert len(listed) == 2
    everything = find(node, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "StudyInstanceUID=", "ModalitiesInStudy=PT")
    assert len(everything) == 3
    assert find(node, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "ModalitiesInStudy=MR") == []


def test_patient_root_patients_then_series_then_images(node, studies, tmp_path, monkeypatch):
    patients = find(node, tmp_path, "-P", "QueryRetrieveLevel=PATIENT", "PatientID=", "PatientName=",
                    "NumberOfPatientRelatedStudies=")
    by_id = {ds.PatientID: ds for ds in patients}
    assert set(by_id) == {"10000000146", "22222222222"}
    assert by_id["10000000146"].NumberOfPatientRelatedStudies == 2
    assert str(by_id["10000000146"].PatientName) == "YILMAZ^AYŞE" and by_id["10000000146"].SpecificCharacterSet \
        == "ISO_IR 192"
    study = studies["baseline"]
    series = find(node, tmp_path, "-P", "QueryRetrieveLevel=SERIES", "PatientID=10000000146",
                  f"StudyInstanceUID={study.study_uid}", "SeriesInstanceUID=", "Modality=PT",
                  "NumberOfSeriesRelatedInstances=")
    assert [(ds.SeriesInstanceUID, ds.NumberOfSeriesRelatedInstances) for ds in series] == [(study.pet_series_uid, 3)]
    monkeypatch.setattr(query_retrieve, "PAGE", 2)         # three images come in two pages
    images = find(node, tmp_path, "-S", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study.study_uid}",
                  f"SeriesInstanceUID={study.ct_series_uid}", "SOPInstanceUID=", "SOPClassUID=", "InstanceNumber=")
    assert len(images) == 3 and len({ds.SOPInstanceUID for ds in images}) == 3
    assert {ds.SOPClassUID for ds in images} == {"1.2.840.10008.5.1.4.1.1.2"}
    assert sorted(ds.InstanceNumber for ds in images) == [1, 2, 3]


def test_unknown_caller_is_refused_and_a_bad_level_is_answered_unable_to_process(node, tmp_path):
    refused = dcmtk("findscu", "-S", "-aet", "STRANGER", "-aec", "NEUROPETRIX", "-k", "QueryRetrieveLevel=STUDY",
                    "127.0.0.1", str(node.port))
    assert refused.returncode != 0 and "Association Rejected" in refused.stderr + refused.stdout
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(STUDY_ROOT)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="NEUROPETRIX")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"                    # Study Root has no patient level
    query.PatientID = ""
    statuses = [status.Status for status, _ in assoc.send_c_find(query, STUDY_ROOT)]
    assoc.release()
    assert statuses == [0xC000]


def test_a_running_node_answers_findscu_for_what_it_received(studies, tmp_path):
    """`neuropetrix serve` registers both information models; the scanner peer may query (its AE is known)."""
    with running_node(tmp_path) as served:
        sent = storescu(served.dicom_port, studies["folder"] / "baseline")
        assert sent.returncode == 0, sent.stderr
        for model in ("-P", "-S"):
            out = tmp_path / f"answers{model}"
            out.mkdir()
            done = dcmtk("findscu", model, "-aet", "STORESCU", "-aec", served.ae_title,
                         "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=10000000146",
                         "-k", "StudyInstanceUID=", "-k", "ModalitiesInStudy=",
                         "-X", "-od", str(out), "127.0.0.1", str(served.dicom_port))
            assert done.returncode == 0, done.stderr
            answers = [pydicom.dcmread(p) for p in out.glob("rsp*.dcm")]
            assert [ds.StudyInstanceUID for ds in answers] == [studies["baseline"].study_uid], served.log_text()
            assert list(answers[0].ModalitiesInStudy) == ["CT", "PT"]
