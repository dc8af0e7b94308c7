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
from scipy.ndimage import find_objects

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
    """The figure as PNG, zlib level 1: these pictures are drawn several times per study and the
    default level took most of their time for files under a third smaller."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, facecolor="white", pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


def _outline(ax, mask: np.ndarray, dy: float, dx: float, color: str, label: str, dashed: bool = False) -> None:
    ys = (np.arange(mask.shape[0]) + 0.5) * dy
    xs = (np.arange(mask.shape[1]) + 0.5) * dx
    ax.contour(xs, ys, mask.astype(float), levels=[0.5], colors=[color], linewidths=0.9 if dashed else 1.2,
               linestyles="dashed" if dashed else "solid")
    rows, cols = np.nonzero(mask)
    ax.text((cols.max() + 1.5) * dx, rows.min() * dy, label, color=color, fontsize=6 if dashed else 8,
            va="top", fontweight="normal" if dashed else "bold")


def _regions(labels: np.ndarray) -> list[tuple[slice, ...] | None]:
    """The bounding box of every label 1..max (None for a label with no voxels): each picture looks
    only inside its region's box instead of comparing the whole volume."""
    return find_objects(labels) if labels.size and labels.max() > 0 else []


class Pictures:
    """The pictures of one analysis (the MIP with all lesions or with some, each lesion's key image),
    sharing what they have in common: the projection, each region's box and outline, and the key images
    already drawn. The report, the PDF and the review pictures (keyimages.py) draw from one instance."""

    def __init__(self, result: AnalysisResult, volume: np.ndarray | None = None) -> None:
        self.result = result
        self.volume = suv_volume(result) if volume is None else volume
        self.labels = np.asarray(result.label_map)
        self._boxes = _regions(self.labels)
        self._outlines: dict[int, np.ndarray] = {}
        self._axial: dict[int, bytes] = {}
        self._projection: np.ndarray | None = None
        self._physiological: list[tuple[str, np.ndarray]] | None = None

    def _box(self, boxes: list[tuple[slice, ...] | None], label: int) -> tuple[slice, ...]:
        box = boxes[label - 1] if 0 < label <= len(boxes) else None
        require(box is not None, f"lesion {label} has no voxels in label_map")
        return box

    def _projected(self, regions: np.ndarray, boxes: list[tuple[slice, ...] | None], label: int) -> np.ndarray:
        """The region's outline seen from the front, in display order."""
        box = self._box(boxes, label)
        out = np.zeros((regions.shape[0], regions.shape[2]), dtype=bool)
        out[box[0], box[2]] = (regions[box] == label).any(axis=1)
        return coronal(self.result, out)

    def projection(self) -> np.ndarray:
        """The coronal maximum-intensity projection in display order."""
        if self._projection is None:
            self._projection = coronal(self.result, self.volume.max(axis=1))
        return self._projection

    def lesion_outline(self, label: int) -> np.ndarray:
        if label not in self._outlines:
            self._outlines[label] = self._projected(self.labels, self._boxes, label)
        return self._outlines[label]

    def physiological(self) -> list[tuple[str, np.ndarray]]:
        """(organ, projected outline) of each physiological region that shows on the MIP."""
        if self._physiological is None:
            self._physiological = []
            if self.result.physiological_map is not None:
                regions = np.asarray(self.result.physiological_map)
                boxes = _regions(regions)
                for i, region in enumerate(self.result.physiological, start=1):
                    if i <= len(boxes) and boxes[i - 1] is not None:
                        self._physiological.append((region.organ, self._projected(regions, boxes, i)))
        return self._physiological

    def mip_png(self, lesions: list[Lesion] | None = None) -> bytes:
        """Coronal maximum-intensity projection, head up and the patient's right on the left, with the
        projected outline and number of each of `lesions` (default: all) and each physiological region
        outlined dashed with its organ."""
        result = self.result
        lesions = result.lesions if lesions is None else lesions
        dz, _, dx = result.voxel_spacing_mm
        mip = self.projection()
        height, width = mip.shape[0] * dz, mip.shape[1] * dx
        fig = Figure(figsize=(4.0, min(9.0, 0.5 + 4.0 * height / width)), dpi=120)
        bottom = 0.25 / (0.5 + 4.0 * height / width)
        ax = fig.add_axes((0.02, bottom, 0.96, 1.0 - 2 * bottom))
        extent = (0.0, width, height, 0.0)
        ax.imshow(mip, cmap="gray_r", vmin=0.0, vmax=SUV_WINDOW, extent=extent, interpolation="bilinear")
        for organ, projected in self.physiological():
            _outline(ax, projected, dz, dx, PHYSIOLOGICAL_COLOR, organ.replace("_", " "), dashed=True)
        for i, lesion in enumerate(sorted(lesions, key=lambda les: les.label)):
            _outline(ax, self.lesion_outline(lesion.label), dz, dx, COLORS[i % len(COLORS)], str(lesion.label))
        ax.set_xlim(0.0, width)
        ax.set_ylim(height, 0.0)
        ax.set_axis_off()
        ax.text(0.01, 0.99, "R", transform=ax.transAxes, va="top", ha="left", fontsize=9)
        ax.text(0.99, 0.99, "L", transform=ax.transAxes, va="top", ha="right", fontsize=9)
        normal = (f"; {len(result.physiological)} normal-uptake region(s) dashed, not counted"
                  if result.physiological else "")
        fig.text(0.5, bottom / 3, f"MIP, {len(lesions)} lesion(s) outlined{normal}, {_caption(result)}",
                 ha="center", fontsize=6)
        return _png(fig)

    def axial_png(self, lesion: Lesion) -> bytes:
        """The axial slice through the lesion's hottest voxel, anterior up and the patient's right on the
        left, with the lesion outlined (drawn once per lesion)."""
        if lesion.label not in self._axial:
            self._axial[lesion.label] = self._draw_axial(lesion)
        return self._axial[lesion.label]

    def _draw_axial(self, lesion: Lesion) -> bytes:
        result = self.result
        box = self._box(self._boxes, lesion.label)
        inside = self.labels[box] == lesion.label
        k = box[0].start + int(np.argwhere(inside)[np.argmax(self.volume[box][inside])][0])
        mask = self.labels[k] == lesion.label
        _, dy, dx = result.voxel_spacing_mm
        fig = Figure(figsize=(2.4, 2.6), dpi=120)
        ax = fig.add_axes((0.0, 0.1, 1.0, 0.9))
        image = axial(result, self.volume[k])
        extent = (0.0, image.shape[1] * dx, image.shape[0] * dy, 0.0)
        ax.imshow(image, cmap="gray_r", vmin=0.0, vmax=SUV_WINDOW, extent=extent, interpolation="bilinear")
        ys = (np.arange(image.shape[0]) + 0.5) * dy
        xs = (np.arange(image.shape[1]) + 0.5) * dx
        ax.contour(xs, ys, axial(result, mask).astype(float), levels=[0.5], colors=["#e6194b"], linewidths=1.2)
        ax.set_axis_off()
        ax.text(0.02, 0.98, "R", transform=ax.transAxes, va="top", ha="left", fontsize=7)
        ax.text(0.98, 0.98, "L", transform=ax.transAxes, va="top", ha="right", fontsize=7)
        fig.text(0.5, 0.03, f"Lesion {lesion.label}, slice {k + 1}, {_caption(result)}", ha="center", fontsize=6)
        return _png(fig)


def mip_png(result: AnalysisResult, volume: np.ndarray) -> bytes:
    """The MIP of `result` with all its lesions (`Pictures.mip_png`)."""
    return Pictures(result, volume).mip_png()


def axial_png(result: AnalysisResult, volume: np.ndarray, lesion: Lesion) -> bytes:
    """The key image of one lesion (`Pictures.axial_png`)."""
    return Pictures(result, volume).axial_png(lesion)
