"""End to end: from the last instance of a whole-body PET/CT study received to the results acknowledged
by every destination (Orthanc for SEG/SR/PDF, an MLLP listener for the ORU, a FHIR endpoint for the
bundle), with the study's quiet time left out. Prints the total and its parts, per round.

    .venv/bin/python benchmarks/e2e.py [--rounds 2] [--ct 300 --pet 300] [--quiet 2]

Parts, all read from the node's own database afterwards: the quiet time (excluded: the node waits
this long after the last instance before it calls the study complete), how long after it the
completion sweep noticed (counted), routing (completion → analysis started), analysis (reading the
series, SUV, lesions, every report written), and each delivery (analysis done → acknowledged by that
destination).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuropetrix.store.jobs_models import Job  # noqa: E402
from neuropetrix.store.models import Event, Instance, Study  # noqa: E402
from tests.engine.conftest import node_sessions, overrides, storescu  # noqa: E402
from tests.support.hbys_peer import fhir_endpoint, mllp_listener  # noqa: E402
from tests.support.nodeproc import running_node  # noqa: E402
from tests.support.peers import orthanc  # noqa: E402
from tests.support.synthetic import StudySpec, background_activity, write_petct_study  # noqa: E402


def seconds(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds()


def one_round(work: Path, study: Path, quiet: float) -> dict[str, float]:
    with orthanc(work / "orthanc") as pacs, mllp_listener() as hl7_end, fhir_endpoint() as fhir_end:
        config = overrides(pacs.dicom_port, hl7_end.port, fhir_end.base_url)
        config["node"] = {"study_quiet_seconds": quiet, "log_level": "WARNING"}
        config["routes"][0]["actions"] = config["routes"][0]["actions"][:4]        # no notify: not a delivery
        with running_node(work / "node", config) as node:
            t0 = time.perf_counter()
            storescu(node, study)
            send_s = time.perf_counter() - t0
            sessions = node_sessions(node)
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                with sessions() as s:
                    states = list(s.scalars(select(Job.state)))
                if len(states) == 4 and all(st in ("done", "failed") for st in states):
                    break
                time.sleep(0.1)
            with sessions() as s:
                jobs = {j.kind: j for j in s.scalars(select(Job))}
                if any(j.state != "done" for j in jobs.values()):
                    states = [(j.kind, j.state, j.last_error) for j in jobs.values()]
                    raise SystemExit(f"not every job finished: {states}")
                last = s.scalar(select(func.max(Instance.received_at)))
                completed = s.scalar(select(Study.completed_at))
                started = s.scalar(select(Event.created_at).where(Event.kind == "analysis.started"))
        analysed = jobs["analyze"].finished_at
        acked = max(jobs[k].finished_at for k in ("forward", "hl7", "fhir"))
        parts = {"send (storescu)": send_s, "quiet time (configured, excluded)": quiet,
                 "completion noticed after the quiet time": seconds(last, completed) - quiet,
                 "routing (complete → analysis started)": seconds(completed, started),
                 "analysis (incl. every report written)": seconds(started, analysed)}
        for step, value in jobs["analyze"].result.get("timings_s", {}).items():
            parts[f"  analysis: {step}"] = value
        for kind, label in (("forward", "C-STORE SEG/SR/PDF to Orthanc"), ("hl7", "ORU over MLLP, AA"),
                            ("fhir", "FHIR transaction")):
            parts[f"delivery: {label}"] = seconds(analysed, jobs[kind].finished_at)
        parts["TOTAL last instance → all acknowledged, quiet excluded"] = seconds(last, acked) - quiet
        if len(pacs.get("/instances")) != 3:
            raise SystemExit("Orthanc does not hold exactly the SEG, SR and PDF")
        return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--ct", type=int, default=300)
    parser.add_argument("--pet", type=int, default=300)
    parser.add_argument("--quiet", type=float, default=2.0, help="study_quiet_seconds for the node")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="np-e2e-") as tmp:
        tmp_path = Path(tmp)
        spec = StudySpec(ct_slices=args.ct, pet_slices=args.pet)
        t0 = time.perf_counter()
        _, files = write_petct_study(tmp_path / "study", spec, activity=background_activity(spec))
        size = sum(f.stat().st_size for f in files) / 1e6
        print(f"study: {args.ct} CT {spec.ct_matrix}² + {args.pet} PET {spec.pet_matrix}², {len(files)} files, "
              f"{size:.1f} MB (written in {time.perf_counter() - t0:.1f} s)")
        rounds = []
        for r in range(args.rounds):
            parts = one_round(tmp_path / f"round{r}", tmp_path / "study", args.quiet)
            rounds.append(parts)
            print(f"\nround {r + 1}")
            for name, value in parts.items():
                print(f"  {name:<58} {value:8.2f} s")
        if args.rounds > 1:
            total = "TOTAL last instance → all acknowledged, quiet excluded"
            values = [p[total] for p in rounds]
            print(f"\nmedian total over {len(values)} rounds: {statistics.median(values):.2f} s "
                  f"(min {min(values):.2f}, max {max(values):.2f})")


if __name__ == "__main__":
    main()
