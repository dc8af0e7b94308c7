"""Offline analysis of a folder of DICOM files: read the series, analyse, write the results.

`analyze_folder` is what `neuropetrix analyze` runs. It returns an `OfflineAnalysis` holding the
result, the sorted source datasets and the files written so far; each report writer (SEG, SR, HL7,
FHIR, MIP, PDF) is one more step in `write_outputs` that reads that object and adds its file.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from neuropetrix.analysis.devices import resolve_device
from neuropetrix.analysis.errors import AnalysisError
from neuropetrix.analysis.pipeline import analyze_volumes
from neuropetrix.analysis.response import assess
from neuropetrix.analysis.results import AnalysisResult
from neuropetrix.analysis.volumes import Volume, choose_ct, choose_pet, inplane_block, load_volume, read_folder
from neuropetrix.config.settings import AnalysisSettings, HbysSettings
from neuropetrix.engine.review_result import VersionOrder, reviewed
from neuropetrix.reports.comparison import PriorStudy
from neuropetrix.reports.images import Pictures
from neuropetrix.reports.source import OrderFacts
from neuropetrix.reports.version import AUTOMATIC, ResultVersion
from neuropetrix.reports.writer import delivery_refusals, write_reports

log = logging.getLogger("neuropetrix.analysis")


@dataclass
class OfflineAnalysis:
    """One analysed study and what was written for it.

    `pet_datasets[k]` is the source dataset of `result.label_map[k]` (for Enhanced PET the same
    multi-frame dataset for every k, frame `result.pet_frame_numbers[k]`). `ct_datasets` are the CT
    series' datasets (pixel data left on disk unless the method used it), sorted the same way.
    """

    result: AnalysisResult
    pet: Volume
    ct: Volume | None
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    hbys: HbysSettings = field(default_factory=HbysSettings)   # HL7 version/charset, patient id system
    refused: dict[str, str] = field(default_factory=dict)       # report kind → why it was not made
    hbys_order: OrderFacts | None = None                       # the HBYS's order, when reconciled
    prior: PriorStudy | None = None                            # the study `result.response` compares with
    pictures: Pictures | None = None                           # the report's pictures, for the review ones

    @property
    def pet_datasets(self) -> list[Dataset]:
        return self.pet.slice_datasets

    @property
    def ct_datasets(self) -> list[Dataset]:
        return [] if self.ct is None else self.ct.slice_datasets


def load_study(study_dir: Path, need_ct_pixels: bool, full_ct: bool = False) -> tuple[Volume, Volume | None]:
    """The PET volume and the CT on its frame of reference (geometry only unless its pixels are needed).

    The CT's pixels are averaged to about the PET's pixel size as they are read unless `full_ct` (a
    model that takes the CT at its own resolution). A CT that cannot be stacked (a scout in the series,
    a missing slice) stops only an analysis that needs its full pixels; otherwise the study is analysed
    as PET-only (the anatomy then comes from the PET, and says so).
    """
    series = read_folder(study_dir)
    pet = load_volume(choose_pet(series))
    ct_series = choose_ct(series, str(pet.header.get("FrameOfReferenceUID", "")) or None)
    if ct_series is None:
        return pet, None
    try:
        return pet, load_volume(ct_series, with_pixels=need_ct_pixels,
                                block=1 if full_ct else inplane_block(ct_series, pet), release=not full_ct)
    except AnalysisError as exc:
        if full_ct:
            raise
        log.warning("the CT on the PET's frame of reference is not used: %s", exc)
        return pet, None


def write_analysis_json(analysis: OfflineAnalysis) -> Path:
    """The analysis, and under `deliveries_refused` the report files that could not be made and why
    (the engine parks those deliveries with that reason)."""
    path = analysis.out_dir / "analysis.json"
    document = {**analysis.result.to_json(), "deliveries_refused": analysis.refused}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def write_outputs(analysis: OfflineAnalysis, version: ResultVersion = AUTOMATIC) -> None:
    """Write every output file into `analysis.out_dir`, recording each in `analysis.files`.

    analysis.json goes first, so that it exists even when a report writer fails; its timings therefore
    end before the writing, whose time is kept in `analysis.result.timings_s["write"]` afterwards.
    """
    t0 = time.perf_counter()
    analysis.out_dir.mkdir(parents=True, exist_ok=True)
    analysis.refused = delivery_refusals(analysis.pet_datasets, analysis.hbys_order)
    for kind, reason in analysis.refused.items():
        log.warning("study %s: no %s: %s", analysis.result.study_instance_uid, kind, reason)
    analysis.files["analysis.json"] = write_analysis_json(analysis)
    if analysis.result.suv_volume is not None:
        analysis.pictures = Pictures(analysis.result)
    analysis.files.update({p.name: p for p in write_reports(analysis.result, analysis.pet_datasets,
                                                            analysis.out_dir, analysis.hbys, version,
                                                            analysis.hbys_order, analysis.prior,
                                                            analysis.pictures).values()})
    analysis.result.timings_s["write"] = time.perf_counter() - t0


def prior_study(prior_dir: Path, settings: AnalysisSettings, device: str) -> PriorStudy:
    """The prior study analysed as the current one is (same settings), for the comparison only, with
    its PET headers for the reports that reference it."""
    model = settings.method == "model"
    pet, ct = load_study(prior_dir, need_ct_pixels=model or settings.exclude_physiological, full_ct=model)
    log.info("prior study %s: analysing it for the comparison", pet.header.get("StudyInstanceUID", "?"))
    return PriorStudy(analyze_volumes(pet, ct, settings, device), pet.slice_datasets)


def analyze_prior(prior_dir: Path, settings: AnalysisSettings, device: str) -> AnalysisResult:
    """The prior study's analysis alone (see `prior_study`)."""
    return prior_study(prior_dir, settings, device).result


