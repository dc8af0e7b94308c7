"""Pictures of each lesion for the physician's review in the dashboard: its key image
(`key-<label>.png`) and where it lies on the MIP (`mip-<label>.png`, the MIP with that lesion alone
outlined).

The PDF carries only the hottest few; a reviewer needs to see every region it decides on. The
pictures are drawn by reports/images.py, the PDF's own functions, so they show the same slice and the
same orientation as the report.
"""
from __future__ import annotations

import time
from pathlib import Path

from neuropetrix.analysis.results import AnalysisResult
from neuropetrix.reports.images import Pictures

# pictures for the hottest lesions only: each costs a figure (about 0.1–0.3 s), and a study with more
# candidates than this is reviewed by its method first (re-run with another threshold)
MAX_LESIONS = 50


def key_image_name(label: int) -> str:
    return f"key-{label}.png"


def mip_image_name(label: int) -> str:
    return f"mip-{label}.png"


def write_key_images(result: AnalysisResult, out_dir: Path, pictures: Pictures | None = None) -> list[Path]:
    """Write the key image and MIP position of every lesion of `result` into `out_dir` (none without
    its SUV volume), from the report's `pictures` when given (the projection and the key images the
    PDF already has are not drawn again); their time goes into `result.timings_s["review_images"]`."""
    if result.suv_volume is None:
        return []
    t0 = time.perf_counter()
    pictures = pictures or Pictures(result)
    written = []
    for lesion in sorted(result.lesions, key=lambda les: les.suv_max, reverse=True)[:MAX_LESIONS]:
        path = out_dir / key_image_name(lesion.label)
        path.write_bytes(pictures.axial_png(lesion))
        mip = out_dir / mip_image_name(lesion.label)
        mip.write_bytes(pictures.mip_png([lesion]))
        written += [path, mip]
    result.timings_s["review_images"] = time.perf_counter() - t0
    return written
