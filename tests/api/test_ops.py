"""/healthz, /readyz, /metrics, /api/openapi.json and errors as JSON."""
from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import bearer, login

pytestmark = pytest.mark.asyncio


async def test_health_and_readiness(client, env):
    assert (await client.get("/healthz")).status == 200
    r = await client.get("/readyz")
    assert r.status == 200 and await r.json() == {"ready": True, "checks": {"database": "ok", "storage": "ok",
                                                                            "dicom": "ok"}}
    env.dicom_up[0] = False
    r = await client.get("/readyz")
    assert r.status == 503 and (await r.json())["checks"]["dicom"] == "DICOM SCP not listening"


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def test_metrics_count_requests_analyses_deliveries_and_jobs(client, env):
    before = _samples(await (await client.get("/metrics")).text())
    await client.get("/api/studies", headers=bearer(await login(client, "viewer")))
    env.add_event("analysis.started", "1.2.3", job=4)
    env.add_event("analysis.done", "1.2.3", job=4, lesions=1)
    env.add_event("delivery.failed", "1.2.3", job=5, destination="hl7:hbys", error="AE")
    while _samples(await (await client.get("/metrics")).text()).get(
            ("neuropetrix_analyses_total", (("result", "done"),)), 0) <= before.get(
            ("neuropetrix_analyses_total", (("result", "done"),)), 0):
        await asyncio.sleep(0.05)        # the feed reads the event log every event_poll_seconds
    after = _samples(await (await client.get("/metrics")).text())

    def grew(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("neuropetrix_api_request_duration_seconds_count", method="GET", route="/api/studies",
                status="200") == 1
    assert grew("neuropetrix_analysis_duration_seconds_count") == 1
    assert grew("neuropetrix_deliveries_failed_total", kind="hl7") == 1
    assert after[("neuropetrix_jobs", (("state", "queued"),))] == 0
    for name in ("neuropetrix_instances_received_total", "neuropetrix_received_bytes_total",
                 "neuropetrix_dicom_associations_active", "neuropetrix_websocket_clients"):
        assert any(k[0] == name for k in after), name


async def test_openapi_describes_every_api_route(client):
    doc = await (await client.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    for route in client.app.router.routes():
        path = route.resource.canonical
        if route.method == "HEAD" or not path.startswith("/api/"):
            continue
        if "{name:" in path:           # one documented path per result file
            assert f"{path.split('{name:')[0]}mip.png" in doc["paths"] or path.endswith("report\\.pdf}")
            continue
        documented = path.replace("{device_id:\\d+}", "{device_id}").replace("{job_id:\\d+}", "{job_id}")
        assert route.method.lower() in doc["paths"][documented], (route.method, path)
    users = doc["paths"]["/api/users"]["get"]
    assert users["x-permission"] == "users.manage" and users["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/api/auth/login"]["post"]


async def test_errors_are_json(client):
    for method, path in (("GET", "/api/nothing-here"), ("DELETE", "/api/studies"), ("GET", "/api/studies")):
        r = await client.request(method, path)
        body = await r.json()
        assert r.status in (401, 404, 405) and body["status"] == r.status and body["message"]
