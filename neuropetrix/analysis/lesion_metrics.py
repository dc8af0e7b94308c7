"""Per-lesion measures from an SUV volume and its label map: SUVmax/mean/peak, volume, TLG, positions.

Only the lesion voxels are visited, so a whole-body volume with a few lesions costs little. The
centroid is the geometric centre of the lesion's voxel centres (not SUV-weighted), in patient LPS mm.
"""
from __future__ import annotations

import numpy as np

from neuropetrix.analysis.results import Lesion
from neuropetrix.analysis.volumes import Volume


def lesion_measures(suv: np.ndarray, labels: np.ndarray, n: int, geometry: Volume,
                    peaks: np.ndarray) -> list[Lesion]:
    """Lesions 1…n of `labels` measured on `suv`; `peaks[i]` is lesion i + 1's SUVpeak."""
    if n == 0:
        return []
    flat = np.flatnonzero(labels)
    lab = labels.ravel()[flat]
    values = suv.ravel()[flat].astype(np.float64)
    coords = np.stack(np.unravel_index(flat, labels.shape), axis=1).astype(np.float64)
    counts = np.bincount(lab, minlength=n + 1)[1:]
    sums = np.bincount(lab, weights=values, minlength=n + 1)[1:]
    centroid_index = np.stack([np.bincount(lab, weights=coords[:, a], minlength=n + 1)[1:] for a in range(3)],
                              axis=1) / counts[:, None]
    order = np.lexsort((-values, lab))              # by label, hottest voxel first within each
    first = np.searchsorted(lab[order], np.arange(1, n + 1))
    hottest = order[first]
    centroids = geometry.index_to_mm(centroid_index)
    max_positions = geometry.index_to_mm(coords[hottest])
    voxel_ml = geometry.voxel_volume_ml
    lesions = []
    for i in range(n):
        mean = float(sums[i] / counts[i])
        volume = float(counts[i] * voxel_ml)
        lesions.append(Lesion(
            label=i + 1, suv_max=float(values[hottest[i]]), suv_mean=mean, suv_peak=float(peaks[i]),
            volume_ml=volume, tlg=mean * volume,
            centroid_mm=tuple(float(v) for v in centroids[i]),  # type: ignore[arg-type]
            max_position_mm=tuple(float(v) for v in max_positions[i]),  # type: ignore[arg-type]
            voxel_count=int(counts[i])))
    return lesions
