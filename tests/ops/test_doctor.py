"""`neuropetrix doctor` against real peers: a dcmtk storescp PACS that answers, a peer where nothing
listens, the hospital's MLLP listener (python-hl7) and a FHIR server's /metadata."""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from sqlalchemy import create_engine

from neuropetrix.store import migrate
from tests.support.hbys_peer import LoopThread, mllp_listener
from tests.support.nodeproc import free_port, run_cli
from tests.support.peers import storescp

ROUTE = {"name": "results", "match": {"modality": "PT"},
         "actions": ["analyze", {"forward": "pacs", "objects": ["seg"]}, {"forward": "archive"},
                     {"hl7": "hbys"}, {"fhir": "hbys"}]}


@contextmanager
def fhir_server() -> Iterator[str]:
    """GET /fhir/metadata answers an R4 CapabilityStatement, built and serialised by fhir.resources."""
    statement = CapabilityStatement.model_validate({
        "resourceType": "CapabilityStatement", "status": "active", "date": "2026-12-01", "kind": "instance",
        "fhirVersion": "4.0.1", "format": ["json"], "rest": [{"mode": "server"}]})

    async def metadata(_request: web.Request) -> web.Response:
        return web.Response(text=statement.model_dump_json(), content_type="application/fhir+json")

    app = web.Application()
    app.router.add_get("/fhir/metadata", metadata)
    runner, port, loop = web.AppRunner(app), free_port(), LoopThread()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    loop.run(start())
    try:
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        loop.run(runner.cleanup())
        loop.close()


def write_config(tmp_path: Path, peers: list[dict], mllp_port: int, fhir_url: str) -> Path:
    config = {"node": {"data_dir": str(tmp_path / "var"), "ae_title": "NEUROPETRIX"},
              "peers": peers, "routes": [ROUTE],
              "hbys": {"mllp": {"host": "127.0.0.1", "port": mllp_port}, "fhir": {"base_url": fhir_url}}}
    path = tmp_path / "node.yaml"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.faults
def test_doctor_names_the_dead_peer_and_passes_the_live_ones(tmp_path: Path):
    dead_port = free_port()                     # nothing listens here
    with storescp(tmp_path / "pacs", "PACS") as pacs_port, mllp_listener() as hbys, fhir_server() as fhir_url:
        peers = [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port},
                 {"name": "archive", "ae_title": "ARCHIVE", "host": "127.0.0.1", "port": dead_port}]
        config = write_config(tmp_path, peers, hbys.port, fhir_url)
        assert run_cli("db", "upgrade", "--config", str(config)).returncode == 0
        result = run_cli("doctor", "--timeout", "3", "--config", str(config))
    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line for line in lines if line.startswith("FAIL")]
    assert len(failed) == 1 and f"peer archive (ARCHIVE@127.0.0.1:{dead_port})" in failed[0], result.stdout
    assert "→" in failed[0]                                    # says what to fix
    assert any(line.startswith("ok") and "peer pacs" in line and "answers C-ECHO" in line for line in lines)
    assert any(line.startswith("ok") and "HBYS MLLP" in line and "accepts connections" in line for line in lines)
    assert any(line.startswith("ok") and "/fhir/metadata" in line and "FHIR 4.0.1" in line for line in lines)
    assert any(line.startswith("ok") and "database" in line for line in lines)
    assert any(line.startswith("ok") and "data folder" in line and "GiB free" in line for line in lines)


def test_doctor_fails_on_an_old_schema_a_readable_key_and_a_dead_hbys_not_an_unused_fhir_base(tmp_path: Path):
    route = {"name": "hl7-only", "match": {"modality": "PT"}, "actions": ["analyze", {"hl7": "hbys"}]}
    config = json.loads(write_config(tmp_path, [], free_port(), "http://127.0.0.1:9/fhir").read_text())
    config["routes"] = [route]
    path = tmp_path / "node.yaml"
    path.write_text(json.dumps(config))
    (tmp_path / "var").mkdir()
    key = tmp_path / "var" / "api_signing.key"
    key.write_text("x" * 48 + "\n")
    key.chmod(0o644)
    engine = create_engine(f"sqlite:///{tmp_path / 'var' / 'neuropetrix.db'}")
    migrate.upgrade(engine, "0001")
    engine.dispose()
    result = run_cli("doctor", "--timeout", "2", "--config", str(path))
    assert result.returncode == 1
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 3, result.stdout
    assert "api_signing.key" in failed[0] and "mode 644" in failed[0] and f"chmod 600 {key}" in failed[0]
    assert "database" in failed[1] and "revision 0001" in failed[1] and "neuropetrix db upgrade" in failed[1]
    assert "HBYS MLLP" in failed[2]
    assert "no route sends FHIR" in result.stdout             # the FHIR base is not used: not a failure

