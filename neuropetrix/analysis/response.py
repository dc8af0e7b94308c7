"""Treatment response between a prior and a current analysis: PERCIST 1.0, ΔTMTV/ΔTLG, Deauville.

Pure: two `AnalysisResult`s (and the current study's SUV volume and geometry) in, a `Response` out.

PERCIST 1.0 (Wahl et al., J Nucl Med 2009; O et al., "Practical PERCIST", Radiology 2016) works in SUL,
SUV normalised by lean body mass: each study's SUVs are converted with its own weight, height and sex
(`analysis.suv.normaliser`), Janmahasatian unless a study was analysed in an LBM type already. The target
is the hottest lesion by SULpeak at each time point (it need not be the same lesion). The comparability
rules are checked and reported; a pair that breaks one gets no category (the numbers are still given):
liver SULmean of both studies found and stable (change within 20 % and within 0.3 SUL), the same SUV type
and radionuclide, uptake times within 15 minutes. Measurability at baseline: SULpeak ≥ 1.5 × liver SULmean
+ 2 SD (without a liver: 2.0 × blood-pool SULmean + 2 SD). Categories: CMR (no new lesion, no lesion above the liver's
SULmean, and no prior site distinguishable from it, below), PMD (a new measurable lesion, or a
rise of ≥ 30 % and ≥ 0.8 SUL), PMR (a fall of ≥ 30 % and ≥ 0.8 SUL), SMD otherwise.

Lesions are matched by position after a rigid translation between the studies: the difference of the
bone centroids on the CTs when both have one, else of the body-outline centroids. This assumes the two
scans cover about the same part of the body; a rotation or a different coverage is not modelled, and the
matching tolerance (`MATCH_DISTANCE_MM`) absorbs what the translation leaves. Where a prior lesion is no
longer segmented, its site is still measured: the SULpeak centred within its radius + 5 mm of the aligned
position, and not within two voxels of the follow-up's physiological uptake (a node beside the bladder),
so a lesion that fell below the segmentation threshold is not taken for a complete response. A site
counts against CMR when it is distinguishable from the liver background: above liver SULmean + 2 SD.

The Deauville 5-point score is given as its quantitative reading (qPET-like, Hasenclever et al. 2014):
the hottest lesion's SUVpeak against the mediastinal blood pool and liver SUVmean: 1 no lesion, 2 ≤ blood
pool, 3 ≤ liver, 4 ≤ 2 × liver, 5 above, or any new lesion. The visual score is the physician's.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np

from neuropetrix.analysis.errors import AnalysisError
from neuropetrix.analysis.results import CATEGORIES, AnalysisResult, Lesion, SuvInputs
from neuropetrix.analysis.suv import normaliser
from neuropetrix.analysis.suvpeak import suv_peaks
from neuropetrix.analysis.volumes import Volume

CRITERIA = "PERCIST 1.0"
CHANGE_FRACTION = 0.30          # PMR/PMD: at least 30 % …
CHANGE_SUL = 0.8                # … and at least 0.8 SUL
LIVER_STABLE_FRACTION = 0.20    # liver SULmean between the studies: within 20 % …
LIVER_STABLE_SUL = 0.3          # … and within 0.3 SUL
UPTAKE_TOLERANCE_MIN = 15.0     # uptake times within 15 minutes of each other
MATCH_DISTANCE_MM = 20.0        # a lesion is the same one when its aligned centroids are this close
SITE_MARGIN_MM = 5.0            # a prior lesion's site: its radius plus this (the alignment's error)
DEFAULT_SUL = "lbm_janmahasatian"
_LBM_TYPES = ("lbm_james", "lbm_janmahasatian")


@dataclass(frozen=True)
class Check:
    """One PERCIST comparability or measurability condition; `passed` None when it could not be checked."""

    name: str
    passed: bool | None
    detail: str


@dataclass(frozen=True)
class Alignment:
    """The translation taking prior patient coordinates onto the current study's (mm, LPS)."""

    translation_mm: tuple[float, float, float]
    method: str


