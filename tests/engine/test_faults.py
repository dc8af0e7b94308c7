"""Faults: a PACS that is down and comes back, an HBYS that answers AE or AR, a FHIR server that is
busy, and a node killed with SIGKILL in the middle of an analysis and of a delivery. Each peer counts
what it received: nothing may arrive twice as two different objects."""
from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import psutil
import pytest

from tests.engine.conftest import (
    FAST_ENGINE,
    Relay,
    all_jobs_settled,
    events_of,
    jobs_of,
    overrides,
    storescu,
    wait_for,
)
from tests.support.hbys_peer import fhir_endpoint, mllp_listener
from tests.support.nodeproc import free_port, running_node, start_node
from tests.support.peers import orthanc
from tests.support.synthetic import StudySpec, write_ct_series

pytestmark = pytest.mark.faults


def job(node, kind: str) -> dict:
    return next(j for j in jobs_of(node) if j["kind"] == kind)


def test_pacs_down_then_up_delivers_once_and_holds_up_no_one_else(tmp_path: Path, petct_study: Path) -> None:
    with orthanc(tmp_path / "orthanc") as pacs, mllp_listener() as hl7_end, fhir_endpoint() as fhir_end:
        relay = Relay(pacs.dicom_port)                  # the PACS as the node knows it: down for now
        with running_node(tmp_path / "node", overrides(relay.port, hl7_end.port, fhir_end.base_url)) as node:
            storescu(node, petct_study)
            def failed_twice() -> bool:
                jobs = jobs_of(node)
                forward = next((j for j in jobs if j["kind"] == "forward"), None)
                return forward is not None and forward["attempts"] >= 2 and forward["state"] == "queued"
            wait_for("two failed attempts to reach the PACS", failed_twice, node)
            # the other destinations went ahead while the PACS was down
            for kind in ("analyze", "hl7", "fhir", "notify"):
                assert job(node, kind)["state"] == "done", jobs_of(node)
            forward = job(node, "forward")
            assert forward["state"] == "queued" and "refused or unreachable" in forward["last_error"]
            failed = events_of(node, "delivery.failed")
            assert failed and not any(e.payload["parked"] for e in failed)
            relay.up()
            jobs = wait_for("the forward job", lambda: all_jobs_settled(node, 5), node)
            assert [j["state"] for j in jobs] == ["done"] * 5
            assert relay.connections == 1                 # one association delivered everything
            assert len(pacs.get("/instances")) == 3
            assert len(hl7_end.received) == 1 and len(fhir_end.bundles) == 1
            relay.down()


def test_hl7_error_then_accept_and_reject_then_operator_retry(tmp_path: Path, petct_study: Path) -> None:
    """AE is retried until AA; a FHIR 503 with Retry-After is retried; AR parks the job at once and
    `jobs retry` sends it again."""
    with orthanc(tmp_path / "orthanc") as pacs, mllp_listener(["AE", "AA"]) as hl7_end, \
            fhir_endpoint(answers=[503, 429, 200]) as fhir_end, \
            running_node(tmp_path / "node", overrides(pacs.dicom_port, hl7_end.port, fhir_end.base_url)) as node:
        storescu(node, petct_study)
        jobs = wait_for("every job to finish", lambda: all_jobs_settled(node, 5), node)
        assert [j["state"] for j in jobs] == ["done"] * 5, jobs
        hl7_job, fhir_job = job(node, "hl7"), job(node, "fhir")
        assert hl7_end.acked == ["AE", "AA"] and hl7_job["attempts"] == 2
        assert len(set(hl7_end.control_ids())) == 1            # the same message, sent again
        assert fhir_end.statuses == [503, 429, 200] and fhir_job["attempts"] == 3
        assert len(fhir_end.bundles) == 1
        errors = [e.payload["error"] for e in events_of(node, "delivery.failed")]
        assert any("application error (AE)" in e for e in errors) and any("HTTP 503" in e for e in errors)

    with orthanc(tmp_path / "orthanc2") as pacs, mllp_listener(["AR", "AA"]) as hl7_end, \
            fhir_endpoint() as fhir_end, \
            running_node(tmp_path / "node2", overrides(pacs.dicom_port, hl7_end.port, fhir_end.base_url)) as node:
        storescu(node, petct_study)
        wait_for("every job to settle", lambda: all_jobs_settled(node, 5), node)
        hl7_job = job(node, "hl7")
        assert hl7_job["state"] == "failed" and hl7_job["attempts"] == 1, hl7_job
        assert "rejected (AR)" in hl7_job["last_error"]
        assert [e.payload["parked"] for e in events_of(node, "delivery.failed")] == [True]
        listed = node.cli("jobs", "--state", "failed", "--json")
        assert listed.returncode == 0 and "rejected (AR)" in listed.stdout
        retried = node.cli("jobs", "retry", str(hl7_job["id"]))
        assert retried.returncode == 0, retried.stderr
        wait_for("the retried job", lambda: job(node, "hl7")["state"] == "done", node)
        assert hl7_end.acked == ["AR", "AA"] and len(set(hl7_end.control_ids())) == 1
        missing = node.cli("jobs", "retry", "999999")
        assert missing.returncode != 0 and "no job 999999" in missing.stderr


