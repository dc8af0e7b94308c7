"""Lesions from an SUV volume: thresholds (fixed, % of each lesion's SUVmax, PERCIST) and components.

Components are 26-connected, labelled by scipy whatever the analysis device (a whole-body mask takes
about 0.4 s; no measurement has shown a GPU labelling to be needed). Lesions smaller than the minimum
volume are dropped; the rest are numbered 1…N by decreasing SUVmax.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of a boolean volume, numbered 1…n in raster order of their first voxel."""
    labels, n = ndimage.label(mask, structure=_STRUCTURE)
    return labels.astype(np.int32, copy=False), int(n)


def threshold_mask(suv: np.ndarray, level: float) -> np.ndarray:
    """suv ≥ level, the level rounded to the volume's float32 as the SUV was."""
    return suv >= np.float32(level)


def finalize(labels: np.ndarray, n: int, suv: np.ndarray, min_voxels: int) -> np.ndarray:
    """Drop components under `min_voxels`; renumber the rest 1…N by SUVmax (ties: first voxel)."""
    if n == 0:
        return labels
    flat = np.ravel(labels)
    where = np.flatnonzero(flat)
    lab = flat[where]
    counts = np.bincount(lab, minlength=n + 1)
    maxima = np.full(n + 1, -np.inf)
    np.maximum.at(maxima, lab, np.ravel(suv)[where])
    keep = [i for i in range(1, n + 1) if counts[i] >= max(min_voxels, 1)]
    keep.sort(key=lambda i: (-maxima[i], i))
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[keep] = np.arange(1, len(keep) + 1, dtype=np.int32)
    # Only the labelled voxels are renumbered: looking the whole volume up in `lut` took a third of a
    # second on a whole-body PET that holds a few thousand lesion voxels.
    out = np.zeros(labels.shape, dtype=np.int32)
    out.ravel()[where] = lut[lab]
    return out


def fixed_threshold(suv: np.ndarray, level: float, min_voxels: int) -> np.ndarray:
    """Lesions = components of SUV ≥ level (a fixed SUV, or the PERCIST liver threshold)."""
    labels, n = label_components(threshold_mask(suv, level))
    return finalize(labels, n, suv, min_voxels)


def _box(slices: tuple[slice, ...], margin: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, size)) for s, size in zip(slices, shape))


def _touches_inner_face(region: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...]) -> bool:
    """Whether the region reaches a face of the box that is not also a face of the volume."""
    for axis, (s, size) in enumerate(zip(box, shape)):
        first = np.take(region, 0, axis=axis)
        last = np.take(region, -1, axis=axis)
        if (s.start > 0 and first.any()) or (s.stop < size and last.any()):
            return True
    return False


def percent_of_max(suv: np.ndarray, fraction: float, seed_level: float, min_voxels: int) -> np.ndarray:
    """Lesions = for each seed (component of SUV ≥ seed_level), hottest first, the voxels connected to
    its maximum with SUV ≥ fraction × that maximum, not already claimed by a hotter lesion."""
    seeds, n = label_components(threshold_mask(suv, seed_level))
    out = np.zeros(suv.shape, dtype=np.int32)
    if n == 0:
        return out
    objects = ndimage.find_objects(seeds)
    peaks = ndimage.maximum_position(suv, seeds, index=np.arange(1, n + 1))
    order = sorted(range(n), key=lambda i: (-float(suv[peaks[i]]), i))
    count = 0
    for i in order:
        peak = peaks[i]
        if out[peak]:
            continue                                      # swallowed by a hotter neighbour
        level = np.float32(fraction * float(suv[peak]))
        margin = 4
        while True:
            box = _box(objects[i], margin, suv.shape)  # type: ignore[arg-type]
            candidate = (suv[box] >= level) & (out[box] == 0)
            comps, _ = label_components(candidate)
            local_peak = tuple(p - s.start for p, s in zip(peak, box))
            region = comps == comps[local_peak]
            if not _touches_inner_face(region, box, suv.shape):
                break
            margin *= 2
        count += 1
        out[box][region] = count
    return finalize(out, count, suv, min_voxels)
