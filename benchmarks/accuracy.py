"""Accuracy of the analysis on the whole-body phantom, beside a plain SUV 4.0 threshold.

    .venv/bin/python benchmarks/accuracy.py [--seeds N] [--matrices 128 192]

For each PET resolution (128: 4 mm, 192: 2.7 mm pixels over 512 mm) and noise seed, the phantom of
`neuropetrix.phantoms.wholebody` (brain, myocardium, bladder, kidneys, liver, aorta, lungs, spine; six
lesions in lung, mediastinum, liver, bone and a pelvic node 1 cm beside the bladder) is written once and
analysed three ways: PET/CT (physiological uptake told apart by the CT rules), PET only (the PET
rules), and the plain threshold (SUV ≥ 4.0, nothing excluded). Reported per way, over all scans:

- sensitivity: true lesions with a found lesion whose centroid lies within the lesion's radius + 5 mm;
- false positives per scan: found lesions that match no true lesion (an organ counted as a lesion);
- TMTV error: (found − true) / true total lesion volume, mean over scans;
- liver and blood-pool reference errors: (found − true) / true mean SUV; "n/f" when not found (the
  plain threshold reads no CT, so it has no blood pool; PET-only never guesses one).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from neuropetrix.analysis.pipeline import analyze_volumes  # noqa: E402
from neuropetrix.analysis.results import AnalysisResult  # noqa: E402
from neuropetrix.config.settings import AnalysisSettings  # noqa: E402
from neuropetrix.engine.offline import load_study  # noqa: E402
from neuropetrix.phantoms.wholebody import PhantomTruth, write_study  # noqa: E402

WAYS = {"PET/CT, physiology excluded": ("", True), "PET only, physiology excluded": ("PT", True),
        "plain SUV 4.0 threshold": ("", False)}


def score(result: AnalysisResult, truth: PhantomTruth) -> dict[str, float | None]:
    def near(found, true) -> bool:
        return math.dist(found.centroid_mm, true.center_mm) <= true.diameter_mm / 2 + 5.0

    hits = sum(any(near(les, t) for les in result.lesions) for t in truth.lesions)
    false = sum(not any(near(les, t) for t in truth.lesions) for les in result.lesions)

    def error(name: str, true: float) -> float | None:
        ref = result.references.get(name)
        return None if ref is None or not ref.found else (ref.suv_mean - true) / true

    return {"hits": hits, "lesions": len(truth.lesions), "fp": false,
            "tmtv": (result.tmtv_ml - truth.tmtv_ml) / truth.tmtv_ml,
            "liver": error("liver", truth.liver_suv), "blood": error("blood_pool", truth.blood_pool_suv)}


def _percent(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "n/f"
    text = f"{100 * statistics.mean(known):+.1f} %"
    return text if len(known) == len(values) else f"{text} ({len(values) - len(known)} n/f)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--matrices", type=int, nargs="+", default=[128, 192])
    args = parser.parse_args()
    rows: dict[tuple[int, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for matrix in args.matrices:
            for seed in range(args.seeds):
                folder = Path(tmp) / f"m{matrix}s{seed}"
                t0 = time.perf_counter()
                truth = write_study(folder, pet_matrix=matrix, ct_matrix=matrix, seed=seed)
                written = time.perf_counter() - t0
                for way, (sub, exclude) in WAYS.items():
                    t0 = time.perf_counter()
                    pet, ct = load_study(folder / sub if sub else folder, need_ct_pixels=exclude)
                    result = analyze_volumes(pet, ct, AnalysisSettings(device="cpu", exclude_physiological=exclude))
                    rows.setdefault((matrix, way), []).append(score(result, truth))
                    print(f"  {matrix}² seed {seed} {way}: {len(result.lesions)} lesion(s), "
                          f"{time.perf_counter() - t0:.1f} s (phantom written in {written:.1f} s)", flush=True)
    print(f"\n{'PET pixel':<10}{'analysis':<32}{'sensitivity':>12}{'FP/scan':>9}{'TMTV err':>13}"
          f"{'liver err':>11}{'blood err':>15}")
    for (matrix, way), scores in rows.items():
        hits, total = sum(s["hits"] for s in scores), sum(s["lesions"] for s in scores)
        print(f"{512 / matrix:<10.2f}{way:<32}{f'{hits}/{total}':>12}"
              f"{statistics.mean(s['fp'] for s in scores):>9.1f}{_percent([s['tmtv'] for s in scores]):>13}"
              f"{_percent([s['liver'] for s in scores]):>11}{_percent([s['blood'] for s in scores]):>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
