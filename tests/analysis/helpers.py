"""Shared by the analysis tests: analyse a folder without the report writers, find a sphere's lesion."""
from __future__ import annotations

import math
from pathlib import Path

from neuropetrix.analysis.pipeline import analyze_volumes
from neuropetrix.analysis.results import AnalysisResult, Lesion
from neuropetrix.config.settings import AnalysisSettings
from neuropetrix.engine.offline import load_study


def analyze_dir(folder: Path, device: str = "cpu", **settings: object) -> AnalysisResult:
    """Read and analyse (the CLI tests run the whole command, writers included)."""
    analysis_settings = AnalysisSettings(**settings)
    model = analysis_settings.method == "model"
    pet, ct = load_study(folder, need_ct_pixels=model or analysis_settings.exclude_physiological, full_ct=model)
    return analyze_volumes(pet, ct, analysis_settings, device)


def nearest(lesions: list[Lesion], center_mm: tuple[float, float, float]) -> Lesion:
    return min(lesions, key=lambda les: math.dist(les.centroid_mm, center_mm))
