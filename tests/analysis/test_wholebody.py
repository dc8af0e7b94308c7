"""A realistic whole-body FDG PET/CT: lesions found, normal uptake told apart, references from anatomy.

The phantom (neuropetrix.phantoms.wholebody) has a brain in a skull, a myocardium, a bladder of urine
density, kidneys beside the spine, a liver, an aorta in its fat, and lesions in a lung, the mediastinum,
the liver, a vertebra and a pelvic node a centimetre beside the bladder.
"""
from __future__ import annotations

import math
import shutil
import threading
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from neuropetrix.analysis.devices import cuda_available
from neuropetrix.analysis.organlabels import read_organ_masks
from neuropetrix.analysis.pipeline import analyze_volumes
from neuropetrix.analysis.results import AnalysisResult
from neuropetrix.analysis.tracers import FDG, PSMA, profile_for
from neuropetrix.config.settings import AnalysisSettings
from neuropetrix.engine.offline import analyze_folder, load_study
from neuropetrix.phantoms.wholebody import PhantomTruth, write_label_maps, write_study
from tests.analysis.helpers import analyze_dir

ORGANS = {"brain", "myocardium", "urinary_bladder", "kidney"}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PhantomTruth]:
    folder = tmp_path_factory.mktemp("wholebody")
    return folder, write_study(folder, pet_matrix=128, ct_matrix=128, seed=3)


def _match(result: AnalysisResult, truth: PhantomTruth) -> dict[str, object]:
    """Each true lesion → the found lesion whose centroid is within its radius + 5 mm (or None)."""
    out = {}
    for lesion in truth.lesions:
        near = [les for les in result.lesions
                if math.dist(les.centroid_mm, lesion.center_mm) <= lesion.diameter_mm / 2 + 5.0]
        out[lesion.name] = near[0] if near else None
    return out


def _check_lesions(result: AnalysisResult, truth: PhantomTruth) -> None:
    matched = _match(result, truth)
    assert all(matched.values()), {k: v for k, v in matched.items() if v is None}
    assert len(result.lesions) == len(truth.lesions)                 # no organ among the lesions
    assert result.tmtv_ml == pytest.approx(truth.tmtv_ml, rel=0.10)
    assert {r.organ for r in result.physiological} == ORGANS
    by_organ = {r.organ: r for r in result.physiological}
    assert by_organ["brain"].volume_ml == pytest.approx(truth.organs["brain"].volume_ml, rel=0.15)
    assert sum(r.organ == "kidney" for r in result.physiological) == 2


def test_pet_ct_lesions_organs_and_references(study):
    folder, truth = study
    result = analyze_dir(folder)
    _check_lesions(result, truth)
    assert result.physiology.source == "CT rules" and result.physiology.profile == "FDG"
    assert "skull" in {r.organ: r for r in result.physiological}["brain"].evidence
    assert "urine" in {r.organ: r for r in result.physiological}["urinary_bladder"].evidence
    pelvic = _match(result, truth)["pelvic_node"]
    assert pelvic.volume_ml == pytest.approx(truth.lesions[-1].volume_ml, rel=0.35)   # a 16 mm node at 4 mm
    liver, blood = result.references["liver"], result.references["blood_pool"]
    assert liver.found and liver.suv_mean == pytest.approx(truth.liver_suv, rel=0.05)
    assert "CT soft tissue" in liver.method
    assert math.dist(liver.center_mm, truth.organs["liver"].center_mm) < 60.0
    assert blood.found and blood.suv_mean == pytest.approx(truth.blood_pool_suv, rel=0.05)
    aorta = truth.organs["aorta"].center_mm
    assert math.dist(blood.center_mm[:2], aorta[:2]) < 6.0                     # in the aorta, not the heart


def test_the_plain_threshold_counts_the_organs(study):
    folder, truth = study
    plain = analyze_dir(folder, exclude_physiological=False)
    assert len(plain.lesions) == len(truth.lesions) + 5                      # brain, heart, bladder, 2 kidneys
    assert plain.tmtv_ml > 2000.0 and plain.physiological == []


def test_pet_only_study(study):
    folder, truth = study
    result = analyze_dir(folder / "PT")
    _check_lesions(result, truth)
    assert result.ct_series_instance_uid is None and result.physiology.source == "PET-only rules"
    assert any("no CT" in note for note in result.physiology.notes)
    assert result.references["liver"].suv_mean == pytest.approx(truth.liver_suv, rel=0.05)
    blood = result.references["blood_pool"]
    assert not blood.found and blood.suv_mean is None and "no CT" in blood.note   # said so, no other organ


@pytest.mark.parametrize("multilabel", [False, True])
def test_organ_label_maps_replace_the_rules(study, tmp_path: Path, multilabel: bool):
    folder, truth = study
    labels = write_label_maps(tmp_path / "seg", spacing_mm=3.0, multilabel=multilabel)
    pet, ct = load_study(folder, need_ct_pixels=True)
    masks = read_organ_masks(labels, pet)
    assert {"brain", "myocardium", "urinary_bladder", "kidney", "liver", "aorta"} <= set(masks)
    result = analyze_volumes(pet, ct, AnalysisSettings(device="cpu"), "cpu", organ_masks=masks,
                             organ_source="TotalSegmentator")
    _check_lesions(result, truth)
    assert result.physiology.source == "organ label map (TotalSegmentator)"
    assert all("organ label map" in r.evidence for r in result.physiological)
    assert result.references["blood_pool"].method == "organ label map's aorta"
    assert result.references["blood_pool"].suv_mean == pytest.approx(truth.blood_pool_suv, rel=0.05)
    assert result.references["liver"].suv_mean == pytest.approx(truth.liver_suv, rel=0.05)


