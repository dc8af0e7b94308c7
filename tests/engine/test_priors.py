"""Priors fetched from the PACS: the node receives a follow-up PET/CT, finds the patient's baseline on
Orthanc (the real one, which knows the node as a modality) by C-FIND, has it C-MOVEd to its own SCP,
and its analysis.json carries the PERCIST response against that baseline. The baseline itself is not
routed (no analysis, no delivery of an old study). Then the running node answers C-GET (dcmtk getscu)
and C-MOVE (to Orthanc) of what it now holds.

The phantoms (neuropetrix.phantoms.wholebody) are one patient on two visits, the follow-up on another
table position with every lesion's uptake halved: a partial metabolic response.
"""
from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pydicom
import pytest

from neuropetrix.config.loader import ConfigError, parse_settings
from neuropetrix.dicom_uids import IMPLEMENTATION_CLASS_UID
from neuropetrix.phantoms.wholebody import LESIONS, write_study
from tests.conftest import dcmtk
from tests.engine.conftest import FAST_ENGINE, events_of, jobs_of, storescu, wait_for
from tests.support.nodeproc import SCANNER_AE, free_port, node_config, start_node
from tests.support.peers import QRSCP_AET, dcmqrscp, orthanc, upload
from tests.support.synthetic import StudySpec, write_ct_series, write_petct_study

VISIT = dict(pet_matrix=96, ct_matrix=96, z_range_mm=(-120.0, 480.0))
ROUTE = {"name": "petct", "match": {"modality": "PT"}, "actions": ["analyze"]}


@pytest.fixture(scope="module")
def visits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    root = tmp_path_factory.mktemp("priors")
    write_study(root / "baseline", seed=1, scan_start=datetime(2026, 6, 2, 9, 30), **VISIT)
    write_study(root / "follow_up", seed=2, offset_mm=(14.0, 9.0, 37.0),
                lesions=[replace(les, suv=les.suv * 0.5) for les in LESIONS], **VISIT)
    return {"baseline": (root / "baseline", _study_uid(root / "baseline")),
            "follow_up": (root / "follow_up", _study_uid(root / "follow_up"))}


def _study_uid(folder: Path) -> str:
    return str(pydicom.dcmread(next((folder / "PT").iterdir()), stop_before_pixels=True).StudyInstanceUID)


