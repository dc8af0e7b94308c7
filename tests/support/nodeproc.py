"""Start the real node (`neuropetrix serve`) as a subprocess on loopback, for tests and benchmarks."""
from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCANNER_AE = "STORESCU"   # dcmtk storescu's default calling AE title, configured as a known peer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout} s")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def node_config(data_dir: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A config on free loopback ports with a scanner peer (AE STORESCU) and a short quiet time."""
    base = {
        "node": {"ae_title": "NEUROPETRIX", "dicom_host": "127.0.0.1", "dicom_port": free_port(),
                 "api_host": "127.0.0.1", "api_port": free_port(), "data_dir": str(data_dir),
                 "study_quiet_seconds": 2, "log_level": "INFO"},
        "peers": [{"name": "scanner", "ae_title": SCANNER_AE, "host": "127.0.0.1", "port": free_port()}],
        "routes": [],
    }
    return _merge(base, overrides or {})


@dataclass
class NodeProcess:
    proc: subprocess.Popen
    config: dict[str, Any]
    config_path: Path
    log_path: Path

    @property
    def dicom_port(self) -> int:
        return self.config["node"]["dicom_port"]

    @property
    def api_port(self) -> int:
        return self.config["node"]["api_port"]

    @property
    def ae_title(self) -> str:
        return self.config["node"]["ae_title"]

    @property
    def data_dir(self) -> Path:
        return Path(self.config["node"]["data_dir"])

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        """Run another `neuropetrix` command against this node's configuration."""
        return run_cli(*args, "--config", str(self.config_path), input=input)


def run_cli(*args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neuropetrix", *args], capture_output=True,
                          text=True, input=input, timeout=timeout, cwd=ROOT)


def _open_file_limit(soft: int, hard: int) -> Callable[[], None]:
    """A preexec_fn giving the child process these limits of open files (a fault to reproduce)."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def start_node(config: dict[str, Any], workdir: Path, open_files: tuple[int, int] | None = None) -> NodeProcess:
    """The node in a subprocess; `open_files` = its (soft, hard) RLIMIT_NOFILE."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "node.yaml"
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    log_path = workdir / f"node-{int(time.time() * 1000)}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEUROPETRIX_")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "neuropetrix", "serve", "--config",
                                 str(config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                preexec_fn=_open_file_limit(*open_files) if open_files else None)
    node = NodeProcess(proc, config, config_path, log_path)
    try:
        wait_for_port(node.dicom_port, proc=proc)
    except Exception:
        node.stop(signal.SIGKILL)
        raise RuntimeError(f"node did not start:\n{node.log_text()}") from None
    return node


@contextmanager
def running_node(workdir: Path, overrides: dict[str, Any] | None = None,
                 config: dict[str, Any] | None = None,
                 open_files: tuple[int, int] | None = None) -> Iterator[NodeProcess]:
    """A node for the duration of a `with` block; `config` reuses an earlier one (a restart)."""
    node = start_node(config or node_config(workdir / "var", overrides), workdir, open_files)
    try:
        yield node
    finally:
        node.stop()
