"""Review and sign-off end to end with the real peers: dcmtk storescu → node → Orthanc (PACS),
python-hl7's MLLP server (HBYS) and a FHIR endpoint. The first delivery is preliminary; a physician
rejects a lesion and signs through the API → a final version everywhere, without the rejected lesion;
a correction → amended / C. Every SR and SEG the PACS got passes dciodvfy, every ORU is read by
python-hl7, every FHIR bundle is checked against the R4 JSON Schema."""
from __future__ import annotations

from pathlib import Path

from pydicom.uid import EncapsulatedPDFStorage

from tests.engine.conftest import (  # noqa: F401  (petct_study is a fixture)
    all_jobs_settled,
    events_of,
    overrides,
    petct_study,
    storescu,
    wait_for,
)
from tests.reports.conftest import dciodvfy
from tests.reports.test_fhir import _schema_errors
from tests.review.helpers import (
    Api,
    add_user,
    observation_statuses,
    oru_statuses,
    pacs_objects,
    report_of,
)
from tests.support.hbys_peer import fhir_endpoint, mllp_listener
from tests.support.nodeproc import running_node
from tests.support.peers import orthanc

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SIGNER, ORGANISATION = "Ayşe Yılmaz", "Hacettepe Nükleer Tıp"


def _valid(datasets, tmp_path: Path) -> None:
    for ds in datasets:
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        dciodvfy(path)


def _review_at(api: Api, uid: str, version: int):
    status, body = api.call("GET", f"/api/studies/{uid}/review")
    return body if status == 200 and body["version"] == version and body["pending_version"] is None else None


