"""One PET/CT analysis from volumes and settings to an `AnalysisResult`: SUV, liver, lesions, measures.

No files, network or database here: `engine.offline` (or the worker) reads the series and writes the
results. Each stage's wall time is kept in `AnalysisResult.timings_s`.
"""
from __future__ import annotations

import time
from dataclasses import replace
from importlib import metadata

import numpy as np

from neuropetrix.analysis import anatomy as anatomy_of
from neuropetrix.analysis import lesion_metrics, physiology, segmentation, suvpeak
from neuropetrix.analysis.anatomy import Anatomy
from neuropetrix.analysis.errors import AnalysisError
from neuropetrix.analysis.liver import liver_reference, liver_search
from neuropetrix.analysis.references import blood_pool, liver_region
from neuropetrix.analysis.results import (
    AnalysisResult,
    LiverReference,
    PhysiologicalRegion,
    Physiology,
    Reference,
    Segmentation,
)
from neuropetrix.analysis.suv import suv_factors
from neuropetrix.analysis.tracers import profile_for
from neuropetrix.analysis.volumes import Volume, resample_to
from neuropetrix.config.settings import AnalysisSettings

ALGORITHM_VERSION = "1.0"
_ALGORITHM_NAMES = {"fixed": "NeuroPETRIX SUV threshold", "percent_max": "NeuroPETRIX % of SUVmax",
                    "percist": "NeuroPETRIX PERCIST liver threshold"}


def software_version() -> str:
    try:
        return metadata.version("neuropetrix")
    except metadata.PackageNotFoundError:
        return "unknown"


def to_suv(pet: Volume, factors: np.ndarray) -> np.ndarray:
    """SUV volume (float32): stored values × the slice's factor."""
    return pet.data * factors.astype(np.float32)[:, None, None]


def _liver(suv: np.ndarray, pet: Volume, settings: AnalysisSettings, allowed: np.ndarray | None,
           allowed_by: str) -> tuple[LiverReference | None, str | None]:
    """The liver reference; its failure stops only a PERCIST analysis (else it is reported as absent).

    When the anatomy's liver region holds no candidate (an atypical CT), the PET-only placement is
    tried (from the same search, not a second one) and the method says so.
    """
    try:
        search = None if settings.liver_center_mm is not None else liver_search(suv, pet)
        try:
            return liver_reference(suv, pet, settings.liver_center_mm, allowed, allowed_by, search), None
        except AnalysisError:
            if allowed is None or settings.liver_center_mm is not None:
                raise
            found = liver_reference(suv, pet, search=search)
            return replace(found, method=f"{found.method} (no candidate within {allowed_by})"), None
    except AnalysisError as exc:
        if settings.method == "percist":
            raise
        return None, f"no liver reference: {exc}"


def _liver_as_reference(liver: LiverReference | None, note: str | None) -> Reference:
    if liver is None:
        return Reference("liver", False, note=note)
    return Reference("liver", True, liver.suv_mean, liver.suv_sd, liver.center_mm,
                     f"sphere of radius {liver.radius_mm:g} mm", None, liver.method)


def _anatomy(suv: np.ndarray, pet: Volume, ct: Volume | None) -> Anatomy:
    """Organs from the CT where its pixels were read (resampled onto the PET grid), else from the PET."""
    if ct is not None and ct.data.size:
        return anatomy_of.from_ct(resample_to(ct, pet, fill=-1000.0), pet)
    return anatomy_of.from_pet(suv, pet)


def _landmarks(anatomy: Anatomy, pet: Volume) -> dict[str, tuple[float, float, float]]:
    """Centroids of the body outline and (from a CT) the bone, the points a follow-up is aligned on."""
    out = {}
    for name, mask in (("body", anatomy.body), ("bone", anatomy.masks.get("bone"))):
        if mask is not None and mask.any():
            centre = pet.index_to_mm(_centroid(mask))
            out[name] = (float(centre[0]), float(centre[1]), float(centre[2]))
    return out


def _centroid(mask: np.ndarray) -> np.ndarray:
    """The mean (k, r, c) index of a mask's voxels, from its counts along each axis: exact integer
    sums, so the value the mean of `np.nonzero`'s indices gives, without listing every voxel."""
    counts = [np.count_nonzero(mask, axis=tuple(a for a in range(3) if a != axis)) for axis in range(3)]
    total = int(counts[0].sum())
    return np.array([int(np.dot(c.astype(np.int64), np.arange(c.size, dtype=np.int64))) / total for c in counts])


def _physiology(labels: np.ndarray, suv: np.ndarray, pet: Volume, anatomy: Anatomy,
                organ_masks: dict[str, np.ndarray], organ_source: str | None, settings: AnalysisSettings,
                min_voxels: int) -> tuple[np.ndarray, list[PhysiologicalRegion], np.ndarray | None, Physiology]:
    """Lesions without the tracer's physiological uptake, with the regions told apart and how."""
    profile = profile_for(pet.header)
    if not settings.exclude_physiological:
        return labels, [], None, Physiology(None, "none", (), (
            "physiological uptake exclusion is off (analysis.exclude_physiological)",))
    if settings.method == "model":
        return labels, [], None, Physiology(profile and profile.name, "none", (), (
            ("method model: the site model's output is taken as the lesions (it was trained to leave normal "
             "uptake out); no rule was applied on top"),))
    if profile is None:
        return labels, [], None, Physiology(None, "none", (), (
            "radiopharmaceutical not recognised: no physiological uptake was excluded",))
    notes = list(anatomy.notes)
    if organ_masks:
        rules, source = physiology.label_map_rules(organ_masks, organ_source or "site model"), \
            f"organ label map ({organ_source or 'site model'})"
    elif anatomy.source == "ct":
        rules, source = physiology.ct_rules(anatomy), "CT rules"
    else:
        rules, source = physiology.pet_rules(anatomy), "PET-only rules"
    missing = [o for o in profile.organs if o not in rules]
    if missing:
        notes.append(f"no rule for {', '.join(missing)} from this evidence ({source}); "
                     "uptake there is reported as lesions")
    lesions, regions, regions_map = physiology.separate(labels, suv, pet, profile, rules, min_voxels)
    return lesions, regions, regions_map, Physiology(profile.name, source, profile.organs, tuple(notes))