@dataclass(frozen=True)
class LesionChange:
    """One lesion followed between the studies; labels are `Lesion.label` in each analysis."""

    status: str                              # "matched", "new", "gone"
    prior_label: int | None
    current_label: int | None
    distance_mm: float | None                # between the aligned centroids
    sul_peak_before: float | None
    sul_peak_after: float | None             # for a gone lesion: measured at its aligned site
    percent_change: float | None
    volume_ml_before: float | None
    volume_ml_after: float | None


@dataclass(frozen=True)
class Deauville:
    score: int | None
    lesion: int | None                       # current Lesion.label of the hottest lesion
    suv_peak: float | None
    blood_pool_suv_mean: float | None
    liver_suv_mean: float | None
    note: str


@dataclass(frozen=True)
class Response:
    """PERCIST response of the current study to a prior one, with every number the category came from."""

    criteria: str
    category: str | None                     # CMR, PMR, SMD, PMD; None when not assessable
    not_assessable: tuple[str, ...]          # why there is no category
    prior_study_uid: str
    current_study_uid: str
    sul_type: str
    sul_peak_before: float | None            # hottest prior lesion
    sul_peak_after: float | None             # hottest current lesion or prior site
    percent_change: float | None
    absolute_change: float | None
    target_before: int | None                # prior Lesion.label
    target_after: int | None                 # current Lesion.label (None: a prior site, or nothing)
    measurability_threshold: float | None    # SUL, from the prior study
    liver_sul_before: float | None
    liver_sul_after: float | None
    checks: tuple[Check, ...]
    alignment: Alignment
    lesions: tuple[LesionChange, ...]
    tmtv_ml_before: float
    tmtv_ml_after: float
    tlg_before: float
    tlg_after: float
    deauville: Deauville

    @property
    def comparable(self) -> bool:
        return all(c.passed is not False for c in self.checks if c.name != "baseline_measurable")

    @property
    def new_lesions(self) -> tuple[LesionChange, ...]:
        return tuple(c for c in self.lesions if c.status == "new")

    @property
    def matched_lesions(self) -> tuple[LesionChange, ...]:
        return tuple(c for c in self.lesions if c.status == "matched")

    def to_json(self) -> dict[str, Any]:
        """`analysis.json` → `response`."""
        doc = asdict(self)
        doc.pop("lesions")
        doc.update(
            category_meaning=CATEGORIES.get(self.category or ""), comparable=self.comparable,
            new_lesions=[asdict(c) for c in self.new_lesions],
            matched_lesions=[asdict(c) for c in self.matched_lesions],
            gone_lesions=[asdict(c) for c in self.lesions if c.status == "gone"],
            delta_tmtv_ml=self.tmtv_ml_after - self.tmtv_ml_before,
            delta_tmtv_percent=_percent(self.tmtv_ml_before, self.tmtv_ml_after),
            delta_tlg=self.tlg_after - self.tlg_before,
            delta_tlg_percent=_percent(self.tlg_before, self.tlg_after))
        return doc


