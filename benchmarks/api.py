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

The floor, in the same run: a bare aiohttp server in its own process (FLOOR_SERVER) that the same
client code measures the same way. After our WebSocket phase it gets the event messages our node sent,
with the gaps between their `created_at`, and broadcasts each to its 500 clients (`send_str` in a loop,
`created_at` stamped just before); for REST it returns the body our node gave for the same request,
as bytes, to the same 50-client closed loop. Printed: ours, the floor and the ratio of the p99s, per
round and the median over `--rounds`. Targets: event p99 within 2× the floor, REST p99 within 3×.
The floor broadcasts while no study arrives (nothing else runs in its process), so it is the harder
floor: our node fans out while its SCP threads ingest, on the same two cores.

Beside the clients' split, the node's own stages from its /metrics (`node_stages`, histogram means
and the bucket bounds p50/p99 fall under): `feed_lag_ms` (an event's creation to the feed's read: the
writer's commit, the wake-up, the read), `commit_to_read_ms` (of that, from the commit in the node's
process to the read) and `fan_out_per_batch_ms` (one batch written to all 500 sockets). And for each
phase the serving thread's time, ours (the node's event loop, the OS thread named "api") and the
floor's (its one thread), from Linux's schedstat: seconds on a CPU and seconds runnable but waiting for
one. On a loaded machine the second is most of a tail, ours and the floor's alike; our extra CPU per
request or event is what we own.
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
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import psutil
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.nodeproc import free_port, running_node, wait_for_port  # noqa: E402
from tests.support.synthetic import StudySpec, write_petct_study  # noqa: E402

PASSWORD = "benchmark password"
# the node's own stage timings (neuropetrix/metrics.py), read from /metrics around the WebSocket phase
STAGES = {"feed_lag_ms": "neuropetrix_event_feed_lag_seconds", "commit_to_read_ms": "neuropetrix_event_read_seconds",
          "fan_out_per_batch_ms": "neuropetrix_event_fanout_seconds"}

FLOOR_SERVER = r"""
import asyncio, json, sys
from datetime import UTC, datetime
from aiohttp import web

clients = set()
rest = {"body": b"[]"}
tasks = set()


async def ws(request):
    sock = web.WebSocketResponse(heartbeat=None)
    await sock.prepare(request)
    await sock.send_str(json.dumps({"type": "hello"}))
    clients.add(sock)
    try:
        async for _ in sock:
            pass
    finally:
        clients.discard(sock)
    return sock


async def broadcast(plan):
    for delay, message in plan:
        await asyncio.sleep(delay)
        message["created_at"] = datetime.now(UTC).replace(tzinfo=None).isoformat() + "Z"
        text = json.dumps(message, ensure_ascii=False)     # as the node serialises it: the same bytes
        for sock in list(clients):
            await sock.send_str(text)


async def emit(request):
    task = asyncio.get_running_loop().create_task(broadcast(await request.json()))
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return web.Response(text="ok")


async def set_rest(request):
    rest["body"] = await request.read()
    return web.Response(text="ok")


async def studies(request):
    return web.Response(body=rest["body"], content_type="application/json")


app = web.Application()
app.add_routes([web.get("/api/ws", ws), web.post("/emit", emit), web.post("/rest", set_rest),
                web.get("/api/studies", studies)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def thread_named(pid: int, name: str) -> int:
    """The id of the process's thread called `name` (the node's event loop runs in "api")."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().strip() == name:
            return int(task.name)
    raise LookupError(f"no thread {name!r} in process {pid}")


def schedstat(pid: int, tid: int) -> tuple[float, float]:
    """A thread's seconds on a CPU and seconds runnable but waiting for one (Linux schedstat)."""
    on_cpu, waiting, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
    return int(on_cpu) / 1e9, int(waiting) / 1e9


class Usage:
    """CPU seconds and peak RSS of the node process (and its children) while a phase runs, and of the
    thread that serves (the node's event loop, the floor's main thread): its CPU seconds and the
    seconds it was runnable but waited for a CPU (the machine's other load, and the process's own
    threads: the GIL hands over on each socket write)."""

    def __init__(self, pid: int, serving_thread: str | None = None) -> None:
        self.proc = psutil.Process(pid)
        self.tid = thread_named(pid, serving_thread) if serving_thread else pid
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
        self.sched0 = schedstat(self.proc.pid, self.tid)
        threading.Thread(target=self._sample, daemon=True).start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.cpu_s = self._cpu() - self.cpu0
        self.wall_s = time.monotonic() - self.t0
        self.sched = [b - a for a, b in zip(self.sched0, schedstat(self.proc.pid, self.tid), strict=True)]

    def report(self) -> dict:
        return {"cpu_percent_of_one_core": round(100 * self.cpu_s / self.wall_s, 1),
                "peak_rss_mib": round(self.peak_rss / 2**20, 1), "wall_s": round(self.wall_s, 1),
                "serving_thread": {"cpu_s": round(self.sched[0], 2), "waited_for_cpu_s": round(self.sched[1], 2)}}