def test_a_multilabel_map_without_names_is_refused(tmp_path: Path, study):
    from neuropetrix.analysis.errors import AnalysisError

    labels = write_label_maps(tmp_path / "seg", spacing_mm=8.0, multilabel=True)
    labels.with_name("organs.json").unlink()
    pet, _ = load_study(study[0], need_ct_pixels=False)
    with pytest.raises(AnalysisError, match="organs.json"):
        read_organ_masks(labels, pet)


def _rp(name: str, code: str | None = None) -> Dataset:
    item = Dataset()
    item.Radiopharmaceutical = name
    ds = Dataset()
    ds.RadiopharmaceuticalInformationSequence = [item]
    if code:
        c = Dataset()
        c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = code, "SCT", name
        item.RadiopharmaceuticalCodeSequence = [c]
    return ds


def test_tracer_profiles_come_from_the_radiopharmaceutical():
    assert profile_for(_rp("Fluorodeoxyglucose F^18^", "35321007")) is FDG
    assert profile_for(_rp("FDG")) is FDG
    assert profile_for(_rp("Ga-68 PSMA-11")) is PSMA
    assert {"salivary_gland", "kidney", "liver", "spleen", "bowel"} <= set(PSMA.organs)
    assert profile_for(_rp("Sodium fluoride")) is None


def test_an_unknown_tracer_excludes_nothing_and_says_so(study, tmp_path: Path):
    folder, truth = study
    pet, _ = load_study(folder / "PT", need_ct_pixels=False)
    for ds in {id(d): d for d in pet.slice_datasets}.values():
        ds.RadiopharmaceuticalInformationSequence[0].Radiopharmaceutical = "Sodium fluoride"
        del ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalCodeSequence
    result = analyze_volumes(pet, None, AnalysisSettings(device="cpu"), "cpu")
    assert result.physiological == [] and len(result.lesions) == len(truth.lesions) + 5
    assert result.physiology.profile is None and "not recognised" in result.physiology.notes[0]


def test_no_accession_and_a_folder_with_other_files(tmp_path: Path, caplog):
    """Without an AccessionNumber everything but the HL7/FHIR deliveries is written, and those are
    refused with a reason; README, JSON and JPEG files beside the images are skipped with a log line."""
    study_dir = tmp_path / "study"
    write_study(study_dir, pet_matrix=48, ct_matrix=48, accession=None)
    (study_dir / "README").write_text("exported from the scanner\n")
    (study_dir / "meta.json").write_text("{}")
    (study_dir / "preview.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    with caplog.at_level("INFO", logger="neuropetrix.analysis"):
        analysis = analyze_folder(study_dir, tmp_path / "out", AnalysisSettings(device="cpu"), "cpu")
    assert "skipped 3 file(s) that are not DICOM" in caplog.text
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"analysis.json", "sr.dcm", "report.pdf", "report.dcm", "mip.png"} <= written
    assert "seg.dcm" in written or not analysis.result.lesions
    assert not {"oru.hl7", "fhir_bundle.json"} & written
    import json

    doc = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert set(doc["deliveries_refused"]) == {"oru", "fhir_bundle"}
    assert "AccessionNumber" in doc["deliveries_refused"]["oru"]
    assert "physiological" in doc and "references" in doc


def test_the_engine_parks_a_refused_delivery_with_its_reason(tmp_path: Path):
    from neuropetrix.config.settings import Settings
    from neuropetrix.engine.executor import JobRunner
    from neuropetrix.engine.jobs import Claimed, JobFailure
    from neuropetrix.engine.result_store import ResultStore
    from neuropetrix.store.files import FileStore

    study_dir = tmp_path / "study"
    truth = write_study(study_dir, pet_matrix=32, ct_matrix=32, accession=None, with_ct=False)
    store = ResultStore(tmp_path / "results")
    temp = store.new_temp(truth.study_instance_uid)
    analyze_folder(study_dir, temp, AnalysisSettings(device="cpu"), "cpu")
    store.publish(temp, truth.study_instance_uid, job_id=1, attempt=1)
    runner = JobRunner(Settings(), sessions=None, files=FileStore(tmp_path / "storage"), results=store)
    for kind, name in (("hl7", "oru.hl7"), ("fhir", "fhir_bundle.json")):
        job = Claimed(2, kind, truth.study_instance_uid, "r", "hbys", [], {}, 1, 12, None)
        with pytest.raises(JobFailure) as caught:
            runner.run(job, threading.Event())
        assert caught.value.permanent and "AccessionNumber" in str(caught.value) and name in str(caught.value)
    shutil.rmtree(study_dir)


@pytest.mark.skipif(not cuda_available(), reason="no CUDA device on this machine")
def test_the_gpu_finds_the_same_lesions_and_organs(study):
    folder, _ = study
    cpu, gpu = analyze_dir(folder), analyze_dir(folder, device="cuda")
    assert [les.voxel_count for les in gpu.lesions] == [les.voxel_count for les in cpu.lesions]
    assert [(r.organ, round(r.volume_ml, 3)) for r in gpu.physiological] == \
        [(r.organ, round(r.volume_ml, 3)) for r in cpu.physiological]
