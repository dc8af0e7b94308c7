"""Ingest throughput: the same PET/CT study sent by dcmtk `storescu` to our SCP, to dcmtk `storescp`
and to Orthanc, side by side in one run, several rounds, a fresh receiver each round and the order of
receivers rotated within rounds. Prints instances/s, MB/s, peak RSS and our ratio to each peer.

    .venv/bin/python benchmarks/ingest.py [--rounds 5] [--ct 300 --pet 300]

The sender is the same for all receivers: one association, TCP_NODELAY=1 (dcmtk otherwise leaves
Nagle's algorithm on and every receiver waits ~40 ms per instance for delayed ACKs).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.nodeproc import free_port, node_config, start_node, wait_for_port  # noqa: E402
from tests.support.peers import orthanc  # noqa: E402
from tests.support.synthetic import StudySpec, write_petct_study  # noqa: E402


def peak_rss_mib(proc: psutil.Process) -> float:
    """Peak resident set size (VmHWM) of the receiver process, in MiB."""
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def neuropetrix(workdir: Path, fsync: bool = True) -> Iterator[tuple[int, str, psutil.Process]]:
    config = node_config(workdir / "var", {"node": {"study_quiet_seconds": 3600, "log_level": "WARNING",
                                                    "fsync": fsync}})
    node = start_node(config, workdir)
    try:
        yield node.dicom_port, node.ae_title, psutil.Process(node.proc.pid)
    finally:
        node.stop()


def neuropetrix_nofsync(workdir: Path):
    """Our node with `node.fsync: false`: what durability costs (storescp never fsyncs)."""
    return neuropetrix(workdir, fsync=False)


@contextmanager
def storescp(workdir: Path) -> Iterator[tuple[int, str, psutil.Process]]:
    port = free_port()
    out = workdir / "storescp"
    out.mkdir(parents=True)
    proc = subprocess.Popen(["storescp", "-od", str(out), str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=proc)
        yield port, "STORESCP", psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait()


@contextmanager
def orthanc_pacs(workdir: Path) -> Iterator[tuple[int, str, psutil.Process]]:
    with orthanc(workdir / "orthanc") as pacs:
        procs = [p for p in psutil.Process().children() if "Orthanc" in p.name()]
        yield pacs.dicom_port, pacs.aet, procs[0]


RECEIVERS: dict[str, Callable] = {"neuropetrix": neuropetrix, "storescp": storescp, "orthanc": orthanc_pacs,
                                  "nofsync": neuropetrix_nofsync}


def send(study: Path, port: int, aet: str) -> float:
    start = time.perf_counter()
    result = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", aet, "+sd", "+r", "127.0.0.1", str(port),
                             str(study)], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"storescu to {aet} failed: {result.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ct", type=int, default=300)
    parser.add_argument("--pet", type=int, default=300)
    parser.add_argument("--study", type=Path, default=ROOT / "benchmarks" / "out" / "study")
    parser.add_argument("--only", nargs="+", choices=list(RECEIVERS), default=["neuropetrix", "storescp", "orthanc"],
                        help="receivers to compare (nofsync: ours without fsync, to show what durability costs)")
    args = parser.parse_args()
    # Every receiver and the sender run with Nagle off (dcmtk reads TCP_NODELAY, Orthanc links dcmtk).
    os.environ["TCP_NODELAY"] = "1"

    marker = args.study.parent / f".{args.study.name}-ct{args.ct}-pet{args.pet}"
    if not marker.exists():
        shutil.rmtree(args.study, ignore_errors=True)
        write_petct_study(args.study, StudySpec(ct_slices=args.ct, pet_slices=args.pet))
        marker.touch()
    files = [f for f in args.study.rglob("*.dcm")]
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    print(f"study: {len(files)} instances, {size_mb:.1f} MB ({args.ct} CT 512x512, {args.pet} PET 200x200)")

    names = args.only
    walls: dict[str, list[float]] = {name: [] for name in names}
    rss: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            with tempfile.TemporaryDirectory(prefix=f"ingest-{name}-", dir=ROOT / "benchmarks" / "out") as tmp:
                with RECEIVERS[name](Path(tmp)) as (port, aet, proc):
                    before = sum(proc.cpu_times()[:2])
                    walls[name].append(send(args.study, port, aet))
                    cpu[name].append(sum(proc.cpu_times()[:2]) - before)
                    rss[name].append(peak_rss_mib(proc))
        print(f"round {r + 1}: " + ", ".join(f"{n} {walls[n][-1]:.2f} s" for n in order), flush=True)

    print(f"\n{'receiver':<12} {'median s':>9} {'inst/s':>8} {'MB/s':>7} {'CPU ms/inst':>12} {'peak RSS MiB':>13}")
    med = {n: statistics.median(walls[n]) for n in names}
    for n in names:
        print(f"{n:<12} {med[n]:>9.2f} {len(files) / med[n]:>8.0f} {size_mb / med[n]:>7.1f} "
              f"{statistics.median(cpu[n]) / len(files) * 1000:>12.2f} {statistics.median(rss[n]):>13.0f}")
    print()
    for peer in [n for n in ("storescp", "orthanc", "nofsync") if n in names and "neuropetrix" in names]:
        paired = [ours / theirs for ours, theirs in zip(walls["neuropetrix"], walls[peer])]
        print(f"neuropetrix throughput / {peer}: {med[peer] / med['neuropetrix']:.2f}x "
              f"(paired wall-time ratios ours/{peer}: median {statistics.median(paired):.2f}, "
              f"min {min(paired):.2f}, max {max(paired):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
