"""End to end with real peers on loopback: dcmtk storescu sends a PET/CT study to the node, the node
analyses it, Orthanc (the PACS) ends up with the SEG, SR and PDF, python-hl7's MLLP server gets the ORU
and answers AA, a local FHIR endpoint gets the transaction bundle."""
from __future__ import annotations

from pathlib import Path

import hl7
from pydicom.uid import EncapsulatedPDFStorage

from tests.engine.conftest import all_jobs_settled, events_of, jobs_of, overrides, storescu, wait_for
from tests.support.hbys_peer import fhir_endpoint, mllp_listener
from tests.support.nodeproc import free_port, running_node
from tests.support.peers import orthanc
from tests.support.synthetic import StudySpec, write_ct_series

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
def sop_classes(pacs) -> list[str]:
    return sorted(pacs.get(f"/instances/{i}/simplified-tags")["SOPClassUID"] for i in pacs.get("/instances"))


def with_research_copy(config: dict, research_port: int) -> dict:
    """A second route: the whole study, de-identified, to a research archive (a peer with transforms)."""
    research = {"name": "research", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": research_port,
                "transforms": [{"deidentify": {"keep": ["StudyDescription"]}}, "charset_utf8"]}
    route = {"name": "research-copy", "match": {"modality": "CT", "calling_ae": "STORESCU"},
             "actions": [{"forward": "research", "objects": ["study"],
                          "transforms": [{"set": {"StudyDescription": "RESEARCH COPY"}}]}]}
    return {**config, "peers": [*config["peers"], research], "routes": [*config["routes"], route]}


def test_study_in_results_out(tmp_path: Path, petct_study: Path) -> None:
    with orthanc(tmp_path / "orthanc") as pacs, orthanc(tmp_path / "research") as archive, \
            mllp_listener() as hl7_end, fhir_endpoint(token="s3cret") as fhir_end, \
            running_node(tmp_path / "node", with_research_copy(
                overrides(pacs.dicom_port, hl7_end.port, fhir_end.base_url, "s3cret"), archive.dicom_port)) as node:
        storescu(node, petct_study)
        jobs = wait_for("every job to finish", lambda: all_jobs_settled(node, 6), node)
        assert [j["state"] for j in jobs] == ["done"] * 6, jobs
        assert [(j["route"], j["kind"]) for j in jobs] == [
            ("petct-analysis", k) for k in ("analyze", "forward", "hl7", "fhir", "notify")] + [
            ("research-copy", "forward")]
        assert all(j["after"] == jobs[0]["id"] for j in jobs[1:5]) and jobs[5]["after"] is None

        # the PACS holds exactly the three result objects, each once
        assert sop_classes(pacs) == sorted([SEG_STORAGE, COMPREHENSIVE_3D_SR, EncapsulatedPDFStorage])
        study_uid = jobs[0]["study_uid"]
        assert [s["MainDicomTags"]["StudyInstanceUID"] for s in pacs.get("/studies?expand")] == [study_uid]

        # the research archive holds the study de-identified: new UIDs, a pseudonym, UTF-8, coerced
        copies = archive.get("/studies?expand")
        assert len(copies) == 1 and copies[0]["MainDicomTags"]["StudyInstanceUID"] != study_uid
        assert copies[0]["MainDicomTags"]["StudyInstanceUID"].startswith("2.25.")
        assert copies[0]["MainDicomTags"]["StudyDescription"] == "RESEARCH COPY"
        assert copies[0]["PatientMainDicomTags"]["PatientID"].startswith("ANON")
        assert len(archive.get("/instances")) == 80
        tags = archive.get(f"/instances/{archive.get('/instances')[0]}/simplified-tags")
        assert tags["PatientIdentityRemoved"] == "YES" and tags["SpecificCharacterSet"] == "ISO_IR 192"
        assert "InstitutionName" not in tags and tags["PatientName"] == tags["PatientID"]

        # HBYS got one ORU^R01 for this study and acknowledged it
        assert len(hl7_end.received) == 1 and hl7_end.acked == ["AA"]
        oru = hl7.parse(hl7_end.received[0])
        assert str(oru.segment("MSH")(9)).startswith("ORU^R01")
        assert str(oru.segment("PID")(3)).startswith("10000000146")
        assert any(str(seg(0)) == "OBX" for seg in oru)
        assert jobs[2]["result"] == {"ack": "AA", "control_id": str(oru.segment("MSH")(10))}

        # the FHIR server got one transaction with a DiagnosticReport for the study, with the token
        assert fhir_end.statuses == [200] and len(fhir_end.bundles) == 1
        bundle = fhir_end.bundles[0]
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
        kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
        assert {"DiagnosticReport", "Observation", "ImagingStudy"} <= kinds

        assert [e.payload["job"] for e in events_of(node, "analysis.done")] == [jobs[0]["id"]]
        assert len(events_of(node, "delivery.done")) == 4
        assert events_of(node, "notification")[0].payload["recipients"] == ["physician"]
        listed = node.cli("jobs")
        assert listed.returncode == 0 and listed.stdout.count(" done ") == 6, listed.stdout

        # an operator runs the analysis and the deliveries again: the same objects, not new ones
        uids = sorted(pacs.get("/instances?expand")[i]["MainDicomTags"]["SOPInstanceUID"] for i in range(3))
        for j in jobs[:4]:
            assert node.cli("jobs", "retry", str(j["id"])).returncode == 0
        wait_for("the second round", lambda: len(events_of(node, "analysis.done")) == 2 and
                 all_jobs_settled(node, 6) and len(hl7_end.received) == 2 and len(fhir_end.bundles) == 2, node)
        assert "resumed" not in events_of(node, "analysis.done")[1].payload      # really analysed again
        assert sorted(i["MainDicomTags"]["SOPInstanceUID"] for i in pacs.get("/instances?expand")) == uids
        assert len(set(hl7_end.control_ids())) == 1
        assert len({tuple(sorted(e["fullUrl"] for e in b["entry"])) for b in fhir_end.bundles}) == 1


def test_a_study_that_cannot_be_analysed_is_parked_and_its_deliveries_wait(tmp_path: Path) -> None:
    ct_only = tmp_path / "ct"
    write_ct_series(StudySpec(ct_slices=5, ct_matrix=64), ct_only)
    route = {"name": "everything", "match": {}, "actions": ["analyze", {"forward": "pacs", "objects": ["sr"]}]}
    with running_node(tmp_path / "node", {**overrides(free_port(), free_port(), "http://127.0.0.1:1/fhir"),
                                          "routes": [route]}) as node:
        storescu(node, ct_only)
        wait_for("the analysis to be refused", lambda: events_of(node, "analysis.failed"), node)
        analysis, forward = jobs_of(node)
        assert analysis["state"] == "failed" and analysis["attempts"] == 1
        assert "PET" in analysis["last_error"], analysis["last_error"]
        assert events_of(node, "analysis.failed")[0].payload["parked"] is True
        assert forward["state"] == "queued" and forward["attempts"] == 0 and forward["after"] == analysis["id"]
        listed = node.cli("jobs")
        assert f"after job {analysis['id']}" in listed.stdout