def test_sigkill_mid_analysis_and_mid_delivery(tmp_path: Path, petct_study: Path) -> None:
    release = threading.Event()
    with orthanc(tmp_path / "orthanc") as pacs, mllp_listener(hold=release) as hl7_end, \
            fhir_endpoint() as fhir_end:
        workdir = tmp_path / "node"
        with running_node(workdir, overrides(pacs.dicom_port, hl7_end.port, fhir_end.base_url)) as node:
            config = node.config
            storescu(node, petct_study)
            wait_for("the analysis to start", lambda: events_of(node, "analysis.started"), node, interval=0.05)
            children = psutil.Process(node.proc.pid).children(recursive=True)
            node.stop(signal.SIGKILL)
        assert job(node, "analyze")["state"] == "running", "the kill came after the analysis finished"
        assert children and not psutil.wait_procs(children, timeout=10)[1]   # no orphan outlives the node

        node = start_node(config, workdir)                        # restart 1: the analysis runs again
        try:
            wait_for("the ORU held unacknowledged, the other deliveries done", lambda: hl7_end.received and all(
                job(node, kind)["state"] == "done" for kind in ("forward", "fhir", "notify")), node)
            node.stop(signal.SIGKILL)                             # killed while waiting for the ACK
        finally:
            node.stop(signal.SIGKILL)
        assert job(node, "hl7")["state"] == "running"
        release.set()

        with running_node(workdir, config=config) as node:       # restart 2: the delivery resumes
            jobs = wait_for("every job to finish", lambda: all_jobs_settled(node, 5), node)
            assert [j["state"] for j in jobs] == ["done"] * 5, jobs
            assert "resumed" in node.log_text()
        assert len(events_of(node, "analysis.done")) == 1
        assert len(events_of(node, "analysis.started")) == 2
        # what was acknowledged before the kill is not sent again; the ORU that was in flight (the
        # listener had it, we had no ACK) is sent again as the same message, which the receiver can
        # recognise by its control id
        assert len(pacs.get("/instances")) == 3 and len(fhir_end.bundles) == 1
        assert len(hl7_end.received) == 2 and len(set(hl7_end.control_ids())) == 1
        assert hl7_end.received[0] == hl7_end.received[1]


def test_forward_is_done_only_when_the_pacs_commits(tmp_path: Path) -> None:
    """Storage commitment with Orthanc: while Orthanc does not know our AE it refuses the request and the
    job is not done (it is retried); once Orthanc knows where to answer, it commits and the job is done."""
    study = tmp_path / "ct"
    write_ct_series(StudySpec(ct_slices=4, ct_matrix=64), study)
    commitment_port = free_port()
    route = {"name": "archive", "match": {"modality": "CT"}, "actions": [{"forward": "pacs"}]}
    with orthanc(tmp_path / "orthanc") as pacs:
        config = overrides(pacs.dicom_port, free_port(), "http://127.0.0.1:1/fhir")
        config["routes"] = [route]
        config["engine"] = {**FAST_ENGINE, "commitment_port": commitment_port, "commitment_timeout": 2}
        with running_node(tmp_path / "node", config) as node:
            storescu(node, study)
            wait_for("a first attempt", lambda: jobs_of(node) and jobs_of(node)[0]["attempts"] >= 1, node)
            wait_for("a second attempt", lambda: jobs_of(node)[0]["attempts"] >= 2, node)
            first = jobs_of(node)[0]
            assert first["state"] != "done" and "storage commitment request refused" in first["last_error"]
            pacs.request("PUT", "/modalities/neuropetrix", json.dumps(
                {"AET": node.ae_title, "Host": "127.0.0.1", "Port": commitment_port}).encode())
            forward = wait_for("the commitment", lambda: (j := jobs_of(node)[0])["state"] == "done" and j, node)
            assert forward["result"]["committed"] is True and forward["result"]["sent"] == 4
            assert forward["result"]["commitment_transaction"].endswith(f".{forward['id']}.{forward['attempts']}")
            assert len(pacs.get("/instances")) == 4