async def send_studies(studies: list[Path], dicom_port: int) -> None:
    """The events' cause for our node: one storescu association per study, as scanners send them."""
    env = dict(os.environ, TCP_NODELAY="1")
    for folder in studies:
        proc = await asyncio.create_subprocess_exec(
            "storescu", "-aet", "STORESCU", "-aec", "NEUROPETRIX", "+sd", "+r", "127.0.0.1", str(dicom_port),
            str(folder), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        await asyncio.sleep(0.3)


def replay_plan(messages: dict[int, dict]) -> list[tuple[float, dict]]:
    """Our events in id order, each with the gap after the previous one's `created_at`."""
    plan, last = [], None
    for _, message in sorted(messages.items()):
        at = datetime.fromisoformat(message["created_at"][:-1]).timestamp()
        plan.append((0.0 if last is None else max(0.0, at - last), message))
        last = at
    return plan


async def ws_phase(base: str, token: str, clients: int, expected: int,
                   cause: Callable[[], Awaitable[None]]) -> tuple[dict, dict[int, dict]]:
    """`clients` sockets on `base`, `cause()` makes `expected` events; their latencies, and the messages
    the first client got (for the floor's replay)."""
    received: list[dict[int, float]] = [{} for _ in range(clients)]   # per client: event id → latency
    created: dict[int, float] = {}
    messages: dict[int, dict] = {}
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
                    if i == 0:
                        messages[data["id"]] = data

        readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(sockets)]
        await cause()
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
    return {"clients": clients, "events": len(created), "expected_events": expected,
            "deliveries": len(latencies), "missed": clients * len(created) - len(latencies),
            "event_latency_ms": {"p50": round(pct(latencies, 50), 1), "p99": round(pct(latencies, 99), 1),
                                 "max": round(max(latencies), 1)},
            "first_client_ms": {"p50": round(pct(first, 50), 1), "max": round(max(first), 1)},
            "fan_out_spread_ms": {"p50": round(pct(spread, 50), 1), "max": round(max(spread), 1)}}, messages


async def stage_histograms(base: str) -> dict[str, dict]:
    """The node's stage histograms from /metrics: cumulative bucket counts by upper bound, sum, count."""
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as r:
        text = await r.text()
    out: dict[str, dict] = {}
    for family in text_string_to_metric_families(text):
        if family.name in STAGES.values():
            h = out.setdefault(family.name, {"buckets": {}, "sum": 0.0, "count": 0.0})
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    h["buckets"][float(sample.labels["le"])] = sample.value
                elif sample.name.endswith("_sum"):
                    h["sum"] = sample.value
                elif sample.name.endswith("_count"):
                    h["count"] = sample.value
    return out


def stage_figures(before: dict, after: dict) -> dict:
    """Per stage between two readings: how many, the mean, and the bucket bounds p50 and p99 fall under."""
    figures = {}
    for key, name in STAGES.items():
        a, b = after.get(name), before.get(name, {"buckets": {}, "sum": 0.0, "count": 0.0})
        n = (a["count"] - b["count"]) if a else 0
        if not n:
            continue
        counts = {le: a["buckets"][le] - b["buckets"].get(le, 0.0) for le in sorted(a["buckets"])}
        under = {q: 1000 * next(le for le, c in counts.items() if c >= q * n) for q in (0.5, 0.99)}
        figures[key] = {"n": int(n), "mean": round(1000 * (a["sum"] - b["sum"]) / n, 2),
                        "p50_under": under[0.5], "p99_under": under[0.99]}
    return figures


async def rest_phase(base: str, token: str, clients: int, seconds: float) -> dict:
    """`clients` in a closed loop on GET /api/studies?limit=50 for `seconds`."""
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


