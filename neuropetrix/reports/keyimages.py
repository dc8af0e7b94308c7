"""One key image per lesion, for the physician's review in the dashboard: `key-<label>.png`.

The PDF carries only the hottest few; a reviewer needs to see every region it decides on. The
pictures are the PDF's own axial key images (reports/images.py), so both show the same slice.
"""
from __future__ import annotations

from pathlib import Path

from neuropetrix.analysis.results import AnalysisResult
from neuropetrix.reports.images import axial_png, suv_volume


def key_image_name(label: int) -> str:
    return f"key-{label}.png"


def write_key_images(result: AnalysisResult, out_dir: Path) -> list[Path]:
    """Write the key image of every lesion of `result` into `out_dir` (none without its SUV volume)."""
    if result.suv_volume is None:
        return []
    volume = suv_volume(result)
    written = []
    for lesion in result.lesions:
        path = out_dir / key_image_name(lesion.label)
        path.write_bytes(axial_png(result, volume, lesion))
        written.append(path)
    return written
