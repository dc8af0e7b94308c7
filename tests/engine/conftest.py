"""Shared pieces of the engine tests: a small PET/CT study with lesions, sending it with dcmtk
storescu, reading the node's jobs and events, and a TCP relay that plays a PACS going down and up."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from neuropetrix.engine.jobs import job_json, list_jobs
from neuropetrix.store.db import make_engine, make_sessionmaker, utcnow
from neuropetrix.store.models import Event
from tests.conftest import storescu as dcmtk_storescu
from tests.support import pg
from tests.support.nodeproc import SCANNER_AE, NodeProcess, free_port
from tests.support.synthetic import StudySpec, write_petct_study

PET_MATRIX, SLICES = 64, 40
# hot spheres: (slice, row, column) in voxels, radius in voxels, SUV
SPHERES = [((12, 30, 22), 3.0, 9.0), ((26, 38, 40), 4.0, 6.0)]
FAST_ENGINE = {"poll_seconds": 0.1, "lease_seconds": 3,
               "retry": {"base_seconds": 0.3, "max_seconds": 1.5, "jitter": 0.2, "max_attempts": 8}}

ROUTE = {"name": "petct-analysis", "match": {"modality": "PT", "tracer": "*fluorodeoxyglucose*"},
         "actions": ["analyze", {"forward": "pacs", "objects": ["seg", "sr", "pdf"]},
                     {"hl7": "hbys"}, {"fhir": "hbys"}, {"notify": ["physician"]}]}


def hbys_config(mllp_port: int, fhir_url: str, token: str | None = None) -> dict:
    return {"mllp": {"host": "127.0.0.1", "port": mllp_port, "timeout": 5},
            "fhir": {"base_url": fhir_url, "token": token, "timeout": 5}}


def pacs_peer(port: int) -> dict:
    return {"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": port}


def overrides(pacs_port: int, mllp_port: int, fhir_url: str, token: str | None = None) -> dict:
    return {"peers": [{"name": "scanner", "ae_title": SCANNER_AE, "host": "127.0.0.1", "port": free_port()},
                      pacs_peer(pacs_port)],
            "hbys": hbys_config(mllp_port, fhir_url, token), "engine": FAST_ENGINE, "routes": [ROUTE]}


def _activity(spec: StudySpec) -> Callable[[int], np.ndarray]:
    dt = (spec.scan_start - spec.injection_time).total_seconds()
    suv1 = spec.injected_dose_bq * 2.0 ** (-dt / spec.half_life_s) / (spec.weight_kg * 1000.0)
    r, c = np.meshgrid(np.arange(PET_MATRIX), np.arange(PET_MATRIX), indexing="ij")
    body = ((r - 31.5) / 26.0) ** 2 + ((c - 31.5) / 30.0) ** 2 <= 1.0

    def slice_bqml(k: int) -> np.ndarray:
        suv = np.where(body, 1.0, 0.0)
        for (z, y, x), radius, value in SPHERES:
            suv[(k - z) ** 2 + (r - y) ** 2 + (c - x) ** 2 <= radius ** 2] = value
        return suv * suv1
    return slice_bqml


@pytest.fixture(scope="session")
def petct_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PET 64×64×40 with two hot spheres, CT 128×128×40, written once per session."""
    folder = tmp_path_factory.mktemp("study")
    spec = StudySpec(ct_slices=SLICES, pet_slices=SLICES, pet_matrix=PET_MATRIX, ct_matrix=128,
                     ct_spacing_mm=PET_MATRIX * 3.5 / 128)
    write_petct_study(folder, spec, activity=_activity(spec))
    return folder


def storescu(node: NodeProcess, folder: Path) -> None:
    """Send a folder the way a scanner does: dcmtk storescu over one association."""
    done = dcmtk_storescu(node.dicom_port, folder, aec=node.ae_title)
    assert done.returncode == 0, done.stderr


def node_sessions(node: NodeProcess):
    url = node.config["node"].get("database_url") or f"sqlite:///{(node.data_dir / 'neuropetrix.db').resolve()}"
    return make_sessionmaker(make_engine(url))


def jobs_of(node: NodeProcess) -> list[dict]:
    with node_sessions(node)() as s:
        return sorted((job_json(j) for j in list_jobs(s)), key=lambda j: j["id"])


def events_of(node: NodeProcess, kind: str) -> list[Event]:
    with node_sessions(node)() as s:
        return list(s.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))


def wait_for(what: str, check: Callable[[], object], node: NodeProcess | None = None,
             timeout: float = 90.0, interval: float = 0.2) -> object:
    """Poll `check` until it returns something true; fail with the node's log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    log = node.log_text()[-6000:] if node is not None else ""
    pytest.fail(f"timed out waiting for {what}\n{log}")


def all_jobs_settled(node: NodeProcess, count: int) -> list[dict] | None:
    jobs = jobs_of(node)
    if len(jobs) == count and all(j["state"] in ("done", "failed") for j in jobs):
        return jobs
    return None


class Relay:
    """A TCP relay on a fixed port: a peer that is "down" (nothing listening) until `up()`."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target = target_port
        self._server: socket.socket | None = None
        self.connections = 0

    def up(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """tests/support/pg.py's throw-away cluster; yields its base URL, for a database per test."""
    if not pg.available():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    with pg.postgres_cluster() as url:
        yield url.rsplit("/", 1)[0]


class ManualClock:
    """A clock tests move by hand (engine/clock.py's protocol): leases and deadlines pass at once."""

    def __init__(self) -> None:
        self._now = utcnow()
        self._monotonic = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds
