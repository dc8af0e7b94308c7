"""Wall time and peak memory of `analyze` on a whole-body PET/CT study, split by stage.

    .venv/bin/python benchmarks/analysis.py [--data DIR] [--method fixed|percent_max|percist] [--runs N]

The study (PET 200×200×400 at 3.5×3.5×3 mm, CT 512×512×400 on the same slices, 400 + 400 files) is
written once into --data and reused. Each run is a fresh Python process (imports included, as a user
running `neuropetrix analyze` pays them, and the process set up as that command sets it up) that
reports the stage timings of `analyze_folder`:
read/decode (PET, and the CT at the PET's pixel size for the anatomy), SUV, anatomy (organs from the CT
on the PET grid), segmentation (references and physiological uptake included), measures, writing
(analysis.json and the report files), and its peak RSS. The full-resolution CT decoding and resampling
onto the PET grid (needed only by the MONAI path) is timed separately.

The floor, timed in the same run and alternating with ours round by round: a fresh Python process that
imports pydicom and numpy and does nothing but `dcmread` and `pixel_array` on every file of the study
(what any analysis must at least do). Printed: ours, the floor and their ratio, each the median over
the rounds (the ratio is the median of the per-round ratios, so a load spike hits both sides of one
ratio). Target: `analyze` (imports included) within 2× the floor.

Also per round, the engine's case: a process set up as the engine's analysis process is
(engine/analysis_runner.py: `keep_freed_memory`, `warm_up`, `collect_between_studies`), then analysing
the study twice, with a full garbage collection after each as that process makes; the second study's time is
compared with the floor's read time (a warm process pays no imports, as the floor's read does not).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from neuropetrix.config.settings import AnalysisSettings
from neuropetrix.engine.analysis_memory import collect_between_studies, keep_freed_memory
from neuropetrix.engine.offline import analyze_folder
imported = time.perf_counter() - t0
settings = AnalysisSettings(method=sys.argv[3], threshold=0.41 if sys.argv[3] == "percent_max" else 4.0)
t0 = time.perf_counter()
keep_freed_memory()                  # as `neuropetrix analyze` does before its study
collect_between_studies()
analysis = analyze_folder(Path(sys.argv[1]), Path(sys.argv[2]), settings, "cpu")
total = time.perf_counter() - t0
stages = dict(analysis.result.timings_s)
stages["import"] = imported
print(json.dumps({"stages": stages, "analyze_s": total, "lesions": len(analysis.result.lesions),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

WARM_CHILD = r"""
import gc, json, resource, sys, tempfile, time
from pathlib import Path
from neuropetrix.config.settings import AnalysisSettings, Settings
from neuropetrix.engine.analysis_memory import collect_between_studies, keep_freed_memory
from neuropetrix.engine.analysis_runner import warm_up
from neuropetrix.engine.offline import analyze_folder
t0 = time.perf_counter()
keep_freed_memory()
warm_up(Settings())
collect_between_studies()
warmed = time.perf_counter() - t0
settings = AnalysisSettings(method=sys.argv[3], threshold=0.41 if sys.argv[3] == "percent_max" else 4.0)
times, stages = [], {}
for _ in range(2):
    with tempfile.TemporaryDirectory(dir=sys.argv[2]) as out:
        t0 = time.perf_counter()
        stages = dict(analyze_folder(Path(sys.argv[1]), Path(out), settings, "cpu").result.timings_s)
        times.append(time.perf_counter() - t0)      # the analysis is dropped, as the engine drops it
    gc.collect()                                    # as the engine's process does once a study's reply is sent
print(json.dumps({"warm_up_s": warmed, "first_s": times[0], "second_s": times[1], "stages": stages,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

FLOOR_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
import numpy, pydicom
imported = time.perf_counter() - t0
t0 = time.perf_counter()
voxels = 0
for path in sorted(p for p in Path(sys.argv[1]).rglob("*") if p.is_file()):
    voxels += pydicom.dcmread(path).pixel_array.size
print(json.dumps({"import": imported, "read_s": time.perf_counter() - t0, "voxels": voxels,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

CT_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from neuropetrix.analysis.volumes import choose_ct, choose_pet, load_volume, read_folder, resample_to
series = read_folder(Path(sys.argv[1]))
pet = load_volume(choose_pet(series))
t0 = time.perf_counter()
ct = load_volume(choose_ct(series, str(pet.header.FrameOfReferenceUID)))
decoded = time.perf_counter() - t0
t0 = time.perf_counter()
resample_to(ct, pet, fill=-1000.0)
print(json.dumps({"ct_decode_s": decoded, "ct_resample_s": time.perf_counter() - t0,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_study(folder: Path) -> None:
    """The whole-body phantom: body, liver, and spheres of 10–40 mm from neck to pelvis."""
    from tests.support.phantom import Phantom, Sphere, write_phantom
    from tests.support.synthetic import StudySpec

    spec = StudySpec(pet_slices=400, ct_slices=400, pet_matrix=200, pet_spacing_mm=3.5, slice_mm=3.0)
    spheres = [Sphere((x, y, z), d, suv) for x, y, z, d, suv in [
        (40.0, -20.0, -150.0, 30.0, 9.0), (-60.0, 30.0, -300.0, 20.0, 7.0), (10.0, 40.0, -520.0, 40.0, 12.0),
        (80.0, 0.0, -700.0, 15.0, 6.0), (-20.0, -30.0, -850.0, 10.0, 8.0), (0.0, 0.0, -1000.0, 25.0, 5.0)]]
    phantom = Phantom(spec=spec, spheres=spheres, body_semi_axes_mm=(170.0, 115.0),
                      liver_center_mm=(-60.0, 10.0, -400.0), liver_semi_axes_mm=(80.0, 60.0, 75.0), noise_sd=0.1)
    write_phantom(phantom, folder, with_ct=True)


def _child(code: str, *argv: str) -> dict:
    """Run `code` in a fresh Python process and return the JSON its last line prints."""
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "neuropetrix-bench-analysis")
    parser.add_argument("--method", default="fixed", choices=("fixed", "percent_max", "percist"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not (args.data / "PT").is_dir():
        print(f"writing the whole-body study into {args.data} (once) …", flush=True)
        make_study(args.data)
    files = sum(1 for p in args.data.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in args.data.rglob("*") if p.is_file()) / 1e6
    print(f"study: {files} files, {size:.0f} MB; method {args.method}; {args.runs} runs (fresh process each)")
    print(f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    runs, floors, warms = [], [], []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.runs):
            floors.append(_child(FLOOR_CHILD, str(args.data)))
            runs.append(_child(CHILD, str(args.data), out, args.method))
            warms.append(_child(WARM_CHILD, str(args.data), out, args.method))
    order = ["import", "read", "suv", "anatomy", "segmentation", "measures", "write"]
    print(f"{'stage':<14}{'median s':>10}{'min s':>9}")
    for stage in order:
        values = [r["stages"].get(stage, 0.0) for r in runs]
        print(f"{stage:<14}{statistics.median(values):>10.2f}{min(values):>9.2f}")
    totals = [r["analyze_s"] + r["stages"]["import"] for r in runs]
    print(f"{'total':<14}{statistics.median(totals):>10.2f}{min(totals):>9.2f}   "
          f"(lesions: {runs[0]['lesions']}, peak RSS {max(r['peak_rss_mib'] for r in runs):.0f} MiB)")
    floor_totals = [f["import"] + f["read_s"] for f in floors]
    print(f"{'floor':<14}{statistics.median(floor_totals):>10.2f}{min(floor_totals):>9.2f}   "
          f"(pydicom dcmread + pixel_array of every file, imports included; peak RSS "
          f"{max(f['peak_rss_mib'] for f in floors):.0f} MiB)")
    ratios = [ours / floor for ours, floor in zip(totals, floor_totals)]
    bare = [(r["analyze_s"]) / f["read_s"] for r, f in zip(runs, floors)]
    print(f"ratio ours/floor: {statistics.median(ratios):.2f} (imports included; rounds: "
          f"{', '.join(f'{v:.2f}' for v in ratios)}); without imports {statistics.median(bare):.2f}")
    warm = [w["second_s"] / f["read_s"] for w, f in zip(warms, floors)]
    second, first = (statistics.median(w[key] for w in warms) for key in ("second_s", "first_s"))
    print(f"warm analysis process (the engine's: warmed up once, then studies): second study {second:.2f} s "
          f"(first {first:.2f} s, warm-up {statistics.median(w['warm_up_s'] for w in warms):.2f} s); ratio to "
          f"the floor's read {statistics.median(warm):.2f} (rounds: {', '.join(f'{v:.2f}' for v in warm)})")
    print("  its stages: " + ", ".join(f"{k} {v:.2f}" for k, v in warms[len(warms) // 2]["stages"].items())
          + f"; peak RSS {max(w['peak_rss_mib'] for w in warms):.0f} MiB")
    print(f"load average at end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    ct = _child(CT_CHILD, str(args.data))
    print(f"CT for the MONAI path: decode {ct['ct_decode_s']:.2f} s, resample onto PET {ct['ct_resample_s']:.2f} s "
          f"(peak RSS {ct['peak_rss_mib']:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
