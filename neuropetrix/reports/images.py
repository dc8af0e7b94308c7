"""Pictures for people: a coronal MIP of the PET with the lesions outlined, and axial key images.

Radiological convention, whatever order the slices were stored in: the head at the top, the patient's
right on the image's left, anterior at the top of an axial image; inverted grey scale, SUV 0–10.
Lesions are outlined in colour with their numbers; physiological uptake the analysis told apart
(brain, bladder, …) is outlined dashed in grey with the organ's name, so nobody mistakes it for a
lesion or wonders why it was not counted. They show the SUV volume the analysis measured
(`AnalysisResult.suv_volume`), so the picture and the numbers cannot disagree. Drawn with
matplotlib's object API (no pyplot), so rendering in a worker thread touches no global state.
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
PHYSIOLOGICAL_COLOR = "#7f7f7f"
_USUAL_AXES = ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def suv_volume(result: AnalysisResult) -> np.ndarray:
    """The SUV volume the measures were made on, checked against the label map."""
    require(result.suv_volume is not None, "the analysis has no suv_volume: the pictures need the SUV volume")
    volume = np.asarray(result.suv_volume, dtype=np.float32)
    require(volume.shape == np.asarray(result.label_map).shape,
            f"suv_volume is shaped {volume.shape}, label_map {np.asarray(result.label_map).shape}")
    return volume


def _axes(result: AnalysisResult) -> np.ndarray:
    return np.asarray(result.patient_axes or _USUAL_AXES, dtype=np.float64)


def coronal(result: AnalysisResult, volume: np.ndarray) -> np.ndarray:
    """A (slices, columns) projection or mask flipped to display order: superior at row 0, patient's right
    at column 0. `volume` is already projected along the rows (anterior–posterior)."""
    axes = _axes(result)
    out = volume
    if axes[0][2] > 0:            # slice index runs towards the head: put the last slice on top
        out = out[::-1]
    if axes[2][0] < 0:            # column index runs towards the patient's right (LPS +x is left)
        out = out[:, ::-1]
    return out


def axial(result: AnalysisResult, image: np.ndarray) -> np.ndarray:
    """One (rows, columns) slice in display order: anterior at the top, patient's right on the left."""
    axes = _axes(result)
    out = image
    if axes[1][1] < 0:            # row index runs towards anterior
        out = out[::-1]
    if axes[2][0] < 0:
        out = out[:, ::-1]
    return out


def _caption(result: AnalysisResult) -> str:
    return f"SUV{result.suv.suv_type} 0–{SUV_WINDOW:g}"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, facecolor="white")
    return buffer.getvalue()


def _outline(ax, mask: np.ndarray, dy: float, dx: float, color: str, label: str, dashed: bool = False) -> None:
    ys = (np.arange(mask.shape[0]) + 0.5) * dy
    xs = (np.arange(mask.shape[1]) + 0.5) * dx
    ax.contour(xs, ys, mask.astype(float), levels=[0.5], colors=[color], linewidths=0.9 if dashed else 1.2,
               linestyles="dashed" if dashed else "solid")
    rows, cols = np.nonzero(mask)
    ax.text((cols.max() + 1.5) * dx, rows.min() * dy, label, color=color, fontsize=6 if dashed else 8,
            va="top", fontweight="normal" if dashed else "bold")


def mip_png(result: AnalysisResult, volume: np.ndarray) -> bytes:
    """Coronal maximum-intensity projection, head up and the patient's right on the left, with each lesion's
    projected outline and number and each physiological region outlined dashed with its organ."""
    labels = np.asarray(result.label_map)
    dz, _, dx = result.voxel_spacing_mm
    mip = coronal(result, volume.max(axis=1))     # seen from the front
    caption = _caption(result)
    height, width = mip.shape[0] * dz, mip.shape[1] * dx
    fig = Figure(figsize=(4.0, min(9.0, 0.5 + 4.0 * height / width)), dpi=120)
    bottom = 0.25 / (0.5 + 4.0 * height / width)
    ax = fig.add_axes((0.02, bottom, 0.96, 1.0 - 2 * bottom))
    extent = (0.0, width, height, 0.0)
    ax.imshow(mip, cmap="gray_r", vmin=0.0, vmax=SUV_WINDOW, extent=extent, interpolation="bilinear")
    if result.physiological_map is not None:
        regions = np.asarray(result.physiological_map)
        for i, region in enumerate(result.physiological, start=1):
            projected = coronal(result, (regions == i).any(axis=1))
            if projected.any():
                _outline(ax, projected, dz, dx, PHYSIOLOGICAL_COLOR, region.organ.replace("_", " "), dashed=True)
    for i, lesion in enumerate(sorted(result.lesions, key=lambda les: les.label)):
        _outline(ax, coronal(result, (labels == lesion.label).any(axis=1)), dz, dx, COLORS[i % len(COLORS)],
                 str(lesion.label))
    ax.set_xlim(0.0, width)
    ax.set_ylim(height, 0.0)
    ax.set_axis_off()
    ax.text(0.01, 0.99, "R", transform=ax.transAxes, va="top", ha="left", fontsize=9)
    ax.text(0.99, 0.99, "L", transform=ax.transAxes, va="top", ha="right", fontsize=9)
    normal = (f"; {len(result.physiological)} normal-uptake region(s) dashed, not counted"
              if result.physiological else "")
    fig.text(0.5, bottom / 3, f"MIP, {len(result.lesions)} lesion(s) outlined{normal}, {caption}", ha="center",
             fontsize=6)
    return _png(fig)


def axial_png(result: AnalysisResult, volume: np.ndarray, lesion: Lesion) -> bytes:
    """The axial slice through the lesion's hottest voxel, anterior up and the patient's right on the left,
    with the lesion outlined."""
    labels = np.asarray(result.label_map)
    mask = labels == lesion.label
    require(mask.any(), f"lesion {lesion.label} has no voxels in label_map")
    k = int(np.argwhere(mask)[np.argmax(volume[mask])][0])
    _, dy, dx = result.voxel_spacing_mm
    caption = _caption(result)
    fig = Figure(figsize=(2.4, 2.6), dpi=120)
    ax = fig.add_axes((0.0, 0.1, 1.0, 0.9))
    image = axial(result, volume[k])
    extent = (0.0, image.shape[1] * dx, image.shape[0] * dy, 0.0)
    ax.imshow(image, cmap="gray_r", vmin=0.0, vmax=SUV_WINDOW, extent=extent, interpolation="bilinear")
    ys = (np.arange(image.shape[0]) + 0.5) * dy
    xs = (np.arange(image.shape[1]) + 0.5) * dx
    ax.contour(xs, ys, axial(result, mask[k]).astype(float), levels=[0.5], colors=["#e6194b"], linewidths=1.2)
    ax.set_axis_off()
    ax.text(0.02, 0.98, "R", transform=ax.transAxes, va="top", ha="left", fontsize=7)
    ax.text(0.98, 0.98, "L", transform=ax.transAxes, va="top", ha="right", fontsize=7)
    fig.text(0.5, 0.03, f"Lesion {lesion.label}, slice {k + 1}, {caption}", ha="center", fontsize=6)
    return _png(fig)
