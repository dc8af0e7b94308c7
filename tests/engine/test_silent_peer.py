"""Issue 14, fault 2: a PACS that accepts the association's TCP connection and never answers ties up at
most one delivery lane, while another PACS's studies go out at once (before the silent one's first
attempt has even timed out)."""
from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from tests.engine.conftest import FAST_ENGINE, jobs_of, storescu, wait_for
from tests.support.nodeproc import free_port, running_node
from tests.support.peers import orthanc
from tests.support.synthetic import StudySpec, write_petct_study

pytestmark = [pytest.mark.faults, pytest.mark.peers]
STUDIES = 6


class SilentPeer:
    """Accepts every connection, reads whatever comes, answers nothing; counts connections open at once."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", free_port()))
        self.port = self.server.getsockname()[1]
        self.open = self.most_open = 0
        self._lock = threading.Lock()
        self._clients: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self._lock:
                self._clients.append(client)
                self.open += 1
                self.most_open = max(self.most_open, self.open)
            threading.Thread(target=self._swallow, args=(client,), daemon=True).start()

    def _swallow(self, client: socket.socket) -> None:
        try:
            while client.recv(65536):
                pass
        except OSError:
            pass
        with self._lock:
            self.open -= 1

    def close(self) -> None:
        self.server.close()
        with self._lock:
            for c in self._clients:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_a_silent_pacs_holds_one_lane_and_the_healthy_one_gets_every_study(tmp_path: Path) -> None:
    folders = []
    for i in range(STUDIES):
        folder = tmp_path / f"study{i}"
        write_petct_study(folder, StudySpec(ct_slices=2, pet_slices=2, ct_matrix=32, pet_matrix=16))
        folders.append(folder)
    silent = SilentPeer()
    try:
        with orthanc(tmp_path / "orthanc") as pacs:
            config = {
                "peers": [{"name": "scanner", "ae_title": "STORESCU", "host": "127.0.0.1", "port": free_port()},
                          {"name": "silent", "ae_title": "SILENT", "host": "127.0.0.1", "port": silent.port,
                           "timeout": 600},
                          {"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs.dicom_port}],
                "engine": {**FAST_ENGINE, "workers": 4},
                "routes": [{"name": "both", "match": {"modality": "PT"},
                            "actions": [{"forward": "silent"}, {"forward": "pacs"}]}]}
            with running_node(tmp_path / "node", config) as node:
                for folder in folders:
                    storescu(node, folder)

                def healthy_done() -> list[dict] | None:
                    jobs = [j for j in jobs_of(node) if j["destination"] == "dicom:pacs"]
                    return jobs if len(jobs) == STUDIES and all(j["state"] == "done" for j in jobs) else None

                wait_for("every study delivered to the healthy PACS", healthy_done, node, timeout=25)
                silent_jobs = [j for j in jobs_of(node) if j["destination"] == "dicom:silent"]
                # the silent peer's first attempt still waits for its association answer (its timeout is
                # 600 s, far beyond the run); its other studies wait behind it, not beside it
                assert len(silent_jobs) == STUDIES and all(not j["last_error"] for j in silent_jobs), silent_jobs
                assert sum(j["state"] == "running" for j in silent_jobs) == 1, silent_jobs
                assert silent.most_open == 1
                assert len(pacs.get("/studies")) == STUDIES
                silent.close()                      # the stuck attempt fails now; the node stops at once
    finally:
        silent.close()
