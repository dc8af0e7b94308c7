"""Anatomical reference regions: where the PERCIST liver sphere may go, and the mediastinal blood pool.

Blood pool (Deauville, PERCIST's alternative reference): the descending thoracic aorta. With an organ
label map holding the aorta, its mask; with a CT, the longest soft-tissue tube (20–90 HU, at least
5 cm long, its cross-sections round — filling at least 60 % of their bounding box, at most 4.5 cm
across, 1.5–15 cm²) beside the spine on the patient's left and in front of it
(0.5–7 cm left of its centre, 0.5–7.5 cm anterior), between the lungs' base and top. The reference is
the lumen eroded by one voxel from the wall over a 2 cm length at the middle of that tube (at least
the 1 cm × 2 cm cylinder PERCIST describes). Without a CT or a label map, or when no such tube
exists, the reference is reported as not found — never another organ in its place.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from neuropetrix.analysis.anatomy import Anatomy, coordinate
from neuropetrix.analysis.results import Reference
from neuropetrix.analysis.volumes import Volume

SEGMENT_MM = 20.0
_TUBE_MIN_MM, _AREA_MM2 = 50.0, (150.0, 1500.0)
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def liver_region(anatomy: Anatomy, geometry: Volume,
                 organ_masks: dict[str, np.ndarray]) -> tuple[np.ndarray | None, str]:
    """Where the liver sphere may be placed, and what said so (None: the PET-only search)."""
    if "liver" in organ_masks:
        return organ_masks["liver"], "the organ label map's liver"
    if anatomy.source != "ct" or anatomy.right_lung_base_mm is None or anatomy.spine_xy_mm is None:
        return None, ""
    shape = anatomy.body.shape
    x, z = coordinate(geometry, shape, 0), coordinate(geometry, (shape[0], 1, 1), 2)
    base = anatomy.right_lung_base_mm
    region = (anatomy.masks["soft"] & (x < anatomy.spine_xy_mm[0]) & (z >= base - 200.0) & (z <= base + 20.0))
    return region, "CT soft tissue right of the spine under the right lung's base"


def _tube(anatomy: Anatomy, geometry: Volume) -> np.ndarray | None:
    spine, base, top = anatomy.spine_xy_mm, anatomy.lung_base_mm, anatomy.lung_top_mm
    if spine is None or base is None or top is None:
        return None
    shape = anatomy.body.shape
    x, y = coordinate(geometry, shape, 0), coordinate(geometry, shape, 1)
    z = coordinate(geometry, (shape[0], 1, 1), 2)
    dx, dy = x - spine[0], spine[1] - y
    box = (dx >= 5.0) & (dx <= 70.0) & (dy >= 5.0) & (dy <= 75.0) & (z >= base) & (z <= top)
    box = np.broadcast_to(box, shape)
    spans = [np.nonzero(box.any(axis=tuple(a for a in range(3) if a != axis)))[0] for axis in range(3)]
    if any(span.size == 0 for span in spans):
        return None
    window = tuple(slice(int(span[0]), int(span[-1]) + 1) for span in spans)    # only the search box
    labels, _ = ndimage.label(anatomy.masks["soft_unsmoothed"][window] & box[window])
    best, best_length = None, 0.0
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        part = labels[sl] == i
        length = int(part.any(axis=(1, 2)).sum()) * geometry.spacing[0]
        if length >= _TUBE_MIN_MM and length > best_length and _round_tube(part, geometry):
            best = np.zeros(shape, dtype=bool)
            best[window] = labels == i
            best_length = length
    return best


def _round_tube(part: np.ndarray, geometry: Volume) -> bool:
    """Whether most cross-sections are compact round blobs of an aorta's size (not a strip or a sheet)."""
    slices = part[part.any(axis=(1, 2))]
    area = slices.sum(axis=(1, 2)) * geometry.spacing[1] * geometry.spacing[2]
    height = slices.any(axis=2).sum(axis=1) * geometry.spacing[1]
    width = slices.any(axis=1).sum(axis=1) * geometry.spacing[2]
    fill = area / (height * width)
    return bool(_AREA_MM2[0] <= np.median(area) <= _AREA_MM2[1] and np.median(fill) >= 0.6
                and np.median(np.maximum(height, width)) <= 45.0)


def blood_pool(suv: np.ndarray, geometry: Volume, anatomy: Anatomy,
               organ_masks: dict[str, np.ndarray]) -> Reference:
    """Mean and SD of SUV in the descending aorta's lumen over 2 cm, or a reference marked not found."""
    if "aorta" in organ_masks:
        aorta, method = organ_masks["aorta"], "organ label map's aorta"
    elif anatomy.source == "ct":
        aorta, method = _tube(anatomy, geometry), ("CT: soft-tissue tube left of and in front of the spine, "
                                                   "between the lungs' base and top")
        if aorta is None:
            return Reference("blood_pool", False, note="no descending aorta found on the CT (a soft-tissue tube "
                                                       "beside the spine in the chest); not replaced by another organ")
    else:
        return Reference("blood_pool", False, note="no CT on the PET's frame of reference and no organ label map: "
                                                   "the descending aorta cannot be located")
    lumen = ndimage.binary_erosion(aorta, _IN_PLANE)
    present = np.nonzero(lumen.any(axis=(1, 2)))[0]
    if present.size == 0:
        return Reference("blood_pool", False, method=method, note="the aorta is too thin on this grid to leave a lumen")
    half = max(int(SEGMENT_MM / geometry.spacing[0] / 2.0), 1)      # 2·half + 1 slices, about 2 cm
    middle = int(present[present.size // 2])
    segment = np.zeros_like(lumen)
    segment[max(middle - half, 0):middle + half + 1] = lumen[max(middle - half, 0):middle + half + 1]
    values = suv[segment].astype(np.float64)
    if values.size < 5:
        return Reference("blood_pool", False, method=method, note=f"only {values.size} voxels in the aortic lumen")
    centre = geometry.index_to_mm(np.argwhere(segment).mean(axis=0))
    area = segment.sum() / max(int(segment.any(axis=(1, 2)).sum()), 1) * geometry.spacing[1] * geometry.spacing[2]
    return Reference("blood_pool", True, float(values.mean()), float(values.std(ddof=1)),
                     tuple(float(v) for v in centre),  # type: ignore[arg-type]
                     f"aortic lumen over {segment.any(axis=(1, 2)).sum() * geometry.spacing[0]:.0f} mm, "
                     f"mean cross-section {area:.0f} mm²", int(values.size), method)
