"""The whole-body phantom generator: valid DICOM, one frame of reference, truth that matches the pixels."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from neuropetrix.analysis.suv import suv_factors
from neuropetrix.analysis.volumes import choose_ct, choose_pet, load_volume, read_folder
from neuropetrix.phantoms.wholebody import write_study


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("wb")
    return folder, write_study(folder, pet_matrix=64, ct_matrix=64, noise=0.0)


def test_series_pass_dciodvfy_and_share_the_frame_of_reference(small):
    _, truth = small
    for path in (truth.pet_paths[40], truth.ct_paths[40]):
        done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], errors
    pet, ct = dcmread(truth.pet_paths[0]), dcmread(truth.ct_paths[0])
    assert pet.FrameOfReferenceUID == ct.FrameOfReferenceUID == truth.frame_of_reference_uid
    assert pet.Units == "BQML" and {"ATTN", "DECY"} <= set(pet.CorrectedImage)


def test_slices_run_inferior_to_superior_and_truth_matches_pixels(small):
    folder, truth = small
    z = [float(dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in truth.pet_paths[:3]]
    assert z[0] < z[1] < z[2]                                  # instance 1 is the lowest slice
    series = read_folder(folder)
    pet = load_volume(choose_pet(series))
    assert choose_ct(series, truth.frame_of_reference_uid) is not None
    _, factors = suv_factors(pet, "bw")
    suv = pet.data * factors[:, None, None]
    for name in ("liver", "brain", "urinary_bladder"):
        organ = truth.organs[name]
        k, r, c = np.round(pet.mm_to_index(np.array(organ.center_mm))).astype(int)
        assert suv[k, r, c] == pytest.approx(organ.suv, rel=0.01)
    lesion = truth.lesions[0]
    k, r, c = np.round(pet.mm_to_index(np.array(lesion.center_mm))).astype(int)
    assert 0.9 * lesion.suv <= suv[k, r, c] <= lesion.suv * 1.001     # 8 mm voxels: partial volume


def test_no_accession_and_pet_only(tmp_path: Path):
    truth = write_study(tmp_path, pet_matrix=32, accession=None, with_ct=False)
    assert not (tmp_path / "CT").exists() and truth.ct_series_uid is None
    assert dcmread(truth.pet_paths[0]).AccessionNumber == ""
