"""PERCIST liver reference: mean and SD of SUV in a 3 cm sphere in the right lobe of the liver.

The sphere is placed where the user says (`analysis.liver_center_mm`, LPS mm) or automatically, by a
method written down here so that a physicist can check it:

0. the search runs on a grid of about 6 mm (every 2nd voxel of a 3–4 mm PET);
1. the body is where the SUV, smoothed over 3 voxels so that noise in the air does not count, is
   above 10 % of its 95th percentile; the median SUV of the body is the background level;
2. a 3 cm cube slides over the volume (box filters); a position is a candidate when the cube lies
   wholly inside the body, in the patient's right half (x below the body's centre; LPS +x is left),
   is homogeneous (SD/mean < 0.3) and has a mean 1.3 to 6 times the background — warmer than muscle
   and fat, colder than brain, bladder or lesions;
3. the largest connected region of candidates is taken to be the liver, and the sphere is centred on
   its deepest point (the largest distance to the region's border), well inside the right lobe.

With a CT on the frame of reference the cube must also lie wholly in soft tissue (20–90 HU) on the
patient's right of the spine, from 20 cm below to 2 cm above the right lung's base (the right lobe
under the diaphragm); with an organ label map, wholly inside its liver.

If no candidate exists the placement fails with a message asking for `analysis.liver_center_mm`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from neuropetrix.analysis.anatomy import coordinate
from neuropetrix.analysis.errors import AnalysisError
from neuropetrix.analysis.results import LiverReference
from neuropetrix.analysis.volumes import Volume

LIVER_RADIUS_MM = 15.0
AUTO_METHOD = ("auto: deepest point of the largest homogeneous region (3 cm, SD/mean < 0.3, mean 1.3-6x "
               "body median) in the patient's right half")
_MAX_CV = 0.3
_MEAN_RANGE = (1.3, 6.0)
_SEARCH_GRID_MM = 6.0


def sphere_stats(suv: np.ndarray, geometry: Volume, center_mm: np.ndarray,
                 radius_mm: float = LIVER_RADIUS_MM) -> tuple[float, float, int]:
    """Mean, SD (n − 1) and count of the voxels whose centres lie in the sphere."""
    center = geometry.mm_to_index(center_mm)
    reach = np.ceil(radius_mm / np.asarray(geometry.spacing)).astype(int) + 1
    lo = np.maximum(np.floor(center).astype(int) - reach, 0)
    hi = np.minimum(np.floor(center).astype(int) + reach + 1, suv.shape)
    if np.any(hi <= lo):
        raise AnalysisError(f"liver sphere centre {tuple(np.round(center_mm, 1))} mm is outside the PET volume")
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), axis=-1)
    inside = np.linalg.norm(geometry.index_to_mm(grid) - center_mm, axis=-1) <= radius_mm
    values = suv[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][inside].astype(np.float64)
    if values.size < 2:
        raise AnalysisError(f"liver sphere at {tuple(np.round(center_mm, 1))} mm holds fewer than 2 voxels")
    return float(values.mean()), float(values.std(ddof=1)), int(values.size)


@dataclass
class LiverSearch:
    """Steps 0–2 of the automatic method without a restriction, on the coarse grid: what a search within
    the anatomy's liver region and the PET-only search that follows when that region holds no candidate
    have in common, computed once."""

    step: tuple[int, ...]
    coarse: Volume
    size: list[int]
    candidates: np.ndarray


def liver_search(suv: np.ndarray, geometry: Volume) -> LiverSearch:
    """The candidates of the documented automatic method, on a grid of about 6 mm (every 2nd voxel of a
    3–4 mm PET), eight times fewer voxels: it only has to find the organ, and the sphere's statistics are
    then taken at full resolution."""
    step = tuple(max(1, round(_SEARCH_GRID_MM / s)) for s in geometry.spacing)
    coarse = replace(geometry, data=np.empty(0), spacing=tuple(s * f for s, f in zip(geometry.spacing, step)))
    values = np.ascontiguousarray(suv[::step[0], ::step[1], ::step[2]], dtype=np.float32)
    smooth = ndimage.uniform_filter(values, 3, mode="nearest")     # so that noise in the air is not body
    positive = smooth[smooth > 0]
    if positive.size == 0:
        raise AnalysisError("cannot place the liver sphere: the PET volume is empty")
    body = smooth > 0.1 * np.percentile(positive, 95)
    background = float(np.median(values[body]))
    size = [max(round(2 * LIVER_RADIUS_MM / s), 1) | 1 for s in coarse.spacing]
    mean = ndimage.uniform_filter(values, size, mode="constant")
    sd = np.sqrt(np.maximum(ndimage.uniform_filter(values * values, size, mode="constant") - mean * mean, 0))
    inside = ndimage.uniform_filter(body.astype(np.float32), size, mode="constant") > 0.999
    x = coordinate(coarse, values.shape, 0)
    right = x < float(np.broadcast_to(x, body.shape)[body].mean())
    candidates = (inside & right & (mean >= _MEAN_RANGE[0] * background)
                  & (mean <= _MEAN_RANGE[1] * background) & (sd < _MAX_CV * mean))
    return LiverSearch(step, coarse, size, candidates)


def place_liver_sphere(suv: np.ndarray, geometry: Volume, allowed: np.ndarray | None = None,
                       search: LiverSearch | None = None) -> np.ndarray:
    """Centre (LPS mm) of the liver sphere by the documented automatic method.

    `allowed` (on the PET grid), when given, is where the liver may be (from the CT or an organ mask):
    a candidate cube must lie wholly inside it. `search` is `liver_search(suv, geometry)` when the caller
    has it already.
    """
    search = search or liver_search(suv, geometry)
    step, coarse, candidates = search.step, search.coarse, search.candidates
    if allowed is not None:
        region = np.ascontiguousarray(allowed[::step[0], ::step[1], ::step[2]], dtype=np.float32)
        candidates = candidates & (ndimage.uniform_filter(region, search.size, mode="constant") > 0.999)
    labels, n = ndimage.label(candidates)
    if n == 0:
        where = ("in the liver region the CT or organ map allows" if allowed is not None
                 else "in the patient's right half")
        raise AnalysisError(f"cannot place the liver sphere automatically (no homogeneous warm region {where}); "
                            "set analysis.liver_center_mm")
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    box = ndimage.find_objects((labels == largest).astype(np.int8))[0]
    region = np.pad(labels[box] == largest, 1)
    depth = ndimage.distance_transform_edt(region, sampling=coarse.spacing)[1:-1, 1:-1, 1:-1]
    deepest = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return coarse.index_to_mm(np.array([d + s.start for d, s in zip(deepest, box)], dtype=np.float64))


def liver_reference(suv: np.ndarray, geometry: Volume, center_mm: tuple[float, float, float] | None = None,
                    allowed: np.ndarray | None = None, allowed_by: str = "",
                    search: LiverSearch | None = None) -> LiverReference:
    """The liver reference at the user's centre, or at the automatically placed one.

    `allowed` restricts the automatic placement (see `place_liver_sphere`); `allowed_by` says what it came
    from; `search` is the automatic method's shared work, when the caller has it.
    """
    if center_mm is not None:
        center, method = np.asarray(center_mm, dtype=np.float64), "user"
    else:
        center = place_liver_sphere(suv, geometry, allowed, search)
        method = AUTO_METHOD if allowed is None else f"{AUTO_METHOD}, within {allowed_by}"
    mean, sd, _ = sphere_stats(suv, geometry, center)
    return LiverReference(suv_mean=mean, suv_sd=sd, center_mm=tuple(float(v) for v in center),  # type: ignore[arg-type]
                          radius_mm=LIVER_RADIUS_MM, method=method)
