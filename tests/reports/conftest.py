"""A small PET series and an AnalysisResult computed from it by hand, so report tests need no analysis code.

The PET is written by tests/support/synthetic.py (64×64×40, and 155×155×40 for matrices whose frames do not fill
whole bytes) with three hot spheres on a warm body; the lesion numbers are computed here with numpy from
the SUV volume and a hand-made label map, so every report can be checked against values known
independently of the writers.
"""
from __future__ import annotations

import copy
import dataclasses
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from neuropetrix.analysis.results import (
    AnalysisResult,
    Lesion,
    LiverReference,
    Segmentation,
    SuvInputs,
)
from tests.support.synthetic import StudySpec, write_pet_series

MATRIX, SLICES = 64, 40
SUV_BACKGROUND = 1.0
# (centre slice, row, column) in voxels, radius in voxels, SUV at the centre
SPHERES = [((12, 30, 22), 3.0, 9.0), ((24, 38, 40), 4.0, 6.0), ((31, 24, 34), 2.0, 12.0)]


ODD_MATRIX = 155


def _spec(matrix: int = MATRIX) -> StudySpec:
    return StudySpec(pet_matrix=matrix, pet_slices=SLICES, accession_number="ACC2026001")


def _suv1_bqml(spec: StudySpec) -> float:
    """Bq/ml of SUVbw 1 at scan start (the series is decay-corrected to START)."""
    dt = (spec.scan_start - spec.injection_time).total_seconds()
    return spec.injected_dose_bq * 2.0 ** (-dt / spec.half_life_s) / (spec.weight_kg * 1000.0)


def _grid(matrix: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(SLICES), np.arange(matrix), np.arange(matrix), indexing="ij")


def _sphere_distances(matrix: int) -> list[np.ndarray]:
    """Each sphere's distance from its centre, in radii."""
    k, r, c = _grid(matrix)
    return [np.sqrt((k - z) ** 2 + (r - y) ** 2 + (c - x) ** 2) / rad for (z, y, x), rad, _ in SPHERES]


def _sphere_masks(matrix: int) -> list[np.ndarray]:
    return [d <= 1.0 for d in _sphere_distances(matrix)]


def _activity(spec: StudySpec) -> Callable[[int], np.ndarray]:
    suv1 = _suv1_bqml(spec)
    matrix = spec.pet_matrix
    r, c = np.meshgrid(np.arange(matrix), np.arange(matrix), indexing="ij")
    body = ((r - 31.5) / 26.0) ** 2 + ((c - 31.5) / 30.0) ** 2 <= 1.0
    distances = _sphere_distances(matrix)

    def slice_bqml(k: int) -> np.ndarray:
        suv = np.where(body, SUV_BACKGROUND, 0.0)
        for d, (_, _, value) in zip(distances, SPHERES, strict=True):   # peaked: value at the centre, half at the rim
            suv = np.where(d[k] <= 1.0, value * (1.0 - 0.5 * d[k] ** 2), suv)
        return suv * suv1
    return slice_bqml


@dataclasses.dataclass
class PetStudy:
    spec: StudySpec
    folder: Path
    datasets: list[Dataset]
    suv: np.ndarray            # (slices, rows, cols) SUVbw from the stored pixels


def _pet_study(folder: Path, matrix: int) -> PetStudy:
    spec = _spec(matrix)
    write_pet_series(spec, folder, activity=_activity(spec))
    datasets = sorted((pydicom.dcmread(p) for p in folder.glob("PT*.dcm")), key=lambda d: int(d.InstanceNumber))
    suv = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets])
    return PetStudy(spec, folder, datasets, suv / _suv1_bqml(spec))


@pytest.fixture(scope="session")
def pet_study(tmp_path_factory: pytest.TempPathFactory) -> PetStudy:
    return _pet_study(tmp_path_factory.mktemp("pet"), MATRIX)


@pytest.fixture(scope="session")
def odd_pet_study(tmp_path_factory: pytest.TempPathFactory) -> PetStudy:
    """A 155×155 PET: a 1-bit frame of it is 24025 bits, not a whole number of bytes."""
    return _pet_study(tmp_path_factory.mktemp("pet155"), ODD_MATRIX)


