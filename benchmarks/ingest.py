"""Ingest throughput: the same PET/CT images sent by dcmtk `storescu` to our SCP, to dcmtk `storescp`
and to Orthanc, side by side in one run, several rounds, a fresh receiver each round and the order of
receivers rotated within rounds. Prints wall time, instances/s, MB/s, CPU per instance, peak RSS and
our ratio to each peer, for each mode:

- 1 stream: one study (CT + PET) over one association, one C-STORE outstanding (a scanner sending);
- 4 streams: four studies of a quarter of the instances each, four `storescu` processes at once (four
  scanners); storescp then runs with `--fork`, one process per association, as dcmtk serves several.

    .venv/bin/python benchmarks/ingest.py [--rounds 5] [--ct 300 --pet 300] [--streams 1 4]

Our node runs as in production: `node.fsync: true` (every instance's data and name fsync'd before its
answer); `--only ... nofsync` adds it without fsync, to show what durability costs (storescp and
Orthanc never fsync). After the rounds our node takes a study twice as large over one association, so
that its peak RSS is printed for two study sizes (it must not grow with the study).

The sender is the same for all receivers, with TCP_NODELAY=1 (dcmtk otherwise leaves Nagle's
algorithm on and every receiver waits ~40 ms per instance for delayed ACKs).
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

OUT = ROOT / "benchmarks" / "out"


def peak_rss_mib(proc: psutil.Process) -> float:
    """Peak resident set size (VmHWM) of the receiver process, in MiB (for storescp --fork: the
    largest of the parent and its live children)."""
    peaks = []
    for p in [proc, *proc.children(recursive=True)]:
        try:
            status = Path(f"/proc/{p.pid}/status").read_text()
        except FileNotFoundError:
            continue
        peaks += [int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")]
    return max(peaks, default=float("nan"))


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU of the receiver, its reaped children and its live ones."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + (t.children_user + t.children_system if p is proc else 0.0)
    return total


@contextmanager
def neuropetrix(workdir: Path, streams: int, fsync: bool = True) -> Iterator[tuple[int, str, psutil.Process]]:
    config = node_config(workdir / "var", {"node": {"study_quiet_seconds": 3600, "log_level": "WARNING",
                                                    "fsync": fsync}})
    node = start_node(config, workdir)
    try:
        yield node.dicom_port, node.ae_title, psutil.Process(node.proc.pid)
    finally:
        node.stop()


def neuropetrix_nofsync(workdir: Path, streams: int):
    """Our node with `node.fsync: false`: what durability costs (storescp never fsyncs)."""
    return neuropetrix(workdir, streams, fsync=False)


@contextmanager
def storescp(workdir: Path, streams: int) -> Iterator[tuple[int, str, psutil.Process]]:
    port = free_port()
    out = workdir / "storescp"
    out.mkdir(parents=True)
    fork = ["--fork"] if streams > 1 else []      # single-process storescp serves one association at a time
    proc = subprocess.Popen(["storescp", *fork, "-od", str(out), str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=proc)
        yield port, "STORESCP", psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait()


@contextmanager
def orthanc_pacs(workdir: Path, streams: int) -> Iterator[tuple[int, str, psutil.Process]]:
    with orthanc(workdir / "orthanc") as pacs:
        procs = [p for p in psutil.Process().children() if "Orthanc" in p.name()]
        yield pacs.dicom_port, pacs.aet, procs[0]


RECEIVERS: dict[str, Callable] = {"neuropetrix": neuropetrix, "storescp": storescp, "orthanc": orthanc_pacs,
                                  "nofsync": neuropetrix_nofsync}


def send(studies: list[Path], port: int, aet: str) -> float:
    """Wall time for `storescu` processes, one per study and all at once, to send every study."""
    start = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aet", "STORESCU", "-aec", aet, "+sd", "+r", "127.0.0.1", str(port),
                               str(study)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for study in studies]
    results = [(p, *p.communicate()) for p in procs]
    elapsed = time.perf_counter() - start
    for p, _, err in results:
        if p.returncode != 0:
            raise RuntimeError(f"storescu to {aet} failed: {err[-2000:]}")
    return elapsed


def studies(ct: int, pet: int, streams: int) -> list[Path]:
    """`streams` studies holding `ct` CT and `pet` PET instances between them, made once and kept."""
    base = OUT / ("study" if streams == 1 else f"study-x{streams}")
    marker = base.parent / f".{base.name}-ct{ct}-pet{pet}"
    folders = [base] if streams == 1 else [base / str(i) for i in range(streams)]
    if not marker.exists():
        shutil.rmtree(base, ignore_errors=True)
        for folder in folders:
            write_petct_study(folder, StudySpec(ct_slices=ct // streams, pet_slices=pet // streams))
        marker.touch()
    return folders


def measure(name: str, folders: list[Path]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MiB) of receiver `name` taking `folders`, one stream each."""
    with tempfile.TemporaryDirectory(prefix=f"ingest-{name}-", dir=OUT) as tmp:
        with RECEIVERS[name](Path(tmp), len(folders)) as (port, aet, proc):
            before = cpu_seconds(proc)
            wall = send(folders, port, aet)
            time.sleep(0.2)          # storescp --fork: its children finish and are reaped
            return wall, cpu_seconds(proc) - before, peak_rss_mib(proc)


