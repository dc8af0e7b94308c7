"""Organ masks from a site's segmentation model output (TotalSegmentator, MOOSE), on the PET grid.

Two documented output forms are read (NIfTI, through SimpleITK, which reports geometry in LPS as
DICOM does):

- a folder of one binary mask per structure, named by the structure (`brain.nii.gz`,
  `urinary_bladder.nii.gz`, `kidney_left.nii.gz`, …): TotalSegmentator's default output;
- one multi-label file (TotalSegmentator `--ml`, MOOSE) with its label names in a JSON file beside it
  (`<name>.json`, {"1": "spleen", …}) or given by the caller.

Structure names are mapped onto the canonical organs of the tracer profiles (`tracers.ORGAN_NAMES`);
unknown names are ignored. Masks are resampled onto the PET grid by nearest neighbour.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from neuropetrix.analysis.errors import AnalysisError
from neuropetrix.analysis.tracers import ORGAN_NAMES
from neuropetrix.analysis.volumes import Volume

_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def pet_reference(pet: Volume) -> sitk.Image:
    """An empty SimpleITK image on the PET's grid (index x, y, z = column, row, slice)."""
    shape = pet.data.shape
    image = sitk.Image(int(shape[2]), int(shape[1]), int(shape[0]), sitk.sitkUInt8)
    image.SetOrigin(tuple(float(v) for v in pet.origin))
    image.SetSpacing((float(pet.spacing[2]), float(pet.spacing[1]), float(pet.spacing[0])))
    image.SetDirection(tuple(float(v) for v in np.stack([pet.axes[2], pet.axes[1], pet.axes[0]], axis=1).ravel()))
    return image


def _on_pet(image: sitk.Image, pet: Volume) -> np.ndarray:
    resampled = sitk.Resample(image, pet_reference(pet), sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                              image.GetPixelID())
    return sitk.GetArrayFromImage(resampled)       # (slices, rows, columns)


def _read(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise AnalysisError(f"{path}: not a readable label map ({str(exc).strip().splitlines()[-1]})") from None


def _names_beside(path: Path) -> dict[int, str]:
    sidecar = path.with_name(_stem(path) + ".json")
    if not sidecar.is_file():
        raise AnalysisError(f"{path}: a multi-label map needs its label names in {sidecar.name} "
                            "({\"1\": \"spleen\", …})")
    try:
        return {int(k): str(v) for k, v in json.loads(sidecar.read_text(encoding="utf-8")).items()}
    except (ValueError, AttributeError) as exc:
        raise AnalysisError(f"{sidecar}: label names must be a JSON object of number → name ({exc})") from None


def read_organ_masks(path: Path, pet: Volume, names: dict[int, str] | None = None) -> dict[str, np.ndarray]:
    """Canonical organ → boolean mask on the PET grid, from a folder of masks or a multi-label file."""
    path = Path(path)
    organs: dict[str, np.ndarray] = {}

    def add(name: str, mask: np.ndarray) -> None:
        organ = ORGAN_NAMES.get(name.lower())
        if organ is not None and mask.any():
            organs[organ] = organs[organ] | mask if organ in organs else mask

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith(_SUFFIXES))
        if not files:
            raise AnalysisError(f"{path}: no label map files (.nii.gz, .nii, .nrrd, .mha) in the folder")
        for file in files:
            if ORGAN_NAMES.get(_stem(file).lower()) is not None:
                add(_stem(file), _on_pet(_read(file), pet) > 0)
        return organs
    labels = _on_pet(_read(path), pet)
    for value, name in (names or _names_beside(path)).items():
        add(name, labels == value)
    return organs
