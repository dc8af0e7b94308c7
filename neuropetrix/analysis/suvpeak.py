"""SUVpeak (PERCIST 1.0): the highest mean SUV in a 1 cm³ sphere (radius 6.2 mm) centred in the lesion.

The sphere is a kernel of partial-voxel weights (each voxel weighted by the fraction of it inside the
sphere, from 7³ sub-samples), so it holds 1 ml whatever the voxel size; a sphere reaching past the edge
of the image is averaged over its part inside. The sphere's centre may be any voxel of the lesion, not
only its hottest voxel. The convolution runs with scipy around each lesion only, whatever the analysis device.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

PEAK_RADIUS_MM = 10.0 * (3.0 / (4.0 * math.pi)) ** (1.0 / 3.0)   # 1 cm³ sphere: 6.204 mm
_SUBSAMPLES = 7


def sphere_kernel(spacing: tuple[float, float, float], radius_mm: float = PEAK_RADIUS_MM) -> np.ndarray:
    """Weights (summing to 1) of a sphere of `radius_mm` on a grid of `spacing` (slice, row, col) mm."""
    half = [math.ceil(radius_mm / s - 0.5) for s in spacing]
    offsets = (np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES - 0.5
    axes = [(np.arange(-h, h + 1)[:, None] + offsets[None, :]) * s for h, s in zip(half, spacing)]
    z = axes[0].reshape(-1, 1, 1, _SUBSAMPLES, 1, 1)
    y = axes[1].reshape(1, -1, 1, 1, _SUBSAMPLES, 1)
    x = axes[2].reshape(1, 1, -1, 1, 1, _SUBSAMPLES)
    inside = (z ** 2 + y ** 2 + x ** 2) <= radius_mm ** 2
    weights = inside.mean(axis=(3, 4, 5))
    return weights / weights.sum()


def _peaks_cpu(suv: np.ndarray, labels: np.ndarray, n: int, kernel: np.ndarray) -> np.ndarray:
    """Per lesion, convolve a crop reaching one kernel radius past it: the sphere around any lesion
    voxel then lies in the crop, except where the crop is cut by the image edge (the weight of the
    ones-image then gives the in-image part of the sphere)."""
    half = [k // 2 for k in kernel.shape]
    peaks = np.zeros(n)
    for i, box in enumerate(ndimage.find_objects(labels, max_label=n)):
        if box is None:
            continue
        crop = tuple(slice(max(b.start - h, 0), min(b.stop + h, size))
                     for b, h, size in zip(box, half, suv.shape))
        values = suv[crop].astype(np.float64)
        total = ndimage.correlate(values, kernel, mode="constant", cval=0.0)
        weight = ndimage.correlate(np.ones_like(values), kernel, mode="constant", cval=0.0)
        inner = tuple(slice(b.start - c.start, b.stop - c.start) for b, c in zip(box, crop))
        mean = total[inner] / weight[inner]
        peaks[i] = float(mean[labels[box] == i + 1].max())
    return peaks


def suv_peaks(suv: np.ndarray, labels: np.ndarray, n: int, spacing: tuple[float, float, float]) -> np.ndarray:
    """SUVpeak of lesions 1…n (array index i is label i + 1)."""
    if n == 0:
        return np.zeros(0)
    return _peaks_cpu(suv, labels, n, sphere_kernel(spacing))
