"""Scale-out as the design has it: two nodes share one PostgreSQL database and one storage folder.
One node receives the study and cannot analyse; the other analyses it. Completion, routing and each
job happen exactly once between them, and every destination receives its result once."""
from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import text

from neuropetrix.store.db import make_engine
from tests.engine.conftest import all_jobs_settled, events_of, overrides, storescu, wait_for
from tests.support.hbys_peer import fhir_endpoint, mllp_listener
from tests.support.nodeproc import node_config, running_node
from tests.support.peers import orthanc


def test_two_nodes_share_postgresql(tmp_path: Path, petct_study: Path, postgres_server: str) -> None:
    name = f"scale{uuid.uuid4().hex[:8]}"
    admin = make_engine(f"{postgres_server}/postgres").execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    url = f"{postgres_server}/{name}"
    shared = tmp_path / "shared"
    with orthanc(tmp_path / "orthanc") as pacs, mllp_listener() as hl7_end, fhir_endpoint() as fhir_end:
        base = overrides(pacs.dicom_port, hl7_end.port, fhir_end.base_url)
        receiver = node_config(shared, {**base, "node": {"database_url": url},
                                        "engine": {**base["engine"], "analysis_workers": 0}})
        analyser = node_config(shared, {**base, "node": {"database_url": url}})
        with running_node(tmp_path / "a", config=receiver) as node_a, \
                running_node(tmp_path / "b", config=analyser) as node_b:
            storescu(node_a, petct_study)
            jobs = wait_for("every job to finish", lambda: all_jobs_settled(node_a, 5), node_a)
            assert [j["state"] for j in jobs] == ["done"] * 5, jobs
            analysis = jobs[0]
            assert analysis["kind"] == "analyze" and f":{node_b.proc.pid}:" in analysis["worker"]
            assert len(pacs.get("/instances")) == 3
            assert len(hl7_end.received) == 1 and len(fhir_end.bundles) == 1
            for kind in ("study.complete", "analysis.started", "analysis.done"):
                assert len(events_of(node_a, kind)) == 1, kind      # two sweepers, two routers: once
            assert len(events_of(node_a, "delivery.done")) == 3