def _segment(suv: np.ndarray, pet: Volume, ct: Volume | None, liver: LiverReference | None,
             settings: AnalysisSettings, device: str) -> tuple[np.ndarray, Segmentation]:
    min_voxels = int(np.ceil(settings.min_volume_ml / pet.voxel_volume_ml - 1e-9))
    method = settings.method
    if method == "model":
        from neuropetrix.analysis.networks import load_model, predict_mask

        if ct is None:
            raise AnalysisError("analysis.method model needs the CT series of the PET's frame of reference; "
                                "none was found")
        model = load_model(settings.model, device)  # type: ignore[arg-type]
        ct_hu = resample_to(ct, pet, fill=-1000.0)
        labels, n = segmentation.label_components(predict_mask(suv, ct_hu, model, device))
        return segmentation.finalize(labels, n, suv, min_voxels), Segmentation(
            method, None, settings.min_volume_ml, model.name, model.version, str(model.path))
    if method == "percent_max":
        labels = segmentation.percent_of_max(suv, settings.threshold, settings.seed_threshold, min_voxels)
        level = settings.threshold
    else:
        level = settings.threshold if method == "fixed" else liver.percist_threshold  # type: ignore[union-attr]
        labels = segmentation.fixed_threshold(suv, level, min_voxels)
    return labels, Segmentation(method, float(level), settings.min_volume_ml, _ALGORITHM_NAMES[method],
                                ALGORITHM_VERSION, seed_threshold=settings.seed_threshold
                                if method == "percent_max" else None)


def analyze_volumes(pet: Volume, ct: Volume | None, settings: AnalysisSettings, device: str = "cpu",
                    timings: dict[str, float] | None = None, organ_masks: dict[str, np.ndarray] | None = None,
                    organ_source: str | None = None) -> AnalysisResult:
    """Analyse a PET volume (and the CT on its frame of reference, when its pixels were read).

    `device` is "cpu" or a torch device such as "cuda" (see `devices`); `timings` carries stages
    timed by the caller. `organ_masks` (canonical organ → mask on the PET grid, from
    `organlabels.read_organ_masks`) replace the CT and PET rules; `organ_source` names the model.
    """
    timings = dict(timings or {})
    t0 = time.perf_counter()
    inputs, factors = suv_factors(pet, settings.suv_type)
    suv = to_suv(pet, factors)
    timings["suv"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    organ_masks = organ_masks or {}
    anatomy = _anatomy(suv, pet, ct)
    timings["anatomy"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    allowed, allowed_by = liver_region(anatomy, pet, organ_masks)
    liver, liver_note = _liver(suv, pet, settings, allowed, allowed_by)
    if liver_note:
        inputs = replace(inputs, notes=inputs.notes + (liver_note,))
    references = {"liver": _liver_as_reference(liver, liver_note),
                  "blood_pool": blood_pool(suv, pet, anatomy, organ_masks)}
    labels, seg = _segment(suv, pet, ct, liver, settings, device)
    min_voxels = int(np.ceil(settings.min_volume_ml / pet.voxel_volume_ml - 1e-9))
    labels, regions, regions_map, physiology_summary = _physiology(
        labels, suv, pet, anatomy, organ_masks, organ_source, settings, min_voxels)
    timings["segmentation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    n = int(labels.max(initial=0))
    peaks = suvpeak.suv_peaks(suv, labels, n, pet.spacing)
    lesions = lesion_metrics.lesion_measures(suv, labels, n, pet, peaks)
    timings["measures"] = time.perf_counter() - t0
    if settings.radiomics and lesions:
        from neuropetrix.analysis.radiomics import lesion_features

        t0 = time.perf_counter()
        features = lesion_features(suv, labels, n, pet.spacing, settings.radiomics_bin_width)
        lesions = [replace(les, radiomics=f) for les, f in zip(lesions, features)]
        timings["radiomics"] = time.perf_counter() - t0

    header = pet.header
    return AnalysisResult(
        study_instance_uid=str(header.StudyInstanceUID),
        pet_series_instance_uid=str(header.SeriesInstanceUID),
        pet_sop_instance_uids=pet.sop_instance_uids,
        ct_series_instance_uid=None if ct is None else str(ct.header.SeriesInstanceUID),
        frame_of_reference_uid=str(header.FrameOfReferenceUID) if "FrameOfReferenceUID" in header else None,
        suv=inputs, segmentation=seg, lesions=lesions, label_map=labels,
        voxel_spacing_mm=pet.spacing, liver=liver, device=device, software_version=software_version(),
        timings_s=timings, pet_frame_numbers=pet.frame_numbers, suv_volume=suv, physiological=regions,
        physiology=physiology_summary, physiological_map=regions_map, references=references,
        patient_axes=tuple(tuple(float(v) for v in axis) for axis in pet.axes), landmarks=_landmarks(anatomy, pet))
