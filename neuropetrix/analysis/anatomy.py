"""Where the organs are, from the CT on the PET's frame of reference (or from the PET alone).

Everything is computed on the PET grid from the CT resampled onto it, smoothed over 3×3×3 voxels so
that CT noise does not decide a voxel's tissue. The masks and landmarks are what the physiological-
uptake rules and the reference regions rely on:

- body: CT above −400 HU (or PET above 10 % of its 95th percentile), the largest component;
- lungs: air density (below −500 HU) inside the body; their top, their base, and the right lung's base;
- bone: above 250 HU; the spine's centre (x, y) is the median centre of the bone in the body's middle
  third of width and posterior half, slice by slice;
- intracranial: what the bone encloses in an axial slice (area ≥ 15 cm²) above the lungs' top — the
  skull around the brain; never computed below the lungs, where the pelvic ring also encloses soft tissue;
- urine: water density (−15…20 HU) inside the body below the lungs: the bladder and collecting system;
- soft tissue: 20…90 HU (blood, liver, muscle without contrast); also without the 3×3×3 smoothing, for
  structures of a few voxels across (the aorta in its fat).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

from neuropetrix.analysis.volumes import Volume

BONE_HU, LUNG_HU, BODY_HU = 250.0, -500.0, -400.0
URINE_HU = (-15.0, 20.0)
SOFT_HU = (20.0, 90.0)
_SKULL_CAVITY_MM2 = 1500.0


def coordinate(geometry: Volume, shape: tuple[int, ...], dim: int) -> np.ndarray:
    """Patient coordinate `dim` (0 x, 1 y, 2 z; LPS mm) of every voxel of a volume shaped `shape`, as an
    array that broadcasts to it: only the axes along which the coordinate changes are expanded (on an
    axial stack x is (1, 1, columns)), so whole-body grids cost no full-size coordinate arrays."""
    steps = geometry.axes[:, dim] * np.asarray(geometry.spacing)
    out = np.full((1, 1, 1), geometry.origin[dim])
    for axis in range(3):
        if abs(steps[axis]) > 1e-9 and shape[axis] > 1:
            ramp = np.arange(shape[axis], dtype=np.float64) * steps[axis]
            out = out + ramp.reshape([-1 if a == axis else 1 for a in range(3)])
    return out


def slice_means(geometry: Volume, mask: np.ndarray, dim: int) -> np.ndarray:
    """Per slice, the mean coordinate `dim` of the mask's voxels (nan where the slice has none).

    The coordinate is linear in the indices, so the per-slice sums of row and column indices suffice.
    """
    steps = geometry.axes[:, dim] * np.asarray(geometry.spacing)
    counts = mask.sum(axis=(1, 2)).astype(np.float64)
    rows = mask.sum(axis=2) @ np.arange(mask.shape[1], dtype=np.float64)
    cols = mask.sum(axis=1) @ np.arange(mask.shape[2], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (geometry.origin[dim] + np.arange(mask.shape[0]) * steps[0]
                 + (rows * steps[1] + cols * steps[2]) / counts)
    return np.where(counts > 0, means, np.nan)


def _largest(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))


@dataclass
class Anatomy:
    """Masks on the PET grid and landmarks in patient coordinates (mm), with what they came from."""

    source: str                                  # "ct" or "pet"
    body: np.ndarray
    z_mm: np.ndarray                             # (slices,) z of each PET slice
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    spine_xy_mm: tuple[float, float] | None = None
    body_center_xy_mm: tuple[float, float] = (0.0, 0.0)
    lung_top_mm: float | None = None
    lung_base_mm: float | None = None
    right_lung_base_mm: float | None = None
    lung_x_mm: np.ndarray | None = None          # (slices, 2): mean x of the right and left lung (nan: none)
    body_top_mm: float = 0.0
    body_bottom_mm: float = 0.0
    notes: list[str] = field(default_factory=list)


def _center_xy(geometry: Volume, mask: np.ndarray) -> tuple[float, float]:
    """Centre (x, y) of a mask, from its index sums along each axis (cheaper than center_of_mass)."""
    count = float(mask.sum())
    index = [float(mask.sum(axis=tuple(a for a in range(3) if a != axis)) @ np.arange(mask.shape[axis])) / count
             for axis in range(3)]
    centre = geometry.index_to_mm(np.array(index))
    return float(centre[0]), float(centre[1])


def _extent_z(z: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    present = z[mask.any(axis=(1, 2))]
    return float(present.min()), float(present.max())


def from_pet(suv: np.ndarray, geometry: Volume) -> Anatomy:
    """Body and its extent from the PET alone (no CT on the frame of reference)."""
    smooth = ndimage.uniform_filter(suv, 3, mode="nearest")
    positive = smooth[smooth > 0]
    level = 0.1 * float(np.percentile(positive, 95)) if positive.size else np.inf
    body = _largest(smooth > level)
    z = coordinate(geometry, (suv.shape[0], 1, 1), 2)[:, 0, 0]
    anatomy = Anatomy("pet", body, z)
    if body.any():
        anatomy.body_center_xy_mm = _center_xy(geometry, body)
        anatomy.body_bottom_mm, anatomy.body_top_mm = _extent_z(z, body)
    anatomy.notes.append("no CT on the PET's frame of reference: organs located from the PET alone")
    return anatomy


_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def _slice_fill(mask: np.ndarray) -> np.ndarray:
    """Holes filled slice by slice (what a ring encloses in an axial plane): the background regions of
    each slice that do not reach its edge, found with one labelling pass."""
    labels, n = ndimage.label(~mask, structure=_IN_PLANE)
    outside = np.zeros(n + 1, dtype=bool)
    for edge in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
        outside[edge.ravel()] = True
    outside[0] = False
    return ~outside[labels]


def _spine(geometry: Volume, bone: np.ndarray, body: np.ndarray, trunk: np.ndarray) -> tuple[float, float] | None:
    x = coordinate(geometry, bone.shape, 0)
    y = coordinate(geometry, bone.shape, 1)
    cx, cy = _center_xy(geometry, body)
    width = float(np.ptp(np.broadcast_to(x, body.shape)[body])) if body.any() else 0.0
    central = bone & trunk & (np.abs(x - cx) < width / 6.0) & (y > cy)
    rows = central.sum(axis=(1, 2)) >= 3
    if not rows.any():
        return None
    xs, ys = slice_means(geometry, central, 0)[rows], slice_means(geometry, central, 1)[rows]
    return float(np.median(xs)), float(np.median(ys))


def from_ct(ct_on_pet: np.ndarray, geometry: Volume) -> Anatomy:
    """Masks and landmarks from the CT resampled onto the PET grid (HU).

    The work is done on the rows and columns the body occupies (the air around it is often half the
    field of view); the masks are then placed back on the whole grid.
    """
    inside = ct_on_pet > BODY_HU
    rows, cols = np.nonzero(inside.any(axis=(0, 2)))[0], np.nonzero(inside.any(axis=(0, 1)))[0]
    if rows.size == 0:
        return _from_ct_grid(ct_on_pet, geometry)
    r0, r1 = max(int(rows[0]) - 2, 0), min(int(rows[-1]) + 3, ct_on_pet.shape[1])
    c0, c1 = max(int(cols[0]) - 2, 0), min(int(cols[-1]) + 3, ct_on_pet.shape[2])
    window = (slice(None), slice(r0, r1), slice(c0, c1))
    part = replace(geometry, data=np.empty(0), origin=geometry.index_to_mm(np.array([0.0, r0, c0])))
    anatomy = _from_ct_grid(np.ascontiguousarray(ct_on_pet[window]), part)

    def whole(mask: np.ndarray) -> np.ndarray:
        out = np.zeros(ct_on_pet.shape, dtype=bool)
        out[window] = mask
        return out
    anatomy.body = whole(anatomy.body)
    anatomy.masks = {name: whole(mask) for name, mask in anatomy.masks.items()}
    return anatomy


def _from_ct_grid(ct_on_pet: np.ndarray, geometry: Volume) -> Anatomy:
    hu = ndimage.uniform_filter(np.asarray(ct_on_pet, dtype=np.float32), 3, mode="nearest")
    z = coordinate(geometry, (hu.shape[0], 1, 1), 2)[:, 0, 0]
    body = _slice_fill(_largest(hu > BODY_HU))
    anatomy = Anatomy("ct", body, z)
    if not body.any():
        anatomy.notes.append("the CT shows no body")
        return anatomy
    anatomy.body_center_xy_mm = _center_xy(geometry, body)
    anatomy.body_bottom_mm, anatomy.body_top_mm = _extent_z(z, body)
    lung = body & (hu < LUNG_HU)
    labels, n = ndimage.label(lung)
    if n:
        sizes = np.bincount(labels.ravel(), minlength=n + 1) * geometry.voxel_volume_ml
        sizes[0] = 0.0
        lung = (sizes >= 100.0)[labels]
    bone = body & (hu > BONE_HU)
    anatomy.masks.update(lung=lung, bone=bone, soft=body & (hu >= SOFT_HU[0]) & (hu <= SOFT_HU[1]),
                         soft_unsmoothed=body & (ct_on_pet >= SOFT_HU[0]) & (ct_on_pet <= SOFT_HU[1]))
    z3 = z[:, None, None]
    if lung.any():
        anatomy.lung_base_mm, anatomy.lung_top_mm = _extent_z(z, lung)
        x = coordinate(geometry, hu.shape, 0)
        right = lung & (x < anatomy.body_center_xy_mm[0])
        if right.any():
            anatomy.right_lung_base_mm = _extent_z(z, right)[0]
        anatomy.lung_x_mm = np.stack([slice_means(geometry, right, 0), slice_means(geometry, lung & ~right, 0)], axis=1)
        trunk = body & (z3 < anatomy.lung_top_mm)
    else:
        anatomy.notes.append("no lungs on the CT: chest landmarks unknown")
        trunk = body
    anatomy.spine_xy_mm = _spine(geometry, bone, body, trunk)
    if anatomy.lung_top_mm is not None:
        cavity = _slice_fill(bone) & ~bone & (z3 > anatomy.lung_top_mm)
        area = cavity.sum(axis=(1, 2)) * geometry.spacing[1] * geometry.spacing[2]
        cavity[area < _SKULL_CAVITY_MM2] = False
        anatomy.masks["intracranial"] = cavity
        below = z3 < anatomy.lung_base_mm
    else:
        below = np.ones_like(body)
    anatomy.masks["urine"] = body & below & (hu >= URINE_HU[0]) & (hu <= URINE_HU[1])
    return anatomy
