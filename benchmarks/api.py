"""The API under load: 500 WebSocket clients connected to one node while studies arrive, and the REST
study list under 50 concurrent clients; with the node's CPU and memory.

    .venv/bin/python benchmarks/api.py [--clients 500] [--studies 20] [--rest-clients 50] [--rest-seconds 20]

Event latency is the time from an event's `created_at` (taken by the node just before the transaction
that writes it commits) to each client having the message parsed; every client must receive every
event (a miss is reported). It is split per event into the time to the first client (the writer's
commit, the feed's poll and read) and the spread from the first client to the last (the fan-out, which
includes this one client process parsing 500 copies). REST latency is the wall time of
`GET /api/studies?limit=50` with a valid token, 50 clients in a closed loop. The load generator runs on
the same machine as the node and shares its two cores: the figures include that contention.
Targets on the 2-core reference machine: event p99 < 200 ms, REST p99 < 100 ms.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.nodeproc import running_node  # noqa: E402
from tests.support.synthetic import StudySpec, write_petct_study  # noqa: E402

PASSWORD = "benchmark password"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class Usage:
    """CPU seconds and peak RSS of the node process (and its children) while a phase runs."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak_rss = 0
        self._stop = threading.Event()

    def _family(self) -> list[psutil.Process]:
        return [self.proc, *self.proc.children(recursive=True)]

    def _cpu(self) -> float:
        total = 0.0
        for p in self._family():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def __enter__(self) -> Usage:
        self.cpu0, self.t0 = self._cpu(), time.monotonic()
        threading.Thread(target=self._sample, daemon=True).start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.cpu_s = self._cpu() - self.cpu0
        self.wall_s = time.monotonic() - self.t0

    def report(self) -> dict:
        return {"cpu_percent_of_one_core": round(100 * self.cpu_s / self.wall_s, 1),
                "peak_rss_mib": round(self.peak_rss / 2**20, 1), "wall_s": round(self.wall_s, 1)}


async def ws_phase(base: str, token: str, clients: int, studies: list[Path], dicom_port: int) -> dict:
    received: list[dict[int, float]] = [{} for _ in range(clients)]   # per client: event id → latency
    created: dict[int, float] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        sockets = []
        for start in range(0, clients, 50):
            sockets += await asyncio.gather(*(http.ws_connect(f"{base}/api/ws", params={"token": token},
                                                              heartbeat=None, max_msg_size=0)
                                              for _ in range(start, min(clients, start + 50))))
        for ws in sockets:
            assert (await ws.receive_json(timeout=30))["type"] == "hello"

        async def reader(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                data = json.loads(msg.data)
                if data["type"] == "event":
                    now = time.time()
                    at = datetime.fromisoformat(data["created_at"][:-1]).replace(tzinfo=UTC).timestamp()
                    created[data["id"]] = at
                    received[i][data["id"]] = now - at

        readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(sockets)]
        env = dict(os.environ, TCP_NODELAY="1")
        for folder in studies:       # one association per study, as scanners send them
            proc = await asyncio.create_subprocess_exec(
                "storescu", "-aet", "STORESCU", "-aec", "NEUROPETRIX", "+sd", "+r", "127.0.0.1", str(dicom_port),
                str(folder), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            _, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            await asyncio.sleep(0.3)
        expected = 2 * len(studies)              # study.received and study.complete of each
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and min(len(r) for r in received) < expected:
            await asyncio.sleep(0.2)
        for ws in sockets:
            await ws.close()
        for t in readers:
            t.cancel()
    latencies = [v * 1000 for r in received for v in r.values()]
    # per event: to the first client (writer's commit, the poll, the read) and the spread to the last (fan-out)
    first = [min(r[i] for r in received if i in r) * 1000 for i in created]
    spread = [max(r[i] for r in received if i in r) * 1000 - f for i, f in zip(created, first, strict=True)]
    return {"clients": clients, "events": len(created), "expected_events": 2 * len(studies),
            "deliveries": len(latencies), "missed": clients * len(created) - len(latencies),
            "event_latency_ms": {"p50": round(pct(latencies, 50), 1), "p99": round(pct(latencies, 99), 1),
                                 "max": round(max(latencies), 1)},
            "first_client_ms": {"p50": round(pct(first, 50), 1), "max": round(max(first), 1)},
            "fan_out_spread_ms": {"p50": round(pct(spread, 50), 1), "max": round(max(spread), 1)}}


async def rest_phase(base: str, token: str, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}
    stop_at = time.monotonic() + seconds

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            async with http.get(f"{base}/api/studies?limit=50", headers=headers) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
            latencies.append((time.perf_counter() - t0) * 1000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return {"clients": clients, "requests": len(latencies), "errors": errors,
            "requests_per_s": round(len(latencies) / seconds, 1),
            "latency_ms": {"p50": round(pct(latencies, 50), 1), "p99": round(pct(latencies, 99), 1),
                           "mean": round(statistics.fmean(latencies), 1)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--studies", type=int, default=20)
    ap.add_argument("--rest-clients", type=int, default=50)
    ap.add_argument("--rest-seconds", type=float, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="np-bench-api-") as tmp:
        work = Path(tmp)
        studies = []
        for i in range(args.studies):
            folder = work / "studies" / str(i)
            write_petct_study(folder, StudySpec(ct_slices=2, pet_slices=2, ct_matrix=64, pet_matrix=32,
                                                accession_number=f"BENCH{i:03d}"))
            studies.append(folder)
        with running_node(work / "node", {"node": {"study_quiet_seconds": 1, "log_level": "WARNING"}}) as node:
            added = node.cli("users", "add", "bench", "--role", "physician", input=PASSWORD + "\n")
            assert added.returncode == 0, added.stderr
            base = f"http://127.0.0.1:{node.api_port}"

            async def run() -> dict:
                async with aiohttp.ClientSession() as http, \
                        http.post(f"{base}/api/auth/login", json={"username": "bench", "password": PASSWORD}) as r:
                    token = (await r.json())["access_token"]
                with Usage(node.proc.pid) as ws_usage:
                    ws = await ws_phase(base, token, args.clients, studies, node.dicom_port)
                with Usage(node.proc.pid) as rest_usage:
                    rest = await rest_phase(base, token, args.rest_clients, args.rest_seconds)
                return {"websocket": {**ws, "node": ws_usage.report()},
                        "rest": {**rest, "node": rest_usage.report()}}

            result = asyncio.run(run())
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    out = ROOT / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    (out / "api.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