def analyze_folder(study_dir: Path, out_dir: Path, settings: AnalysisSettings,
                   device: str | None = None, hbys: HbysSettings | None = None,
                   organ_labels: Path | None = None, organ_source: str | None = None,
                   order: VersionOrder | None = None, hbys_order: OrderFacts | None = None,
                   prior_dir: Path | None = None, prior_optional: bool = False) -> OfflineAnalysis:
    """Analyse the PET/CT study in `study_dir` and write the results into `out_dir`.

    `device` ("cpu", "cuda", "auto") overrides `settings.device`. `organ_labels` is a site segmentation
    model's output for this study (a folder of organ masks or a multi-label map, see
    `analysis.organlabels`), named `organ_source` (e.g. "TotalSegmentator"). `order` is the version to
    write (a physician's decisions applied; engine/review_result.py), the automatic preliminary one by
    default; `hbys_order` is the HBYS's order when the study was reconciled with one. `prior_dir` is an
    earlier study of the patient: it is analysed with the same settings (nothing is written for it) and
    the response to it (`analysis.response`) goes into the results; with `prior_optional` (a prior the
    engine chose) a prior that cannot be analysed is logged and the study analysed alone. Raises `AnalysisError` (with
    `InputRefused` for SUV inputs) with a one-line message when the study cannot be analysed.
    """
    from neuropetrix.analysis.organlabels import read_organ_masks

    resolved = resolve_device(device or settings.device)
    t0 = time.perf_counter()
    model = settings.method == "model"
    pet, ct = load_study(Path(study_dir), need_ct_pixels=model or settings.exclude_physiological, full_ct=model)
    organs = read_organ_masks(organ_labels, pet) if organ_labels is not None else None
    timings = {"read": time.perf_counter() - t0}
    result = analyze_volumes(pet, ct, settings, resolved, timings, organs, organ_source or (
        None if organ_labels is None else Path(organ_labels).name))
    result, version = reviewed(result, order or VersionOrder())
    prior = None
    if prior_dir is not None:
        try:
            prior = prior_study(Path(prior_dir), settings, resolved)
        except AnalysisError as exc:
            if not prior_optional:
                raise
            log.warning("study %s: its prior study cannot be analysed, no response assessed: %s",
                        result.study_instance_uid, exc)
    if prior is not None:
        result.response = assess(result, prior.result, pet)
    analysis = OfflineAnalysis(result=result, pet=pet, ct=ct, out_dir=Path(out_dir), hbys=hbys or HbysSettings(),
                               hbys_order=hbys_order, prior=prior)
    write_outputs(analysis, version)
    return analysis