@contextmanager
def floor_server() -> Iterator[tuple[str, int]]:
    """The bare aiohttp floor in its own process; yields its base URL and process id."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", FLOOR_SERVER, str(port)])
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


async def floor_round(base: str, pid: int, clients: int, rest_clients: int, rest_seconds: float,
                      messages: dict[int, dict], rest_body: bytes) -> tuple[dict, dict]:
    """The floor's WebSocket phase (our `messages` replayed) and REST phase (our `rest_body`)."""
    async def cause() -> None:
        async with aiohttp.ClientSession() as http, http.post(f"{base}/emit", json=replay_plan(messages)) as r:
            assert r.status == 200

    async with aiohttp.ClientSession() as http, http.post(f"{base}/rest", data=rest_body) as r:
        assert r.status == 200
    with Usage(pid) as ws_usage:
        ws, _ = await ws_phase(base, "floor", clients, len(messages), cause)
    with Usage(pid) as rest_usage:
        rest = await rest_phase(base, "floor", rest_clients, rest_seconds)
    return {**ws, "server": ws_usage.report()}, {**rest, "server": rest_usage.report()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--studies", type=int, default=20, help="studies sent per round")
    ap.add_argument("--rest-clients", type=int, default=50)
    ap.add_argument("--rest-seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="np-bench-api-") as tmp:
        work = Path(tmp)
        studies = []
        for i in range(args.studies * args.rounds):
            folder = work / "studies" / str(i)
            write_petct_study(folder, StudySpec(ct_slices=2, pet_slices=2, ct_matrix=64, pet_matrix=32,
                                                accession_number=f"BENCH{i:03d}"))
            studies.append(folder)
        with running_node(work / "node", {"node": {"study_quiet_seconds": 1, "log_level": "WARNING"}}) as node, \
                floor_server() as (floor_base, floor_pid):
            added = node.cli("users", "add", "bench", "--role", "physician", input=PASSWORD + "\n")
            assert added.returncode == 0, added.stderr
            base = f"http://127.0.0.1:{node.api_port}"

            async def run() -> list[dict]:
                async with aiohttp.ClientSession() as http, \
                        http.post(f"{base}/api/auth/login", json={"username": "bench", "password": PASSWORD}) as r:
                    token = (await r.json())["access_token"]
                rounds = []
                for k in range(args.rounds):
                    batch = studies[k * args.studies:(k + 1) * args.studies]
                    before = await stage_histograms(base)
                    with Usage(node.proc.pid, "api") as ws_usage:
                        ws, messages = await ws_phase(base, token, args.clients, 2 * len(batch),
                                                      lambda batch=batch: send_studies(batch, node.dicom_port))
                    ws["node_stages"] = stage_figures(before, await stage_histograms(base))
                    with Usage(node.proc.pid, "api") as rest_usage:
                        rest = await rest_phase(base, token, args.rest_clients, args.rest_seconds)
                    async with aiohttp.ClientSession() as http, http.get(
                            f"{base}/api/studies?limit=50", headers={"Authorization": f"Bearer {token}"}) as r:
                        body = await r.read()
                    floor_ws, floor_rest = await floor_round(floor_base, floor_pid, args.clients, args.rest_clients,
                                                             args.rest_seconds, messages, body)
                    rounds.append({"websocket": {**ws, "node": ws_usage.report()},
                                   "rest": {**rest, "node": rest_usage.report()},
                                   "floor": {"websocket": floor_ws, "rest": floor_rest}})
                return rounds

            rounds = asyncio.run(run())
    result = {"rounds": rounds, "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                                            "load_average_start": load_start,
                                            "load_average_end": os.getloadavg()}}
    out = ROOT / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    (out / "api.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"load average {' '.join(f'{v:.1f}' for v in load_start)} at start, "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} at end")
    for name, key, target in (("event p99", ("websocket", "event_latency_ms"), 2),
                              ("REST p99", ("rest", "latency_ms"), 3)):
        ours = [r[key[0]][key[1]]["p99"] for r in rounds]
        floor = [r["floor"][key[0]][key[1]]["p99"] for r in rounds]
        ratios = [o / f for o, f in zip(ours, floor)]
        print(f"{name:<10} ours {statistics.median(ours):7.1f} ms  floor {statistics.median(floor):7.1f} ms  "
              f"ratio {statistics.median(ratios):5.2f} (target ≤ {target}; rounds "
              f"{', '.join(f'{o:.0f}/{f:.0f}' for o, f in zip(ours, floor))})")
    for phase in ("websocket", "rest"):
        ours = [r[phase]["node"]["serving_thread"] for r in rounds]
        floor = [r["floor"][phase]["server"]["serving_thread"] for r in rounds]
        print(f"{phase:<10} serving thread: ours CPU {statistics.median(t['cpu_s'] for t in ours):5.2f} s, "
              f"waited for a CPU {statistics.median(t['waited_for_cpu_s'] for t in ours):5.2f} s; floor CPU "
              f"{statistics.median(t['cpu_s'] for t in floor):5.2f} s, waited "
              f"{statistics.median(t['waited_for_cpu_s'] for t in floor):5.2f} s (medians)")
    missed = sum(r["websocket"]["missed"] + r["floor"]["websocket"]["missed"] for r in rounds)
    if missed:
        print(f"MISSED deliveries: {missed}")


if __name__ == "__main__":
    main()