def _percent(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before == 0:
        return None
    return 100.0 * (after - before) / before


def sul_factor(inputs: SuvInputs, sul_type: str) -> float:
    """SUL per unit of the study's SUV: the ratio of the two normalisers of this patient's measures."""
    if inputs.suv_type == sul_type:
        return 1.0
    args = (inputs.patient_weight_kg, inputs.patient_height_m, inputs.patient_sex)
    return normaliser(sul_type, *args) / normaliser(inputs.suv_type, *args)


def align(current: AnalysisResult, prior: AnalysisResult) -> Alignment:
    """Rigid translation from the bone (CT) centroids when both studies have one, else the body outlines."""
    for name, method in (("bone", "translation of the CT bone centroids"),
                         ("body", "translation of the body-outline centroids")):
        if name in current.landmarks and name in prior.landmarks:
            shift = np.subtract(current.landmarks[name], prior.landmarks[name])
            return Alignment((float(shift[0]), float(shift[1]), float(shift[2])), method)
    return Alignment((0.0, 0.0, 0.0), "none: no common landmark (the frames of reference are taken as equal)")


def _radius_mm(lesion: Lesion) -> float:
    return (3.0 * lesion.volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)


def match_lesions(current: list[Lesion], prior: list[Lesion], alignment: Alignment,
                  max_distance_mm: float = MATCH_DISTANCE_MM) -> list[tuple[int, int, float]]:
    """Pairs (prior index, current index, distance mm): the assignment of least total distance between
    aligned centroids, each pair closer than `max_distance_mm`."""
    from scipy.optimize import linear_sum_assignment  # here: scipy.optimize costs every analysis ~1 s to import

    if not current or not prior:
        return []
    before = np.array([les.centroid_mm for les in prior]) + np.array(alignment.translation_mm)
    after = np.array([les.centroid_mm for les in current])
    distance = np.linalg.norm(before[:, None, :] - after[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(np.where(distance <= max_distance_mm, distance, 1e9))
    return [(int(r), int(c), float(distance[r, c])) for r, c in zip(rows, cols) if distance[r, c] <= max_distance_mm]


def site_peaks(suv: np.ndarray, geometry: Volume, centers_mm: np.ndarray, radii_mm: np.ndarray,
               excluded: np.ndarray | None = None) -> np.ndarray:
    """SUVpeak centred within each ball (centre, radius in mm) of the volume and outside `excluded`
    dilated by two voxels; 0 for a ball with no such voxel."""
    sites = np.zeros(suv.shape, dtype=np.int32)
    steps = np.asarray(geometry.spacing)
    for i, (center, radius) in enumerate(zip(centers_mm, radii_mm)):
        k = geometry.mm_to_index(np.asarray(center))
        half = np.ceil(radius / steps).astype(int)
        low = np.maximum(np.floor(k).astype(int) - half, 0)
        high = np.minimum(np.ceil(k).astype(int) + half + 1, suv.shape)
        if np.any(high <= low):
            continue
        grid = np.meshgrid(*[np.arange(a, b) for a, b in zip(low, high)], indexing="ij")
        inside = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, k, steps)) <= radius ** 2
        box = tuple(slice(a, b) for a, b in zip(low, high))
        sites[box][inside] = i + 1
    if excluded is not None and excluded.any():
        from scipy import ndimage  # here: the engine and the report writers read CATEGORIES without scipy
        sites[ndimage.binary_dilation(excluded, iterations=2)] = 0
    return suv_peaks(suv, sites, len(centers_mm), geometry.spacing)


def _uptake_minutes(inputs: SuvInputs) -> float | None:
    if not inputs.injection_datetime or not inputs.reference_datetime:
        return None
    delta = datetime.fromisoformat(inputs.reference_datetime) - datetime.fromisoformat(inputs.injection_datetime)
    return delta.total_seconds() / 60.0


def _checks(current: AnalysisResult, prior: AnalysisResult, liver_after: float | None,
            liver_before: float | None) -> list[Check]:
    checks = []
    if liver_before is None or liver_after is None:
        missing = [n for n, v in (("prior", liver_before), ("current", liver_after)) if v is None]
        checks.append(Check("liver_stable", False, f"no liver reference in the {' and '.join(missing)} study"))
    else:
        change = liver_after - liver_before
        stable = abs(change) <= LIVER_STABLE_SUL and abs(change) <= LIVER_STABLE_FRACTION * liver_before
        checks.append(Check("liver_stable", stable,
                            f"liver SULmean {liver_before:.2f} → {liver_after:.2f} ({change:+.2f} SUL, "
                            f"{100.0 * change / liver_before:+.1f} %); PERCIST allows 20 % and 0.3 SUL"))
    same = current.suv.suv_type == prior.suv.suv_type
    checks.append(Check("suv_type", same, f"{prior.suv.suv_type} → {current.suv.suv_type} (TMTV and TLG "
                                          "are compared in the studies' SUV type)"))
    nuclides = prior.suv.radionuclide, current.suv.radionuclide
    checks.append(Check("radionuclide", None if None in nuclides else nuclides[0] == nuclides[1],
                        f"{nuclides[0]} → {nuclides[1]}"))
    times = _uptake_minutes(prior.suv), _uptake_minutes(current.suv)
    if None in times:
        checks.append(Check("uptake_time", None, "injection or reference time missing"))
    else:
        checks.append(Check("uptake_time", abs(times[1] - times[0]) <= UPTAKE_TOLERANCE_MIN,  # type: ignore[operator]
                            f"{times[0]:.0f} → {times[1]:.0f} min after injection; PERCIST allows 15 min"))
    return checks


def _reference_sul(result: AnalysisResult, name: str, factor: float) -> tuple[float, float] | None:
    ref = result.references.get(name)
    if name == "liver" and result.liver is not None:
        return result.liver.suv_mean * factor, result.liver.suv_sd * factor
    if ref is None or not ref.found or ref.suv_mean is None:
        return None
    return ref.suv_mean * factor, (ref.suv_sd or 0.0) * factor


def _threshold(prior: AnalysisResult, factor: float) -> tuple[float | None, str]:
    liver = _reference_sul(prior, "liver", factor)
    if liver is not None:
        return 1.5 * liver[0] + 2.0 * liver[1], "1.5 × liver SULmean + 2 SD"
    blood = _reference_sul(prior, "blood_pool", factor)
    if blood is not None:
        return 2.0 * blood[0] + 2.0 * blood[1], "2.0 × blood-pool SULmean + 2 SD (no liver reference)"
    return None, "no liver or blood-pool reference in the prior study"


def deauville(result: AnalysisResult, new_lesion: bool) -> Deauville:
    """The quantitative Deauville score of the hottest lesion (SUVpeak) against the references' SUVmean."""
    liver = _reference_sul(result, "liver", 1.0)
    blood = _reference_sul(result, "blood_pool", 1.0)
    liver_mean, blood_mean = liver and liver[0], blood and blood[0]
    hottest = max(result.lesions, key=lambda les: les.suv_peak, default=None)
    peak = None if hottest is None else hottest.suv_peak
    label = None if hottest is None else hottest.label

    def score(value: int | None, note: str) -> Deauville:
        return Deauville(value, label, peak, blood_mean, liver_mean, note)
    if new_lesion:
        return score(5, "new lesion since the prior study")
    if peak is None:
        return score(1, "no lesion")
    if liver_mean is None:
        return score(None, "no liver reference")
    if peak > 2.0 * liver_mean:
        return score(5, "SUVpeak above 2 × liver SUVmean")
    if peak > liver_mean:
        return score(4, "SUVpeak above liver SUVmean, at most 2 ×")
    if blood_mean is None:
        return score(None, "SUVpeak at most liver SUVmean; blood pool not found (2 or 3)")
    return score(3 if peak > blood_mean else 2, "SUVpeak above blood pool, at most liver" if peak > blood_mean
                 else "SUVpeak at most blood-pool SUVmean")


def _category(before: float, after: float, lesion_after: float, site_after: float,
              after_liver: tuple[float, float] | None, new: bool) -> str:
    if new:
        return "PMD"
    if after_liver is not None and lesion_after <= after_liver[0] and site_after <= after_liver[0] + 2 * after_liver[1]:
        return "CMR"
    change = after - before
    if change <= -CHANGE_SUL and change <= -CHANGE_FRACTION * before:
        return "PMR"
    if change >= CHANGE_SUL and change >= CHANGE_FRACTION * before:
        return "PMD"
    return "SMD"


def assess(current: AnalysisResult, prior: AnalysisResult, current_geometry: Volume,
           sul_type: str | None = None) -> Response:
    """The response of `current` to `prior`; `current_geometry` is the current PET's geometry (its SUV
    volume is `current.suv_volume`). Raises `AnalysisError` when SUL cannot be computed (sex, height)."""
    if current.suv_volume is None:
        raise AnalysisError("the current analysis kept no SUV volume to measure the prior lesions' sites on")
    sul = sul_type or (current.suv.suv_type if current.suv.suv_type in _LBM_TYPES else DEFAULT_SUL)
    f_after, f_before = sul_factor(current.suv, sul), sul_factor(prior.suv, sul)
    liver_after = _reference_sul(current, "liver", f_after)
    liver_before = _reference_sul(prior, "liver", f_before)
    checks = _checks(current, prior, liver_after and liver_after[0], liver_before and liver_before[0])
    threshold, threshold_rule = _threshold(prior, f_before)
    alignment = align(current, prior)

    pairs = match_lesions(current.lesions, prior.lesions, alignment)
    matched_prior = {p for p, _, _ in pairs}
    matched_current = {c for _, c, _ in pairs}
    shift = np.array(alignment.translation_mm)
    centres = np.array([np.add(les.centroid_mm, shift) for les in prior.lesions]).reshape(-1, 3)
    radii = np.array([_radius_mm(les) + SITE_MARGIN_MM for les in prior.lesions])
    physiological = None if current.physiological_map is None else current.physiological_map > 0
    at_sites = site_peaks(current.suv_volume, current_geometry, centres, radii, physiological) * f_after

    changes = []
    for p, c, distance in pairs:
        before_les, after_les = prior.lesions[p], current.lesions[c]
        b, a = before_les.suv_peak * f_before, after_les.suv_peak * f_after
        changes.append(LesionChange("matched", before_les.label, after_les.label, distance, b, a, _percent(b, a),
                                    before_les.volume_ml, after_les.volume_ml))
    for p, les in enumerate(prior.lesions):
        if p not in matched_prior:
            b, a = les.suv_peak * f_before, float(at_sites[p])
            changes.append(LesionChange("gone", les.label, None, None, b, a, _percent(b, a), les.volume_ml, None))
    current_threshold = None if liver_after is None else 1.5 * liver_after[0] + 2.0 * liver_after[1]
    for c, les in enumerate(current.lesions):
        a = les.suv_peak * f_after
        if c not in matched_current and current_threshold is not None and a >= current_threshold:
            changes.append(LesionChange("new", None, les.label, None, None, a, None, None, les.volume_ml))
    new = any(ch.status == "new" for ch in changes)

    target_before = max(prior.lesions, key=lambda les: les.suv_peak, default=None)
    before = None if target_before is None else target_before.suv_peak * f_before
    hottest_after = max(current.lesions, key=lambda les: les.suv_peak, default=None)
    after_lesion = 0.0 if hottest_after is None else hottest_after.suv_peak * f_after
    after_site = float(at_sites.max(initial=0.0))
    after = max(after_lesion, after_site)
    target_after = hottest_after.label if hottest_after is not None and after_lesion >= after_site else None

    if threshold is None:
        checks.append(Check("baseline_measurable", None, threshold_rule))
    else:
        measurable = before is not None and before >= threshold
        checks.append(Check("baseline_measurable", measurable,
                            f"prior SULpeak {'none' if before is None else f'{before:.2f}'} vs {threshold:.2f} "
                            f"({threshold_rule})"))
    reasons = [f"{c.name}: {c.detail}" for c in checks if c.passed is False and c.name != "baseline_measurable"]
    category = None
    if not reasons:
        if before is None or threshold is None or before < threshold:
            if new:
                category = "PMD"
            else:
                reasons.append("no measurable lesion in the prior study (" + threshold_rule + ")")
        else:
            category = _category(before, after, after_lesion, after_site, liver_after, new)
    return Response(
        criteria=CRITERIA, category=category, not_assessable=tuple(reasons),
        prior_study_uid=prior.study_instance_uid, current_study_uid=current.study_instance_uid, sul_type=sul,
        sul_peak_before=before, sul_peak_after=after,
        percent_change=_percent(before, after), absolute_change=None if before is None else after - before,
        target_before=None if target_before is None else target_before.label, target_after=target_after,
        measurability_threshold=threshold, liver_sul_before=liver_before and liver_before[0],
        liver_sul_after=liver_after and liver_after[0], checks=tuple(checks), alignment=alignment,
        lesions=tuple(changes), tmtv_ml_before=prior.tmtv_ml, tmtv_ml_after=current.tmtv_ml,
        tlg_before=prior.tlg_total, tlg_after=current.tlg_total, deauville=deauville(current, new))
