"""Pictures the right way up: head at the top, the patient's right on the image's left, whatever the
stored order of slices, rows and columns; normal uptake drawn apart from lesions."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from neuropetrix.analysis.results import AnalysisResult, Lesion, PhysiologicalRegion, Segmentation, SuvInputs
from neuropetrix.reports.images import axial, axial_png, coronal, mip_png

SHAPE = (60, 40, 50)          # slices, rows, columns; 4 mm voxels


def _result(flip_slices: bool = False, flip_columns: bool = False, flip_rows: bool = False) -> AnalysisResult:
    """A hot lesion high in the body (near the head) on the patient's right, anterior; a 'bladder' low down.

    In the usual order slices run inferior → superior (+z), rows anterior → posterior (+y), columns
    right → left (+x): the lesion sits at a high slice, a low row and a low column. Flipped variants store
    the very same patient in the other order, with `patient_axes` saying so."""
    suv = np.full(SHAPE, 1.0, dtype=np.float32)
    labels = np.zeros(SHAPE, dtype=np.int32)
    organs = np.zeros(SHAPE, dtype=np.int32)
    labels[50:54, 8:12, 6:10] = 1
    suv[labels == 1] = 9.0
    organs[4:10, 15:25, 20:30] = 1
    suv[organs == 1] = 20.0
    axes = [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    for flip, axis in ((flip_slices, 0), (flip_rows, 1), (flip_columns, 2)):
        if flip:
            suv, labels, organs = (np.flip(a, axis).copy() for a in (suv, labels, organs))
            axes[axis] = [-v for v in axes[axis]]
    inputs = SuvInputs("bw", "BQML", "START", None, None, None, None, None, None, 72.0, None, None, None, None)
    lesion = Lesion(1, 9.0, 9.0, 9.0, 0.1, 0.9, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), int((labels == 1).sum()))
    return AnalysisResult("1.2.3", "1.2.3.4", [f"1.2.3.4.{k}" for k in range(SHAPE[0])], None, None, inputs,
                          Segmentation("fixed", 4.0, 0.5, "t", "1"), [lesion], labels, (4.0, 4.0, 4.0),
                          suv_volume=suv, physiological_map=organs, patient_axes=tuple(map(tuple, axes)),
                          physiological=[PhysiologicalRegion("urinary_bladder", 20.0, 20.0, 50.0, (0, 0, 0), "t")])


def _quadrant(image: np.ndarray, value_above: float) -> tuple[bool, bool]:
    """(top half, left half) of where the values above `value_above` are."""
    rows, cols = np.nonzero(image > value_above)
    return bool(rows.mean() < image.shape[0] / 2), bool(cols.mean() < image.shape[1] / 2)


@pytest.mark.parametrize("flips", [(False, False), (True, False), (False, True), (True, True)])
def test_the_coronal_projection_has_the_head_up_and_the_right_on_the_left(flips):
    result = _result(*flips)
    shown = coronal(result, result.suv_volume.max(axis=1))
    lesion = np.where(shown == 9.0, 1.0, 0.0)
    assert _quadrant(lesion, 0.5) == (True, True)                   # head up, patient's right on the left
    assert _quadrant(np.where(shown == 20.0, 1.0, 0.0), 0.5)[0] is False   # the bladder low down
    reference = _result()
    assert np.array_equal(shown, coronal(reference, reference.suv_volume.max(axis=1)))


@pytest.mark.parametrize("flips", [(False, False, False), (True, True, True), (False, True, True)])
def test_the_pngs_do_not_depend_on_the_stored_order(flips):
    reference, flipped = _result(), _result(*flips)
    assert mip_png(flipped, flipped.suv_volume) == mip_png(reference, reference.suv_volume)
    if not flips[0]:      # (with slices reversed another of the lesion's equally hot slices is chosen)
        assert axial_png(flipped, flipped.suv_volume, flipped.lesions[0]) == \
            axial_png(reference, reference.suv_volume, reference.lesions[0])
    k = 52 if not flips[0] else SHAPE[0] - 1 - 52
    assert _quadrant(np.where(axial(flipped, flipped.suv_volume[k]) == 9.0, 1.0, 0.0), 0.5) == (True, True)


def test_the_mip_png_shows_the_lesion_top_left_and_the_organ_dashed_low():
    """Read back the drawn pixels: the darkest blob (SUV 9 on grey, inverted scale) near the head on the
    left; red lesion outline there; the organ outline grey, not a lesion colour."""
    result = _result()
    image = np.asarray(Image.open(io.BytesIO(mip_png(result, result.suv_volume))).convert("RGB")).astype(int)
    red = (image[..., 0] > 180) & (image[..., 1] < 80) & (image[..., 2] < 110)     # lesion 1's colour
    rows, cols = np.nonzero(red)
    body_rows, body_cols = np.nonzero(image.sum(axis=2) < 700)
    assert rows.mean() < body_rows.min() + 0.3 * np.ptp(body_rows)       # near the top of the body
    assert cols.mean() < body_cols.mean()                                # on the image's left
    grey = (np.abs(image[..., 0] - 127) < 12) & (np.abs(image[..., 1] - 127) < 12) & (np.abs(image[..., 2] - 127) < 12)
    assert np.nonzero(grey)[0].mean() > body_rows.mean()                 # the normal-uptake outline is low