def report(streams: int, names: list[str], count: int, size_mb: float,
           runs: dict[str, list[tuple[float, float, float]]]) -> None:
    print(f"\n{streams} stream(s), {count} instances, {size_mb:.1f} MB")
    print(f"{'receiver':<12} {'median s':>9} {'inst/s':>8} {'MB/s':>7} {'CPU ms/inst':>12} {'peak RSS MiB':>13}")
    med = {n: statistics.median(w for w, _, _ in runs[n]) for n in names}
    for n in names:
        cpu = statistics.median(c for _, c, _ in runs[n])
        rss = statistics.median(r for _, _, r in runs[n])
        print(f"{n:<12} {med[n]:>9.2f} {count / med[n]:>8.0f} {size_mb / med[n]:>7.1f} "
              f"{cpu / count * 1000:>12.2f} {rss:>13.0f}")
    for peer in [n for n in ("storescp", "orthanc", "nofsync") if n in names and "neuropetrix" in names]:
        paired = [ours[0] / theirs[0] for ours, theirs in zip(runs["neuropetrix"], runs[peer])]
        print(f"neuropetrix throughput / {peer}: {med[peer] / med['neuropetrix']:.2f}x "
              f"(paired wall-time ratios ours/{peer}: median {statistics.median(paired):.2f}, "
              f"min {min(paired):.2f}, max {max(paired):.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ct", type=int, default=300)
    parser.add_argument("--pet", type=int, default=300)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4],
                        help="modes: parallel associations (storescu processes), each its own study")
    parser.add_argument("--only", nargs="+", choices=list(RECEIVERS), default=["neuropetrix", "storescp", "orthanc"],
                        help="receivers to compare (nofsync: ours without fsync, to show what durability costs)")
    parser.add_argument("--no-rss-check", action="store_true", help="skip the study twice as large")
    args = parser.parse_args()
    # Every receiver and the sender run with Nagle off (dcmtk reads TCP_NODELAY, Orthanc links dcmtk).
    os.environ["TCP_NODELAY"] = "1"
    OUT.mkdir(parents=True, exist_ok=True)

    modes = {streams: studies(args.ct, args.pet, streams) for streams in args.streams}
    names = args.only
    runs = {streams: {name: [] for name in names} for streams in modes}
    for r in range(args.rounds):
        for streams, folders in modes.items():
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                runs[streams][name].append(measure(name, folders))
            print(f"round {r + 1}, {streams} stream(s): "
                  + ", ".join(f"{n} {runs[streams][n][-1][0]:.2f} s" for n in order), flush=True)

    for streams, folders in modes.items():
        files = [f for folder in folders for f in folder.rglob("*.dcm")]
        report(streams, names, len(files), sum(f.stat().st_size for f in files) / 1e6, runs[streams])

    if "neuropetrix" in names and not args.no_rss_check:
        small = runs[1]["neuropetrix"] if 1 in modes else [measure("neuropetrix", studies(
            args.ct, args.pet, 1))]
        large_dir = OUT / "study-large"
        marker = OUT / f".study-large-ct{2 * args.ct}-pet{2 * args.pet}"
        if not marker.exists():
            shutil.rmtree(large_dir, ignore_errors=True)
            write_petct_study(large_dir, StudySpec(ct_slices=2 * args.ct, pet_slices=2 * args.pet))
            marker.touch()
        wall, cpu, rss = measure("neuropetrix", [large_dir])
        count = args.ct + args.pet
        print(f"\nneuropetrix peak RSS over one association: {statistics.median(r for _, _, r in small):.0f} MiB "
              f"for {count} instances, {rss:.0f} MiB for {2 * count} ({wall:.2f} s, "
              f"{cpu / (2 * count) * 1000:.2f} CPU ms/inst)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