def test_prior_from_the_pacs_is_fetched_and_the_response_assessed_against_it(visits, tmp_path: Path):
    baseline_dir, baseline_uid = visits["baseline"]
    follow_dir, follow_uid = visits["follow_up"]
    config = node_config(tmp_path / "node" / "var")
    node_port = config["node"]["dicom_port"]
    with orthanc(tmp_path / "orthanc", modalities={"neuropetrix": ("NEUROPETRIX", "127.0.0.1", node_port)}) as pacs:
        files = sorted(p for p in baseline_dir.rglob("*.dcm"))
        for path in files:
            upload(pacs, path)
        config.update(peers=_peers(pacs.dicom_port, pacs.aet), priors={"peer": "pacs"}, engine=FAST_ENGINE,
                      routes=[ROUTE])
        node = start_node(config, tmp_path / "node")
        try:
            storescu(node, follow_dir)
            wait_for("the analysis", lambda: events_of(node, "analysis.done") or events_of(node, "analysis.failed"),
                     node, timeout=600)
            jobs = jobs_of(node)
            assert [(j["kind"], j["state"], j["study_uid"]) for j in jobs] == [
                ("priors", "done", follow_uid), ("analyze", "done", follow_uid)], jobs
            assert jobs[1]["after"] == jobs[0]["id"]
            assert jobs[0]["result"]["retrieved"] == [baseline_uid]
            assert jobs[1]["result"]["prior_study_uid"] == baseline_uid

            document = json.loads((node.data_dir / "results" / follow_uid / "analysis.json").read_text())
            response = document["response"]
            assert response["prior_study_uid"] == baseline_uid
            assert response["category"] == "PMR"
            assert -60.0 < response["percent_change"] < -40.0       # truth: every lesion's uptake halved

            # the baseline arrived whole, and completing it routed nothing
            wait_for("the baseline to complete", lambda: [e for e in events_of(node, "study.complete")
                                                          if e.study_uid == baseline_uid], node)
            assert [e.study_uid for e in events_of(node, "study.prior_requested")] == [baseline_uid]
            assert len(jobs_of(node)) == 2
            assert "fetched as a prior, not routed" in node.log_text()

            # C-GET of the fetched baseline from the running node gives back every instance
            got = tmp_path / "got"
            got.mkdir()
            done = dcmtk("getscu", "-S", "-aet", SCANNER_AE, "-aec", "NEUROPETRIX", "-od", str(got),
                         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={baseline_uid}",
                         "127.0.0.1", str(node_port))
            assert done.returncode == 0, done.stdout + done.stderr
            sent = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
            assert {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in got.iterdir()} == sent

            # C-MOVE of the follow-up, with our SEG/SR/PDF, from the running node to Orthanc
            before = len(pacs.get("/instances"))
            done = dcmtk("movescu", "-S", "-aet", SCANNER_AE, "-aec", "NEUROPETRIX", "-aem", pacs.aet,
                         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={follow_uid}",
                         "127.0.0.1", str(node_port))
            assert done.returncode == 0, done.stdout + done.stderr
            held = len(list((node.data_dir / "storage" / follow_uid).rglob("*.dcm")))
            derived = len(list((node.data_dir / "results" / follow_uid).glob("*.dcm")))
            assert derived >= 2                                      # SR and PDF at least (SEG with lesions)
            study = [s for s in pacs.get("/studies?expand") if s["MainDicomTags"]["StudyInstanceUID"] == follow_uid]
            assert len(study) == 1 and len(pacs.get("/instances")) == before + held + derived
        finally:
            node.stop()


def _peers(pacs_port: int, pacs_aet: str) -> list[dict]:
    return [{"name": "scanner", "ae_title": SCANNER_AE, "host": "127.0.0.1", "port": free_port()},
            {"name": "pacs", "ae_title": pacs_aet, "host": "127.0.0.1", "port": pacs_port}]


def test_a_pacs_without_modalities_in_study_is_asked_series_by_series(tmp_path: Path):
    """dcmtk's dcmqrscp answers a study-level C-FIND without ModalitiesInStudy. The patient's earlier
    PET/CT study there is found by a SERIES-level C-FIND and fetched; a later CT-only study, which
    would be the latest prior were modality not checked, is not."""
    small = dict(ct_slices=2, pet_slices=3, ct_matrix=32, pet_matrix=16)
    baseline, baseline_files = write_petct_study(tmp_path / "baseline", StudySpec(
        **small, injection_time=datetime(2026, 6, 2, 9, 0), scan_start=datetime(2026, 6, 2, 10, 0)))
    ct_only = StudySpec(**small, scan_start=datetime(2026, 9, 1, 10, 0))
    ct_files = write_ct_series(ct_only, tmp_path / "ct_only")
    follow_up, _ = write_petct_study(tmp_path / "follow_up", StudySpec(**small))
    config = node_config(tmp_path / "node" / "var")
    node_port = config["node"]["dicom_port"]
    with dcmqrscp(tmp_path / "qr", [*baseline_files, *ct_files], {"NEUROPETRIX": node_port}) as pacs_port:
        config.update(peers=_peers(pacs_port, QRSCP_AET), priors={"peer": "pacs"}, engine=FAST_ENGINE,
                      routes=[ROUTE])
        node = start_node(config, tmp_path / "node")
        try:
            storescu(node, tmp_path / "follow_up")
            fetch = wait_for("the priors job", lambda: [j for j in jobs_of(node) if j["kind"] == "priors"
                                                        and j["state"] in ("done", "failed")], node)[0]
            assert fetch["state"] == "done", fetch
            assert fetch["study_uid"] == follow_up.study_uid and fetch["result"]["found"] == 2
            assert fetch["result"]["retrieved"] == [baseline.study_uid]
            storage = node.data_dir / "storage"
            # element by element, pixels included (dcmqrscp sends in Implicit VR: not byte for byte)
            held = {p.stem: pydicom.dcmread(p) for p in (storage / baseline.study_uid).rglob("*.dcm")}
            assert held == {(ds := pydicom.dcmread(p)).SOPInstanceUID: ds for p in baseline_files}
            assert not (storage / ct_only.study_uid).exists()
            # the query associations speak as the node, not as pynetdicom
            log = (tmp_path / "qr" / "dcmqrscp.log").read_text()
            assert re.search(rf"Their Implementation Class UID: +{re.escape(IMPLEMENTATION_CLASS_UID)}$", log, re.M)
        finally:
            node.stop()