def test_preliminary_then_signed_final_then_amended(tmp_path: Path, petct_study: Path) -> None:  # noqa: F811
    with orthanc(tmp_path / "orthanc") as pacs, mllp_listener() as hbys, fhir_endpoint() as fhir_end, \
            running_node(tmp_path / "node", overrides(pacs.dicom_port, hbys.port, fhir_end.base_url)) as node:
        add_user(node, "ayse", "physician", "--display-name", SIGNER, "--organisation", ORGANISATION)
        add_user(node, "tech", "technologist")
        storescu(node, petct_study)
        jobs = wait_for("the first delivery", lambda: all_jobs_settled(node, 5), node)
        assert [j["state"] for j in jobs] == ["done"] * 5, jobs
        uid = jobs[0]["study_uid"]
        physician, tech, nobody = Api(node, "ayse"), Api(node, "tech"), Api(node)

        # 1. preliminary everywhere
        first = wait_for("the review to open", lambda: _review_at(physician, uid, 1), node)
        assert first["status"] == "preliminary" and [les["label"] for les in first["lesions"]] == [1, 2]
        assert all(les["decision"] == "lesion" for les in first["lesions"]) and first["physiological"] == []
        (sr1,), (seg1,) = pacs_objects(pacs, COMPREHENSIVE_3D_SR), pacs_objects(pacs, SEG_STORAGE)
        assert (sr1.CompletionFlag, sr1.VerificationFlag, sr1.PreliminaryFlag) == ("PARTIAL", "UNVERIFIED",
                                                                                     "PRELIMINARY")
        assert "VerifyingObserverSequence" not in sr1 and len(seg1.SegmentSequence) == 2
        obr, obx, lesions = oru_statuses(hbys.received[0])
        assert obr == "P" and set(obx) == {"P"} and {"1", "2"} <= set(lesions)
        assert report_of(fhir_end.bundles[0])["status"] == "preliminary"
        assert observation_statuses(fhir_end.bundles[0]) == {"preliminary"}
        assert [e.payload["version"] for e in events_of(node, "review.ready")] == [1]

        # who may sign
        assert nobody.call("POST", f"/api/studies/{uid}/sign")[0] == 401
        assert tech.call("POST", f"/api/studies/{uid}/sign")[0] == 403
        assert tech.call("POST", f"/api/studies/{uid}/review", {"decisions": []})[0] == 403

        # 2. the physician rejects lesion 2: the totals follow what is kept
        status, body = physician.call("POST", f"/api/studies/{uid}/review",
                                      {"decisions": [{"label": 2, "decision": "rejected"}],
                                       "impression": "Lesion 2 is a motion artefact."})
        assert status == 200, body
        kept = next(les for les in first["lesions"] if les["label"] == 1)
        assert body["totals"]["lesion_count"] == 1 and body["totals"]["tmtv_ml"] == kept["volume_ml"]
        assert [les["decision"] for les in body["lesions"]] == ["lesion", "rejected"]
        assert physician.call("POST", f"/api/studies/{uid}/review",
                              {"decisions": [{"label": 9, "decision": "rejected"}]})[0] == 400

        # 3. signing makes version 2, final; a second signature makes nothing
        status, signed = physician.call("POST", f"/api/studies/{uid}/sign")
        assert status == 202 and (signed["version"], signed["status"]) == (2, "final"), signed
        assert physician.call("POST", f"/api/studies/{uid}/sign")[0] == 409
        wait_for("version 2", lambda: _review_at(physician, uid, 2) and all_jobs_settled(node, 9), node)
        assert physician.call("POST", f"/api/studies/{uid}/sign")[0] == 409          # nothing changed
        srs, segs = pacs_objects(pacs, COMPREHENSIVE_3D_SR), pacs_objects(pacs, SEG_STORAGE)
        assert len(srs) == 2 and len(segs) == 2 and len(pacs_objects(pacs, EncapsulatedPDFStorage)) == 2
        sr2, seg2 = srs[1], segs[1]
        assert sr2.SOPInstanceUID != sr1.SOPInstanceUID and seg2.SOPInstanceUID != seg1.SOPInstanceUID
        assert (sr2.CompletionFlag, sr2.VerificationFlag, sr2.PreliminaryFlag) == ("COMPLETE", "VERIFIED", "FINAL")
        observer = sr2.VerifyingObserverSequence[0]
        assert str(observer.VerifyingObserverName) == "Yılmaz^Ayşe"
        assert observer.VerifyingOrganization == ORGANISATION
        assert sr2.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0] \
            .ReferencedSOPInstanceUID == sr1.SOPInstanceUID
        assert [s.SegmentLabel for s in seg2.SegmentSequence] == ["Lesion 1"]
        assert len(hbys.received) == 2 and len(set(hbys.control_ids())) == 2
        obr, obx, lesions = oru_statuses(hbys.received[1])
        assert obr == "F" and set(obx) == {"F"} and "2" not in lesions and "1" in lesions
        assert "motion artefact" in hbys.received[1]
        final = report_of(fhir_end.bundles[1])
        assert final["status"] == "final" and observation_statuses(fhir_end.bundles[1]) == {"final", "entered-in-error"}
        withdrawn = {e["fullUrl"] for e in fhir_end.bundles[1]["entry"]
                     if e["resource"]["resourceType"] == "Observation"
                     and e["resource"]["status"] == "entered-in-error"}
        assert len(withdrawn) == 5 and not withdrawn & {r["reference"] for r in final["result"]}
        assert all("lesion-2/" in e["resource"]["identifier"][0]["value"] for e in fhir_end.bundles[1]["entry"]
                   if e["fullUrl"] in withdrawn)                    # the rejected lesion's, posted before
        assert final["identifier"] == report_of(fhir_end.bundles[0])["identifier"]     # the same report, updated
        assert final["resultsInterpreter"] == [{"display": SIGNER}]

        # 4. a correction after the final: amended, C
        status, _ = physician.call("POST", f"/api/studies/{uid}/review",
                                   {"impression": "Lesion 2 is a motion artefact. Lesion 1: lymph node."})
        assert status == 200
        status, corrected = physician.call("POST", f"/api/studies/{uid}/sign")
        assert status == 202 and (corrected["version"], corrected["status"]) == (3, "amended")
        wait_for("version 3", lambda: _review_at(physician, uid, 3) and all_jobs_settled(node, 13), node)
        sr3 = pacs_objects(pacs, COMPREHENSIVE_3D_SR)[2]
        assert sr3.VerificationFlag == "VERIFIED" and sr3.PredecessorDocumentsSequence[0] \
            .ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sr2.SOPInstanceUID
        obr, obx, _ = oru_statuses(hbys.received[2])
        assert obr == "C" and set(obx) == {"C"}
        assert report_of(fhir_end.bundles[2])["status"] == "amended"
        assert observation_statuses(fhir_end.bundles[2]) == {"amended", "entered-in-error"}

        # the physician runs the analysis again with a higher threshold: a new preliminary version whose
        # regions replace the review's (only the SUV 9 sphere is above 7)
        status, body = physician.call("POST", f"/api/studies/{uid}/review", {"analysis": {"threshold": 7.0}})
        assert status == 200 and body["pending_version"] == 4, body
        wait_for("version 4", lambda: _review_at(physician, uid, 4) and all_jobs_settled(node, 17), node)
        again = _review_at(physician, uid, 4)
        assert again["status"] == "preliminary" and [les["label"] for les in again["lesions"]] == [1]
        assert again["totals"]["lesion_count"] == 1 and again["impression"] == ""
        assert oru_statuses(hbys.received[3])[0] == "P" and report_of(fhir_end.bundles[3])["status"] == "preliminary"
        sr4 = pacs_objects(pacs, COMPREHENSIVE_3D_SR)[3]
        assert (sr4.VerificationFlag, sr4.CompletionFlag) == ("UNVERIFIED", "PARTIAL")
        # signing it keeps the new threshold: version 5 is that analysis, signed (amended: signed before)
        assert physician.call("POST", f"/api/studies/{uid}/sign")[1]["status"] == "amended"
        wait_for("version 5", lambda: _review_at(physician, uid, 5) and all_jobs_settled(node, 21), node)
        sr5 = pacs_objects(pacs, COMPREHENSIVE_3D_SR)[4]
        assert sr5.SeriesInstanceUID == sr4.SeriesInstanceUID and sr5.VerificationFlag == "VERIFIED"
        assert oru_statuses(hbys.received[4])[2] == oru_statuses(hbys.received[3])[2]     # the same lesions

        # every version is kept and listed, each with its deliveries done
        status, versions = physician.call("GET", f"/api/studies/{uid}/versions")
        assert status == 200
        assert [(v["version"], v["status"]) for v in versions["items"]] == [(1, "preliminary"), (2, "final"),
                                                                             (3, "amended"), (4, "preliminary"),
                                                                             (5, "amended")]
        assert [v["sr_uid"] for v in versions["items"]] == [str(s.SOPInstanceUID) for s in
                                                            pacs_objects(pacs, COMPREHENSIVE_3D_SR)]
        assert versions["items"][1]["signer"]["display_name"] == SIGNER
        assert all(d["state"] == "done" for v in versions["items"][1:] for d in v["deliveries"])
        assert [d["kind"] for d in versions["items"][1]["deliveries"]] == ["forward", "hl7", "fhir"]
        assert all((node.data_dir / "versions" / uid / str(n) / "sr.dcm").is_file() for n in (1, 2, 3, 4, 5))

        # the audit: who did what, returned by the API, and no way to change it
        audit = physician.call("GET", f"/api/studies/{uid}/review")[1]["audit"]
        acts = [(a["username"], a["action"], a["version"]) for a in audit]
        assert ("ayse", "reviewed", 1) in acts and ("ayse", "signed", 2) in acts and ("ayse", "signed", 3) in acts
        assert [a["action"] for a in audit if a["username"] is None] == ["version made"] * 5
        assert ("ayse", "reanalysis", 4) in acts
        assert physician.call("DELETE", f"/api/studies/{uid}/review")[0] == 405
        assert physician.call("PUT", f"/api/studies/{uid}/review", {"audit": []})[0] == 405
        assert [e.payload["status"] for e in events_of(node, "review.version")] == ["final", "amended", "amended"]
        assert len(events_of(node, "review.signed")) == 3 and events_of(node, "review.changed")

        _valid(pacs_objects(pacs, COMPREHENSIVE_3D_SR) + pacs_objects(pacs, SEG_STORAGE), tmp_path)
        for bundle in fhir_end.bundles:
            assert _schema_errors(bundle) == []
