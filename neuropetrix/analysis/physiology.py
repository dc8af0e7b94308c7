"""Physiological uptake: hot regions that are normal for the tracer are reported apart from lesions.

Each hot component the segmentation found is tested against the organs of the tracer's profile
(`analysis.tracers`). The evidence, in order of preference:

1. a site's organ label map (TotalSegmentator, MOOSE: `analysis.organlabels`): a component is organ O
   when at least half of its voxels lie in O's mask (dilated by one voxel for partial volume);
2. the CT on the PET's frame of reference (`analysis.anatomy`): brain = at least half inside the
   skull; urinary bladder / ureter = at least half of urine density, below the lungs (bladder when in
   the lowest quarter of the body); kidney = a kidney-sized region (40–600 ml) beside the spine (3–13 cm
   from its centre in x, within 6 cm in y) below the lungs; myocardium = a heart-sized region
   (40–800 ml) in the chest, between the two lungs and in front of the spine;
3. the PET alone: brain = a region of ≥ 300 ml reaching the top 4 cm of the body; bladder = ≥ 20 ml
   in the lowest quarter of the body within 5 cm of its midline; kidney = 40–600 ml, 3–13 cm beside
   the midline in the posterior half of the body, in its lower half; myocardium = 40–800 ml, left of
   the midline in the anterior half, wrapped around a colder cavity (filling it adds ≥ 30 %).

Size is what keeps a lesion beside an organ a lesion: a node a centimetre from the bladder is soft
tissue on CT, not urine, and is too small for a kidney or a heart. Voxels of a physiological component
more than two voxels from the organ's own mask (a lesion grown into an organ's edge) are split off and
stay lesions.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from neuropetrix.analysis.anatomy import Anatomy
from neuropetrix.analysis.results import PhysiologicalRegion
from neuropetrix.analysis.segmentation import finalize
from neuropetrix.analysis.tracers import TracerProfile
from neuropetrix.analysis.volumes import Volume

_KIDNEY_ML, _HEART_ML = (40.0, 600.0), (40.0, 800.0)
_HALF = 0.5
_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


@dataclass
class Component:
    """One hot region: its voxels inside its bounding box and where it is."""

    mask: np.ndarray
    box: tuple[slice, ...]
    volume_ml: float
    centre_mm: np.ndarray
    top_mm: float

    def _grown(self, shape: tuple[int, ...], by: int) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """The box grown by `by` voxels (clipped), and where the original box lies inside it."""
        grown = tuple(slice(max(s.start - by, 0), min(s.stop + by, n)) for s, n in zip(self.box, shape))
        inner = tuple(slice(s.start - g.start, s.stop - g.start) for s, g in zip(self.box, grown))
        return grown, inner

    def near_fraction(self, mask: np.ndarray) -> float:
        """The fraction of the region's voxels within one voxel of `mask` (its partial-volume halo)."""
        grown, inner = self._grown(mask.shape, 1)
        return float(ndimage.binary_dilation(mask[grown], _STRUCTURE)[inner][self.mask].mean())

    def beyond(self, mask: np.ndarray, voxels: int) -> np.ndarray:
        """The region's voxels (in its box) farther than `voxels` from `mask`."""
        grown, inner = self._grown(mask.shape, voxels)
        near = ndimage.binary_dilation(mask[grown], _STRUCTURE, iterations=voxels)[inner]
        return self.mask & ~near

    def cavity_gain(self) -> float:
        """How much filling the holes adds to the region (a myocardium wraps the ventricle)."""
        filled = ndimage.binary_fill_holes(np.pad(self.mask, 1))
        closed = ndimage.binary_fill_holes(ndimage.binary_closing(np.pad(self.mask, 1), _STRUCTURE, iterations=2))
        return float(max(filled.sum(), closed.sum())) / max(int(self.mask.sum()), 1) - 1.0


@dataclass(frozen=True)
class Finding:
    organ: str
    evidence: str
    organ_mask: np.ndarray | None = None      # the organ's own region, when the rule used one


Rule = Callable[[Component], "Finding | None"]


def _inside(organ: str, mask: np.ndarray, evidence: str) -> Rule:
    return lambda c: Finding(organ, evidence, mask) if c.near_fraction(mask) >= _HALF else None


def label_map_rules(organ_masks: dict[str, np.ndarray], source: str) -> dict[str, Rule]:
    """One rule per organ of a label map: at least half of the region inside the organ's mask."""
    return {organ: _inside(organ, mask, f"inside '{organ}' of the organ label map ({source})")
            for organ, mask in organ_masks.items() if mask.any()}


def _between_lungs(anatomy: Anatomy, c: Component) -> bool:
    if anatomy.lung_x_mm is None:
        return False
    k = int(np.argmin(np.abs(anatomy.z_mm - c.centre_mm[2])))
    right, left = anatomy.lung_x_mm[k]
    return bool(np.isfinite(right) and np.isfinite(left) and right < c.centre_mm[0] < left)


