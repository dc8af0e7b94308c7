"""The result of one PET/CT analysis: the contract between `analysis` and `reports`.

Analysis fills it from arrays and metadata; report writers (SEG, SR, HL7, FHIR, PDF) read it and never
recompute a number. Everything a physician reads is here, with the inputs that produced it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from neuropetrix.analysis.response import Response


# PERCIST 1.0 response categories (analysis/response.py assesses them; the engine and reports read them)
CATEGORIES = {"CMR": "complete metabolic response", "PMR": "partial metabolic response",
              "SMD": "stable metabolic disease", "PMD": "progressive metabolic disease"}

@dataclass(frozen=True)
class SuvInputs:
    """Every input that turned stored pixel values into SUV, so a physicist can check the arithmetic."""

    suv_type: str                      # "bw" | "lbm_james" | "lbm_janmahasatian" | "bsa" | "ibw"
    units: str                         # Units (0054,1001): BQML, CNTS, GML, CM2ML
    decay_correction: str              # DecayCorrection (0054,1102): START, ADMIN, NONE
    radionuclide: str | None           # e.g. "^18^Fluorine" or the code meaning
    half_life_s: float | None
    injected_dose_bq: float | None     # after any MBq-recorded-as-Bq repair
    injection_datetime: str | None     # ISO 8601
    reference_datetime: str | None     # ISO 8601, the decay-correction reference chosen by the QIBA rule
    reference_source: str | None       # "series", "ge_private_scan_datetime", "earliest_acquisition", …
    patient_weight_kg: float | None
    patient_height_m: float | None
    patient_sex: str | None
    scale_factor: float | None         # factor from the stored unit to SUV (g/ml), when one factor applies
    vendor: str | None
    notes: tuple[str, ...] = ()        # repairs and warnings applied (e.g. "dose recorded in MBq")
    stored_suv_type: str | None = None  # SUV Type (0054,1006) of an image stored as SUV (GML/CM2ML)


@dataclass(frozen=True)
class LiverReference:
    """PERCIST liver reference: a 3 cm sphere in the right lobe."""

    suv_mean: float
    suv_sd: float
    center_mm: tuple[float, float, float]   # patient coordinates (LPS, mm)
    radius_mm: float
    method: str                               # "auto: …" or "user"

    @property
    def percist_threshold(self) -> float:
        """1.5 × mean + 2 SD, the PERCIST measurability threshold."""
        return 1.5 * self.suv_mean + 2.0 * self.suv_sd


@dataclass(frozen=True)
class PhysiologicalRegion:
    """A hot region that is normal uptake for the tracer: not a lesion, not in counts, TMTV or TLG."""

    organ: str                                  # canonical name: brain, myocardium, urinary_bladder, kidney, …
    suv_max: float
    suv_mean: float
    volume_ml: float
    centroid_mm: tuple[float, float, float]    # patient coordinates (LPS, mm)
    evidence: str                               # what showed it is that organ


@dataclass(frozen=True)
class Physiology:
    """How physiological uptake was told apart: the tracer profile, the evidence source, what could not be done."""

    profile: str | None          # "FDG", "PSMA"; None when the radiopharmaceutical is not recognised
    source: str                  # "organ label map (…)", "CT rules", "PET-only rules", "none"
    organs: tuple[str, ...]      # the organs of the profile
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reference:
    """An anatomical reference region (PERCIST liver, mediastinal blood pool), or why it was not found."""

    name: str                                       # "liver", "blood_pool"
    found: bool
    suv_mean: float | None = None
    suv_sd: float | None = None
    center_mm: tuple[float, float, float] | None = None
    region: str | None = None                       # e.g. "sphere r 15 mm", "cylinder r 8 mm × 20 mm"
    voxel_count: int | None = None
    method: str | None = None                       # how it was placed
    note: str | None = None                         # why not found


@dataclass(frozen=True)
class Lesion:
    """One connected lesion. `label` is its value in `AnalysisResult.label_map` (1…N)."""

    label: int
    suv_max: float
    suv_mean: float
    suv_peak: float
    volume_ml: float
    tlg: float                                 # SUVmean × volume (ml), in g (for SUVbw)
    centroid_mm: tuple[float, float, float]   # patient coordinates (LPS, mm)
    max_position_mm: tuple[float, float, float]
    voxel_count: int
    radiomics: dict[str, float] | None = None


@dataclass(frozen=True)
class Segmentation:
    """How lesions were found: enough to reproduce it and to name the algorithm in SEG/SR."""

    method: str                 # "fixed" | "percent_max" | "percist" | "model"
    threshold: float | None     # SUV for fixed/percist, fraction (0.41) for percent_max
    min_volume_ml: float
    algorithm_name: str         # e.g. "NeuroPETRIX SUV threshold" or the model's name
    algorithm_version: str
    model_file: str | None = None
    seed_threshold: float | None = None   # percent_max: SUV a region must reach to be a candidate


@dataclass
class AnalysisResult:
    """One study's analysis.

    `label_map` is an int array shaped like the PET volume (slices, rows, columns) in the order of
    `pet_sop_instance_uids` (slice k of the array is the instance at index k), so a SEG frame can
    reference its source image exactly. 0 is background, lesion n is `Lesion.label == n`.
    """

    study_instance_uid: str
    pet_series_instance_uid: str
    pet_sop_instance_uids: list[str]
    ct_series_instance_uid: str | None
    frame_of_reference_uid: str | None
    suv: SuvInputs
    segmentation: Segmentation
    lesions: list[Lesion]
    label_map: np.ndarray
    voxel_spacing_mm: tuple[float, float, float]   # (slice, row, column)
    liver: LiverReference | None = None
    device: str = "cpu"
    software_version: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)
    # Enhanced (multi-frame) PET: slice k is frame pet_frame_numbers[k] (1-based) of its instance.
    pet_frame_numbers: list[int] | None = None
    # The SUV volume (float32, shaped like label_map) the measures were made on, e.g. for a MIP.
    suv_volume: np.ndarray | None = None
    # Normal uptake told apart from lesions (additive to the contract: empty when nothing was excluded).
    physiological: list[PhysiologicalRegion] = field(default_factory=list)
    physiology: Physiology | None = None
    # Region i of `physiological` is value i + 1 here (shaped like label_map), for the pictures.
    physiological_map: np.ndarray | None = None
    references: dict[str, Reference] = field(default_factory=dict)
    # Direction (LPS unit vector) in which each array axis (slice, row, column) runs; None: the usual
    # axial stack, slices inferior → superior, rows anterior → posterior, columns right → left.
    patient_axes: tuple[tuple[float, float, float], ...] | None = None
    # Centroids (LPS mm) of the body outline ("body") and, with a CT, of the bone ("bone"): what a later
    # study is aligned on to compare lesions (analysis/response.py).
    landmarks: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    # The response to a prior study (PERCIST, Deauville), when one was compared (analysis/response.py).
    response: Response | None = None

    @property
    def suv_max(self) -> float | None:
        return max((les.suv_max for les in self.lesions), default=None)

    @property
    def tmtv_ml(self) -> float:
        return float(sum(les.volume_ml for les in self.lesions))

    @property
    def tlg_total(self) -> float:
        return float(sum(les.tlg for les in self.lesions))

    def to_json(self) -> dict[str, Any]:
        """The `analysis.json` document (no arrays)."""
        return {
            "study_instance_uid": self.study_instance_uid,
            "pet_series_instance_uid": self.pet_series_instance_uid,
            "ct_series_instance_uid": self.ct_series_instance_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "suv_type": self.suv.suv_type,
            "suv_inputs": asdict(self.suv),
            "segmentation": asdict(self.segmentation),
            "liver_reference": None if self.liver is None else {
                **asdict(self.liver), "percist_threshold": self.liver.percist_threshold},
            "lesion_count": len(self.lesions),
            "suv_max": self.suv_max,
            "tmtv_ml": self.tmtv_ml,
            "tlg_total": self.tlg_total,
            "lesions": [asdict(les) for les in self.lesions],
            "physiological": [asdict(region) for region in self.physiological],
            "physiology": None if self.physiology is None else asdict(self.physiology),
            "references": {name: asdict(ref) for name, ref in self.references.items()},
            "landmarks": {name: list(point) for name, point in self.landmarks.items()},
            "voxel_spacing_mm": list(self.voxel_spacing_mm),
            "device": self.device,
            "software_version": self.software_version,
            "timings_s": self.timings_s,
            **({} if self.response is None else {"response": self.response.to_json()}),
        }
