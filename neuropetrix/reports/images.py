"""Pictures for people: a coronal MIP of the PET with the lesions outlined, and axial key images.

Nuclear-medicine convention: inverted grey scale, SUV 0–10, the patient's right on the image's left.
They show the SUV volume the analysis measured (`AnalysisResult.suv_volume`), so the picture and the
numbers cannot disagree. Drawn with matplotlib's object API (no
pyplot), so rendering in a worker thread touches no global state.
"""
from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from neuropetrix.analysis.results import AnalysisResult, Lesion
from neuropetrix.reports.errors import require

SUV_WINDOW = 10.0
COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324")


def suv_volume(result: AnalysisResult) -> np.ndarray:
    """The SUV volume the measures were made on, checked against the label map."""
    require(result.suv_volume is not None, "the analysis has no suv_volume: the pictures need the SUV volume")
    volume = np.asarray(result.suv_volume, dtype=np.float32)
    require(volume.shape == np.asarray(result.label_map).shape,
            f"suv_volume is shaped {volume.shape}, label_map {np.asarray(result.label_map).shape}")
    return volume


def _caption(result: AnalysisResult) -> str:
    return f"SUV{result.suv.suv_type} 0–{SUV_WINDOW:g}"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, facecolor="white")
    return buffer.getvalue()


def mip_png(result: AnalysisResult, volume: np.ndarray) -> bytes:
    """Coronal maximum-intensity projection with each lesion's projected outline and number."""
    labels = np.asarray(result.label_map)
    dz, _, dx = result.voxel_spacing_mm
    mip = volume.max(axis=1)                      # (slices, columns): seen from the front
    caption = _caption(result)
    height, width = mip.shape[0] * dz, mip.shape[1] * dx
    fig = Figure(figsize=(4.0, min(9.0, 0.5 + 4.0 * height / width)), dpi=120)
    bottom = 0.25 / (0.5 + 4.0 * height / width)
    ax = fig.add_axes((0.02, bottom, 0.96, 1.0 - 2 * bottom))
    extent = (0.0, width, height, 0.0)
    ax.imshow(mip, cmap="gray_r", vmin=0.0, vmax=SUV_WINDOW, extent=extent, interpolation="bilinear")
    for i, lesion in enumerate(sorted(result.lesions, key=lambda les: les.label)):
        projected = (labels == lesion.label).any(axis=1).astype(float)
        color = COLORS[i % len(COLORS)]
        ys = (np.arange(projected.shape[0]) + 0.5) * dz
        xs = (np.arange(projected.shape[1]) + 0.5) * dx
        ax.contour(xs, ys, projected, levels=[0.5], colors=[color], linewidths=1.2)
        rows, cols = np.nonzero(projected)
        ax.text((cols.max() + 1.5) * dx, rows.min() * dz, str(lesion.label), color=color, fontsize=8,
                va="top", fontweight="bold")
    ax.set_xlim(0.0, width)
    ax.set_ylim(height, 0.0)
    ax.set_axis_off()
    ax.text(0.01, 0.99, "R", transform=ax.transAxes, va="top", ha="left", fontsize=9)
    ax.text(0.99, 0.99, "L", transform=ax.transAxes, va="top", ha="right", fontsize=9)
    fig.text(0.5, bottom / 3, f"MIP, {len(result.lesions)} lesion(s) outlined, {caption}", ha="center", fontsize=7)
    return _png(fig)


def axial_png(result: AnalysisResult, volume: np.ndarray, lesion: Lesion) -> bytes:
    """The axial slice through the lesion's hottest voxel, with the lesion outlined."""
    labels = np.asarray(result.label_map)
    mask = labels == lesion.label
    require(mask.any(), f"lesion {lesion.label} has no voxels in label_map")
    k = int(np.argwhere(mask)[np.argmax(volume[mask])][0])
    _, dy, dx = result.voxel_spacing_mm
    caption = _caption(result)
    fig = Figure(figsize=(2.4, 2.6), dpi=120)
    ax = fig.add_axes((0.0, 0.1, 1.0, 0.9))
    image = volume[k]
    extent = (0.0, image.shape[1] * dx, image.shape[0] * dy, 0.0)
    ax.imshow(image, cmap="gray_r", vmin=0.0, vmax=SUV_WINDOW, extent=extent, interpolation="bilinear")
    ys = (np.arange(image.shape[0]) + 0.5) * dy
    xs = (np.arange(image.shape[1]) + 0.5) * dx
    ax.contour(xs, ys, mask[k].astype(float), levels=[0.5], colors=["#e6194b"], linewidths=1.2)
    ax.set_axis_off()
    fig.text(0.5, 0.03, f"Lesion {lesion.label}, slice {k + 1}, {caption}", ha="center", fontsize=6)
    return _png(fig)
