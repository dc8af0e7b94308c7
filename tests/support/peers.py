"""Real peers started by the tests themselves on loopback: Orthanc (a PACS with a REST API), dcmtk's
storescp (a PACS that writes what it receives to a folder) and dcmtk's dcmqrscp (a Query/Retrieve PACS
whose study-level C-FIND answers carry no ModalitiesInStudy, as many PACS do).

    with orthanc(tmp_path) as pacs:
        upload(pacs, path)                      # REST POST /instances
        pacs.get("/instances")                  # JSON from the REST API
        # or C-STORE to 127.0.0.1:pacs.dicom_port, called AE pacs.aet

Orthanc runs from a generated JSON configuration with its storage and index under `tmp_dir`, HTTP
limited to this machine, no authentication and no called-AE check, and is terminated on exit.

    with storescp(tmp_path / "pacs", "PACS") as port:    # options=("+tls", key, cert, "+cf", ca) for TLS
        ...                                             # what arrived lies in tmp_path / "pacs"

    with dcmqrscp(tmp_path / "qr", files, {"NEUROPETRIX": node_port}) as port:   # AE QRSCP
        ...                                             # C-FIND, C-MOVE to NEUROPETRIX at 127.0.0.1:node_port
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.nodeproc import free_port, wait_for_port

ORTHANC_AET = "ORTHANC"
# Debian package orthanc-dicomweb: QIDO-RS, WADO-RS (frames too), STOW-RS under /dicom-web/
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: its ports, AE title and REST base URL."""

    dicom_port: int
    http_port: int
    aet: str
    url: str
    log: Path

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json") -> bytes:
        """One REST call; raises urllib.error.HTTPError on a non-2xx answer."""
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Content-Type": content_type} if body is not None else {})
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.read()

    def get(self, path: str) -> Any:
        """GET `path` and decode its JSON."""
        return json.loads(self.request("GET", path))


def _wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/system", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise TimeoutError(f"Orthanc did not answer GET /system within {timeout} s; log: {log}")


@contextmanager
def orthanc(tmp_dir: Path, timeout: float = 30.0, plugins: Sequence[str] = (),
            modalities: Mapping[str, tuple[str, str, int]] | None = None,
            settings: Mapping[str, Any] | None = None) -> Iterator[Orthanc]:
    """Start Orthanc on free loopback ports with its data in `tmp_dir`; stop it on exit. `plugins` are
    shared-library paths (e.g. DICOMWEB_PLUGIN); `modalities` the AEs it knows by name, (AE title,
    host, port) each: where it may C-MOVE to and who may query it; `settings` more configuration keys."""
    exe = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    if exe is None:
        raise RuntimeError("Orthanc is not installed: run `make peers` (Debian package orthanc)")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "neuropetrix-test",
        "StorageDirectory": str(tmp_dir / "storage"),
        "IndexDirectory": str(tmp_dir / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": ORTHANC_AET,
        "DicomCheckCalledAet": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpServerEnabled": True,
        "DicomServerEnabled": True,
        "Plugins": list(plugins),
        "StableAge": 1,
        "DicomModalities": {name: list(aet_host_port) for name, aet_host_port in (modalities or {}).items()},
        **(settings or {}),
    }
    config_path = tmp_dir / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log = tmp_dir / "orthanc.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen([exe, str(config_path)], stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    try:
        _wait_ready(proc, url, log, timeout)
        yield Orthanc(dicom_port=dicom_port, http_port=http_port, aet=ORTHANC_AET, url=url, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def upload(server: Orthanc, path: Path) -> dict[str, Any]:
    """Store one DICOM file through REST `POST /instances`; returns Orthanc's answer (ID, Status, …)."""
    return json.loads(server.request("POST", "/instances", Path(path).read_bytes(), "application/dicom"))


@contextmanager
def storescp(out: Path, aet: str = "PACS", options: Sequence[str] = (), log: Path | None = None,
             port: int | None = None) -> Iterator[int]:
    """A dcmtk storescp called `aet` on `port` (a free loopback one if None), writing what it receives into `out`;
    `options` go before the port (`+tls key cert +cf ca`: TLS only, the caller's certificate required);
    given `log`, its debug log there (each association's negotiation). Yields the port once it listens."""
    exe = shutil.which("storescp")
    if exe is None:
        raise RuntimeError("storescp (Debian package dcmtk) is not installed: run `make peers`")
    out.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    debug = ["-d"] if log is not None else []
    with _dcmtk_server([exe, *debug, "-aet", aet, "-od", str(out), *options, str(port)], port, log):
        yield port


QRSCP_AET = "QRSCP"


@contextmanager
def dcmqrscp(tmp_dir: Path, files: Sequence[Path], destinations: Mapping[str, int]) -> Iterator[int]:
    """A dcmtk dcmqrscp called QRSCP on a free loopback port holding `files` (indexed in place by
    dcmqridx), answering C-FIND (Patient and Study Root; no ModalitiesInStudy) and C-MOVE to each AE
    title of `destinations` at 127.0.0.1:port; any caller is served. Its debug log is tmp_dir/dcmqrscp.log."""
    exe, index = shutil.which("dcmqrscp"), shutil.which("dcmqridx")
    if exe is None or index is None:
        raise RuntimeError("dcmqrscp (Debian package dcmtk) is not installed: run `make peers`")
    storage = tmp_dir / "db"
    storage.mkdir(parents=True, exist_ok=True)
    indexed = subprocess.run([index, str(storage), *map(str, files)], capture_output=True, text=True)
    if indexed.returncode:
        raise RuntimeError(f"dcmqridx failed: {indexed.stderr}")
    port = free_port()
    hosts = "\n".join(f"dest{i} = ({aet}, 127.0.0.1, {p})" for i, (aet, p) in enumerate(destinations.items()))
    config = tmp_dir / "dcmqrscp.cfg"
    config.write_text(f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
                      f"HostTable BEGIN\n{hosts}\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
                      f"AETable BEGIN\n{QRSCP_AET} {storage} RW (200, 1024mb) ANY\nAETable END\n")
    with _dcmtk_server([exe, "-d", "-c", str(config)], port, tmp_dir / "dcmqrscp.log"):
        yield port


@contextmanager
def _dcmtk_server(command: list[str], port: int, log: Path | None) -> Iterator[None]:
    """A dcmtk server running `command` (its output in `log`) from when it listens on `port` to the
    end of the block. TCP_NODELAY: dcmtk stalls on delayed ACKs without it (FACTS.md)."""
    with open(log or os.devnull, "w") as sink:
        proc = subprocess.Popen(command, env=dict(os.environ, TCP_NODELAY="1"), stdout=sink, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, proc=proc)
            yield
        finally:
            proc.terminate()
            proc.wait(15)