def test_a_pacs_that_refuses_is_retried_with_back_off_then_the_study_is_analysed_alone(visits, tmp_path: Path):
    follow_dir, follow_uid = visits["follow_up"]
    with orthanc(tmp_path / "orthanc") as pacs:          # it does not know the node: refuses its C-FIND
        config = node_config(tmp_path / "node" / "var", {
            "peers": _peers(pacs.dicom_port, pacs.aet), "priors": {"peer": "pacs"},
            "engine": {**FAST_ENGINE, "retry": {**FAST_ENGINE["retry"], "max_attempts": 3}}, "routes": [ROUTE]})
        node = start_node(config, tmp_path / "node")
        try:
            storescu(node, follow_dir)
            wait_for("the analysis", lambda: events_of(node, "analysis.done"), node, timeout=600)
            fetch, analysis = jobs_of(node)
            assert fetch["kind"] == "priors" and fetch["state"] == "failed" and fetch["attempts"] == 3
            assert fetch["last_error"].startswith("pacs ")      # Orthanc aborts a query from an AE it does not know
            assert analysis["state"] == "done" and "prior_study_uid" not in analysis["result"]
            document = json.loads((node.data_dir / "results" / follow_uid / "analysis.json").read_text())
            assert document.get("response") is None
        finally:
            node.stop()


def test_a_prior_the_node_holds_is_compared_without_a_pacs(visits, tmp_path: Path):
    baseline_dir, baseline_uid = visits["baseline"]
    follow_dir, follow_uid = visits["follow_up"]
    config = node_config(tmp_path / "node" / "var", {"engine": FAST_ENGINE, "routes": [ROUTE]})
    node = start_node(config, tmp_path / "node")
    try:
        storescu(node, baseline_dir)
        wait_for("the baseline's analysis", lambda: events_of(node, "analysis.done"), node, timeout=600)
        storescu(node, follow_dir)
        wait_for("the follow-up's analysis", lambda: len(events_of(node, "analysis.done")) == 2, node, timeout=600)
        assert [j["kind"] for j in jobs_of(node)] == ["analyze", "analyze"]    # no PACS: nothing to fetch
        first = json.loads((node.data_dir / "results" / baseline_uid / "analysis.json").read_text())
        assert first.get("response") is None                                  # the baseline has no prior
        document = json.loads((node.data_dir / "results" / follow_uid / "analysis.json").read_text())
        assert document["response"]["prior_study_uid"] == baseline_uid and document["response"]["category"] == "PMR"
    finally:
        node.stop()


def test_a_priors_peer_that_is_not_configured_is_refused_at_start():
    with pytest.raises(ConfigError) as refused:
        parse_settings("peers: [{name: scanner, ae_title: PETCT1, host: 10.0.0.5, port: 104}]\n"
                       "priors: {peer: pacs}\n", "test", environ={})
    assert "priors.peer: no peer named 'pacs' (configured: scanner)" in str(refused.value)