def _lesion(label: int, mask: np.ndarray, suv: np.ndarray, datasets: list[Dataset],
            voxel_ml: float) -> Lesion:
    values = suv[mask]
    idx = np.argwhere(mask)
    kmax = tuple(idx[int(np.argmax(values))])
    k0, k1 = max(kmax[0] - 1, 0), kmax[0] + 2
    peak = float(suv[k0:k1, kmax[1] - 1:kmax[1] + 2, kmax[2] - 1:kmax[2] + 2].mean())

    def mm(k: float, r: float, c: float) -> tuple[float, float, float]:
        ds = datasets[int(round(k))]
        x0, y0, z0 = (float(v) for v in ds.ImagePositionPatient)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        return (x0 + c * dc, y0 + r * dr, z0)

    centre = idx.mean(axis=0)
    return Lesion(label=label, suv_max=float(values.max()), suv_mean=float(values.mean()), suv_peak=peak,
                  volume_ml=float(mask.sum() * voxel_ml), tlg=float(values.mean() * mask.sum() * voxel_ml),
                  centroid_mm=mm(*centre), max_position_mm=mm(*kmax), voxel_count=int(mask.sum()))


@pytest.fixture
def result(pet_study: PetStudy) -> AnalysisResult:
    """An analysis of `pet_study` with three lesions and a liver reference (fresh for each test)."""
    return analysis_of(pet_study)


@pytest.fixture
def odd_result(odd_pet_study: PetStudy) -> AnalysisResult:
    """The same analysis of the 155×155 PET."""
    return analysis_of(odd_pet_study)


def analysis_of(pet_study: PetStudy) -> AnalysisResult:
    spec, datasets = pet_study.spec, pet_study.datasets
    matrix = spec.pet_matrix
    spacing = (spec.slice_mm, spec.pet_spacing_mm, spec.pet_spacing_mm)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    label_map = np.zeros((SLICES, matrix, matrix), dtype=np.int32)
    lesions = []
    for label, mask in enumerate(_sphere_masks(matrix), start=1):
        label_map[mask] = label
        lesions.append(_lesion(label, mask, pet_study.suv, datasets, voxel_ml))
    dt = (spec.scan_start - spec.injection_time).total_seconds()
    return AnalysisResult(
        study_instance_uid=spec.study_uid,
        pet_series_instance_uid=spec.pet_series_uid,
        pet_sop_instance_uids=[str(d.SOPInstanceUID) for d in datasets],
        ct_series_instance_uid=None,
        frame_of_reference_uid=spec.frame_of_reference_uid,
        suv=SuvInputs(suv_type="bw", units="BQML", decay_correction="START", radionuclide="^18^Fluorine",
                      half_life_s=spec.half_life_s, injected_dose_bq=spec.injected_dose_bq,
                      injection_datetime=spec.injection_time.isoformat(),
                      reference_datetime=spec.scan_start.isoformat(), reference_source="series",
                      patient_weight_kg=spec.weight_kg, patient_height_m=spec.height_m, patient_sex="F",
                      scale_factor=1.0 / _suv1_bqml(spec), vendor=spec.manufacturer,
                      notes=(f"decay {dt:.0f} s from injection to series start",)),
        segmentation=Segmentation(method="fixed", threshold=4.0, min_volume_ml=0.5,
                                  algorithm_name="NeuroPETRIX SUV threshold", algorithm_version="0.1.0"),
        lesions=lesions,
        label_map=label_map,
        voxel_spacing_mm=spacing,
        liver=LiverReference(suv_mean=2.1, suv_sd=0.25, center_mm=(-60.0, -10.0, -50.0), radius_mm=15.0,
                             method="auto: right lobe"),
        software_version="0.1.0",
        suv_volume=pet_study.suv.astype(np.float32),
    )


@pytest.fixture
def renamed(pet_study: PetStudy) -> Callable[..., list[Dataset]]:
    """Copies of the PET datasets with some attributes changed (names with ğ ş ı İ ö ü ç, …)."""
    def make(**attributes: object) -> list[Dataset]:
        out = []
        for ds in pet_study.datasets:
            copy_ = copy.deepcopy(ds)
            for keyword, value in attributes.items():
                setattr(copy_, keyword, value)
            out.append(copy_)
        return out
    return make


def dciodvfy(path: Path) -> list[str]:
    """dciodvfy's warnings for `path`; fails the test on any error it reports."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.fail("dciodvfy (Debian package dicom3tools) is not installed: run `make peers`")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    assert not errors and proc.returncode == 0, f"dciodvfy {path.name}:\n" + "\n".join(lines)
    return [line for line in lines if line.startswith("Warning")]
