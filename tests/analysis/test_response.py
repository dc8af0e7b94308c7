"""Treatment response on phantom pairs whose answer is known: one patient, two visits, different frames of
reference and table positions, lesion uptake changed by a known factor (neuropetrix.phantoms.wholebody).

The follow-ups lie 14 mm left, 9 mm posterior and 37 mm higher on the table than the baseline (every
lesion then moves by about as much as the matching tolerance allows without alignment).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import hl7
import pytest
from pydicom import dcmread

from neuropetrix.analysis.response import MATCH_DISTANCE_MM, Alignment, assess, deauville, match_lesions, sul_factor
from neuropetrix.analysis.results import AnalysisResult, Reference
from neuropetrix.analysis.suv import normaliser
from neuropetrix.config.settings import AnalysisSettings
from neuropetrix.engine.offline import analyze_prior, load_study
from neuropetrix.phantoms.wholebody import LESIONS, LesionTruth, write_study
from tests.reports.test_fhir import _schema_errors

SHIFT = (14.0, 9.0, 37.0)
Z_RANGE = (-120.0, 480.0)           # pelvis to the neck: the lesions, the liver, the references
SETTINGS = AnalysisSettings()       # the defaults: SUVbw, fixed threshold 4.0
NEW_NODE = LesionTruth("new_node", "pelvic node", (40.0, -60.0, 40.0), 18.0, 8.0)


def _scaled(factor: float) -> list[LesionTruth]:
    return [replace(les, suv=les.suv * factor) for les in LESIONS]


def _write(folder: Path, seed: int, **kw: object) -> Path:
    write_study(folder, pet_matrix=96, ct_matrix=96, seed=seed, z_range_mm=Z_RANGE, **kw)  # type: ignore[arg-type]
    return folder


@pytest.fixture(scope="module")
def visits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("visits")
    return {
        "baseline": _write(root / "baseline", 1),
        "pmr": _write(root / "pmr", 2, offset_mm=SHIFT, lesions=_scaled(0.5)),
        "pmd": _write(root / "pmd", 3, offset_mm=SHIFT, lesions=_scaled(1.0) + [NEW_NODE]),
        "smd": _write(root / "smd", 4, offset_mm=SHIFT),
        "cmr": _write(root / "cmr", 5, offset_mm=SHIFT, lesions=[]),
        "liver": _write(root / "liver", 6, offset_mm=SHIFT, liver_suv=3.1),
    }


@pytest.fixture(scope="module")
def baseline(visits) -> AnalysisResult:
    return analyze_prior(visits["baseline"], SETTINGS, "cpu")


def _response(visits, baseline, name):
    pet, _ = load_study(visits[name], need_ct_pixels=False)
    current = analyze_prior(visits[name], SETTINGS, "cpu")
    return current, assess(current, baseline, pet)


def test_sul_is_suv_times_lean_over_body_weight(baseline):
    inputs = baseline.suv
    lean = normaliser("lbm_janmahasatian", 72.0, 1.68, "F")
    assert sul_factor(inputs, "lbm_janmahasatian") == pytest.approx(lean / 72000.0)
    assert 0.6 < lean / 72000.0 < 0.7          # Janmahasatian, 72 kg, 1.68 m, female: 47.7 kg


def test_fall_of_half_is_partial_response_with_lesions_matched_across_frames(visits, baseline):
    current, response = _response(visits, baseline, "pmr")
    assert current.frame_of_reference_uid != baseline.frame_of_reference_uid
    assert response.alignment.method.startswith("translation of the CT bone")
    assert response.alignment.translation_mm == pytest.approx(SHIFT, abs=6.0)   # about one PET voxel
    assert response.comparable and response.category == "PMR"
    assert -60.0 < response.percent_change < -40.0         # truth: -50 % (partial volume and noise aside)
    assert response.absolute_change <= -0.8
    assert response.new_lesions == ()
    # the hottest lesion at both visits is the liver metastasis (9 → 4.5 SUVbw)
    liver_met = LESIONS[3].center_mm
    target = next(les for les in baseline.lesions if les.label == response.target_before)
    assert math.dist(target.centroid_mm, liver_met) < 10.0
    for change in response.matched_lesions:
        assert change.distance_mm < 8.0
        assert change.percent_change == pytest.approx(-50.0, abs=15.0)


def test_rise_with_a_new_lesion_is_progression(visits, baseline):
    current, response = _response(visits, baseline, "pmd")
    assert response.category == "PMD"
    assert len(response.new_lesions) == 1
    new = next(les for les in current.lesions if les.label == response.new_lesions[0].current_label)
    assert math.dist(new.centroid_mm, [c + s for c, s in zip(NEW_NODE.center_mm, SHIFT)]) < 10.0
    assert len(response.matched_lesions) == len(baseline.lesions) == len(LESIONS)
    assert response.deauville.score == 5 and "new lesion" in response.deauville.note
    doc = response.to_json()
    assert doc["delta_tmtv_ml"] == pytest.approx(current.tmtv_ml - baseline.tmtv_ml)
    assert doc["delta_tmtv_ml"] == pytest.approx(NEW_NODE.volume_ml, rel=0.35)


def test_unchanged_disease_is_stable(visits, baseline):
    _, response = _response(visits, baseline, "smd")
    assert response.category == "SMD"
    assert abs(response.percent_change) < 10.0
    assert response.new_lesions == () and len(response.matched_lesions) == len(LESIONS)
    assert response.deauville.score == 5          # SUVpeak about 3 × the liver's


def test_all_lesions_gone_is_complete_response(visits, baseline):
    current, response = _response(visits, baseline, "cmr")
    assert current.lesions == []
    assert response.category == "CMR"
    gone = [c for c in response.lesions if c.status == "gone"]
    assert len(gone) == len(baseline.lesions)
    # each prior site is measured on the follow-up: no more than the liver background (mean + 2 SD)
    liver_sd = current.liver.suv_sd * sul_factor(current.suv, response.sul_type)
    assert all(c.sul_peak_after <= response.liver_sul_after + 2 * liver_sd for c in gone)
    assert response.deauville.score == 1


def test_liver_out_of_percist_range_makes_the_pair_not_comparable(visits, baseline):
    _, response = _response(visits, baseline, "liver")
    assert response.category is None and not response.comparable
    check = next(c for c in response.checks if c.name == "liver_stable")
    assert check.passed is False
    assert response.liver_sul_after / response.liver_sul_before == pytest.approx(3.1 / 2.2, rel=0.08)
    assert any(reason.startswith("liver_stable") for reason in response.not_assessable)
    assert response.percent_change is not None         # the numbers are still given


def test_matching_needs_the_alignment(baseline):
    moved = [replace(les, centroid_mm=tuple(c + s for c, s in zip(les.centroid_mm, (30.0, 0.0, 0.0))))
             for les in baseline.lesions]
    assert len(match_lesions(moved, baseline.lesions, Alignment((30.0, 0.0, 0.0), "test"))) == len(moved)
    assert 30.0 > MATCH_DISTANCE_MM
    assert match_lesions(moved, baseline.lesions, Alignment((0.0, 0.0, 0.0), "test")) == []


def test_deauville_against_blood_pool_and_liver(baseline):
    hottest = max(baseline.lesions, key=lambda les: les.suv_peak)
    liver = baseline.liver.suv_mean

    def scored(peak: float, blood: Reference | None = None) -> int | None:
        refs = {**baseline.references, **({"blood_pool": blood} if blood else {})}
        result = replace(baseline, lesions=[replace(hottest, suv_peak=peak)], references=refs)
        return deauville(result, new_lesion=False).score
    pool = Reference("blood_pool", True, 0.6 * liver, 0.1)
    assert scored(0.5 * liver, pool) == 2
    assert scored(0.9 * liver, pool) == 3
    assert scored(1.5 * liver, pool) == 4
    assert scored(2.5 * liver, pool) == 5
    assert scored(0.5 * liver, Reference("blood_pool", False, note="no CT")) is None


def test_analyze_with_prior_writes_response_to_json_oru_and_fhir(visits, tmp_path: Path):
    """The command a user runs: `neuropetrix analyze FOLLOW_UP --prior BASELINE --out OUT`."""
    out = tmp_path / "out"
    done = subprocess.run([str(Path(sys.executable).parent / "neuropetrix"), "analyze", str(visits["pmd"]),
                           "--prior", str(visits["baseline"]), "--out", str(out), "--device", "cpu"],
                          capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stderr
    assert "response (PERCIST 1.0): PMD" in done.stdout
    doc = json.loads((out / "analysis.json").read_text())
    response = doc["response"]
    baseline_uid = dcmread(next((visits["baseline"] / "PT").iterdir()), stop_before_pixels=True).StudyInstanceUID
    assert response["criteria"] == "PERCIST 1.0" and response["category"] == "PMD"
    assert response["prior_study_uid"] == baseline_uid != doc["study_instance_uid"]
    assert len(response["new_lesions"]) == 1 and len(response["matched_lesions"]) == len(LESIONS)
    assert response["sul_peak_before"] > 0 and response["sul_peak_after"] > 0

    message = hl7.parse((out / "oru.hl7").read_bytes().decode("utf-8"))
    obx = {str(seg[3][0][0][0]): seg for seg in message.segments("OBX")}
    coded = "CE" if str(message.segment("MSH")[12]) == "2.3.1" else "CWE"     # CWE from v2.5 on
    assert str(obx["percist_category"][2]) == coded and str(obx["percist_category"][5][0][0]) == "PMD"
    change = float(str(obx["response_sul_peak_change"][5]))
    assert change == pytest.approx(response["percent_change"], rel=1e-5)

    bundle = json.loads((out / "fhir_bundle.json").read_text())
    observations = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    category = next(o for o in observations if o["code"]["coding"][0]["code"] == "percist_category")
    assert category["valueCodeableConcept"]["coding"][0]["code"] == "PMD"
    assert category["derivedFrom"][1]["identifier"]["value"] == f"urn:oid:{baseline_uid}"
    assert _schema_errors(bundle) == []


def test_no_measurable_baseline_and_a_different_suv_type_are_said(visits, baseline):
    pet, _ = load_study(visits["smd"], need_ct_pixels=False)
    current = analyze_prior(visits["smd"], SETTINGS, "cpu")
    empty = assess(current, replace(baseline, lesions=[]), pet)
    assert empty.category == "PMD" and len(empty.new_lesions) == len(current.lesions)   # disease where none was
    other_type = replace(baseline, suv=replace(baseline.suv, suv_type="lbm_james"))
    response = assess(current, other_type, pet)
    assert response.category is None
    assert "suv_type" in [c.name for c in response.checks if c.passed is False]
    assert any(reason.startswith("suv_type") for reason in response.not_assessable)