def ct_rules(anatomy: Anatomy) -> dict[str, Rule]:
    """The CT-based rules this study's anatomy allows (an organ whose landmark is missing has none)."""
    rules: dict[str, Rule] = {}
    cavity = anatomy.masks.get("intracranial")
    if cavity is not None and cavity.any():
        rules["brain"] = _inside("brain", cavity, "inside the skull on CT (bone above 250 HU around it)")
    urine = anatomy.masks.get("urine")
    if urine is not None and urine.any():
        low = anatomy.body_bottom_mm + 0.25 * (anatomy.body_top_mm - anatomy.body_bottom_mm)

        def urinary(c: Component) -> Finding | None:
            if c.near_fraction(urine) < _HALF:
                return None
            organ = "urinary_bladder" if c.centre_mm[2] <= low else "ureter"
            return Finding(organ, "urine density on CT (−15…20 HU), below the lungs", urine)
        rules["urinary_bladder"] = rules["ureter"] = urinary
    spine, lung_base, lung_top = anatomy.spine_xy_mm, anatomy.lung_base_mm, anatomy.lung_top_mm
    if spine is not None and lung_base is not None and lung_top is not None:
        def kidney(c: Component) -> Finding | None:
            dx, dy = abs(c.centre_mm[0] - spine[0]), abs(c.centre_mm[1] - spine[1])
            if (_KIDNEY_ML[0] <= c.volume_ml <= _KIDNEY_ML[1] and 30.0 <= dx <= 130.0 and dy <= 60.0
                    and c.centre_mm[2] < lung_base):
                return Finding("kidney", f"beside the spine on CT ({dx:.0f} mm lateral), kidney-sized, "
                                         "below the lungs")
            return None

        def heart(c: Component) -> Finding | None:
            if (_HEART_ML[0] <= c.volume_ml <= _HEART_ML[1] and lung_base - 30.0 <= c.centre_mm[2] <= lung_top
                    and c.centre_mm[1] < spine[1] - 20.0 and _between_lungs(anatomy, c)):
                return Finding("myocardium", "in the mediastinum on CT (between the lungs, in front of the "
                                             "spine), heart-sized")
            return None
        rules["kidney"], rules["myocardium"] = kidney, heart
    return rules


def pet_rules(anatomy: Anatomy) -> dict[str, Rule]:
    """Rules from the PET's own body outline, for a study without a CT."""
    cx, cy = anatomy.body_center_xy_mm
    bottom, top = anatomy.body_bottom_mm, anatomy.body_top_mm
    height = top - bottom

    def brain(c: Component) -> Finding | None:
        if c.volume_ml >= 300.0 and c.top_mm >= top - 40.0:
            return Finding("brain", "PET only: a large region (≥ 300 ml) at the top of the body")
        return None

    def bladder(c: Component) -> Finding | None:
        if c.volume_ml >= 20.0 and c.centre_mm[2] <= bottom + 0.25 * height and abs(c.centre_mm[0] - cx) <= 50.0:
            return Finding("urinary_bladder", "PET only: ≥ 20 ml in the lowest quarter of the body, midline")
        return None

    def kidney(c: Component) -> Finding | None:
        dx = abs(c.centre_mm[0] - cx)
        if (_KIDNEY_ML[0] <= c.volume_ml <= _KIDNEY_ML[1] and 30.0 <= dx <= 130.0 and c.centre_mm[1] > cy
                and c.centre_mm[2] <= bottom + 0.5 * height):
            return Finding("kidney", f"PET only: kidney-sized, {dx:.0f} mm beside the midline, posterior")
        return None

    def heart(c: Component) -> Finding | None:
        if (_HEART_ML[0] <= c.volume_ml <= _HEART_ML[1] and c.centre_mm[0] > cx and c.centre_mm[1] < cy
                and c.cavity_gain() >= 0.3):
            return Finding("myocardium", "PET only: heart-sized shell around a colder cavity, left anterior")
        return None
    return {"brain": brain, "urinary_bladder": bladder, "kidney": kidney, "myocardium": heart}


def _components(labels: np.ndarray, n: int, geometry: Volume) -> list[Component]:
    out = []
    for i, box in enumerate(ndimage.find_objects(labels, max_label=n), start=1):
        if box is None:
            continue
        mask = labels[box] == i
        index = np.argwhere(mask) + np.array([s.start for s in box])
        points = geometry.index_to_mm(index)
        out.append(Component(mask, box, float(mask.sum()) * geometry.voxel_volume_ml,
                             points.mean(axis=0), float(points[:, 2].max())))
    return out


def separate(labels: np.ndarray, suv: np.ndarray, geometry: Volume, profile: TracerProfile,
             rules: dict[str, Rule], min_voxels: int) -> tuple[np.ndarray, list[PhysiologicalRegion], np.ndarray]:
    """Split the lesion candidates into lesions and physiological regions of the profile's organs.

    Returns the lesion label map (renumbered 1…N by SUVmax), the regions, and a map of them (region i is i).
    """
    n = int(labels.max(initial=0))
    wanted = [rules[o] for o in dict.fromkeys(profile.organs) if o in rules]
    kept = labels.copy()
    physiological = np.zeros(labels.shape, dtype=np.int32)
    regions: list[PhysiologicalRegion] = []
    top = n
    for i, component in enumerate(_components(labels, n, geometry), start=1):
        finding = next((f for f in (rule(component) for rule in wanted) if f is not None), None)
        if finding is None:
            continue
        box = component.box
        local = component.mask.copy()
        kept[box][local] = 0
        if finding.organ_mask is not None:   # what lies beyond the organ's edge stays a candidate lesion
            beyond = component.beyond(finding.organ_mask, 2)
            local &= ~beyond
            pieces, m = ndimage.label(beyond, structure=_STRUCTURE)
            kept[box][beyond] = pieces[beyond] + top
            top += m
        region = np.zeros(labels.shape, dtype=bool)
        region[box] = local
        physiological[region] = len(regions) + 1
        values = suv[region]
        regions.append(PhysiologicalRegion(
            organ=finding.organ, suv_max=float(values.max()), suv_mean=float(values.mean()),
            volume_ml=float(region.sum()) * geometry.voxel_volume_ml,
            centroid_mm=tuple(float(v) for v in geometry.index_to_mm(np.argwhere(region).mean(axis=0))),  # type: ignore[arg-type]
            evidence=finding.evidence))
    if not regions:
        return labels, regions, physiological
    return finalize(kept, top, suv, min_voxels), regions, physiological
