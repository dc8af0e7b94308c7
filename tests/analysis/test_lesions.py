"""Lesions and their measures against the phantom's analytic answer."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from neuropetrix.analysis import suvpeak
from neuropetrix.analysis.errors import AnalysisError
from neuropetrix.analysis.liver import liver_reference
from neuropetrix.analysis.pipeline import analyze_volumes, to_suv
from neuropetrix.analysis.suv import suv_factors
from neuropetrix.config.settings import AnalysisSettings
from neuropetrix.engine.offline import load_study
from tests.analysis.helpers import analyze_dir, nearest
from tests.support.phantom import Phantom, standard_phantom, write_phantom

A, B, C, D, E, F = range(6)          # the standard phantom's spheres


def _run(volumes, **settings: object):
    pet, _ = volumes
    return analyze_volumes(pet, None, AnalysisSettings(**settings), "cpu")


@pytest.mark.parametrize("sphere", [A, B])
def test_sphere_volume_suv_and_tlg_at_the_half_way_threshold(sphere: int, phantom: Phantom, volumes):
    """Thresholded half-way between sphere and background, a ≥ 2 cm sphere measures its true volume."""
    s = phantom.spheres[sphere]
    result = _run(volumes, threshold=(s.suv + phantom.background_suv) / 2)
    lesion = nearest(result.lesions, s.center_mm)
    assert lesion.volume_ml == pytest.approx(s.volume_ml, rel=0.10)
    assert lesion.suv_max == pytest.approx(s.suv, rel=0.005)
    assert math.dist(lesion.centroid_mm, s.center_mm) < 1.0
    assert lesion.tlg == pytest.approx(lesion.suv_mean * lesion.volume_ml, rel=1e-12)
    assert (s.suv + 1) / 2 <= lesion.suv_mean <= s.suv
    # edge voxels hold part background: SUVmean, hence TLG, reads low, the more so the smaller the sphere
    assert lesion.tlg == pytest.approx(s.suv * s.volume_ml, rel=0.10 if sphere == A else 0.15)


def test_suvpeak_is_the_mean_of_the_hottest_1ml_sphere(phantom: Phantom, volumes):
    result = _run(volumes, threshold=3.0, min_volume_ml=0.1)
    big = nearest(result.lesions, phantom.spheres[A].center_mm)
    assert big.suv_peak == pytest.approx(10.0, rel=0.005)          # the 1 ml sphere fits inside
    edge = nearest(result.lesions, phantom.spheres[F].center_mm)
    assert edge.suv_peak == pytest.approx(7.0, rel=0.005)          # averaged over its part in the image
    small = nearest(result.lesions, phantom.spheres[E].center_mm)   # 0.9 ml: the peak sphere sees background
    assert small.suv_peak < 0.85 * small.suv_max
    for lesion in result.lesions:
        assert lesion.suv_peak <= lesion.suv_max + 1e-6


def test_peak_kernel_holds_one_millilitre():
    for spacing in [(3.0, 3.0, 3.0), (2.0, 4.0, 4.0), (5.0, 2.5, 2.5)]:
        kernel = suvpeak.sphere_kernel(spacing)
        assert kernel.sum() == pytest.approx(1.0)
        inside_ml = (kernel / kernel.max()).sum() * np.prod(spacing) / 1000
        assert inside_ml == pytest.approx(1.0, rel=0.03)


def test_touching_spheres_are_one_lesion_and_the_edge_sphere_is_measured(phantom: Phantom, volumes):
    result = _run(volumes, threshold=3.0, min_volume_ml=0.1)
    c, d = phantom.spheres[C], phantom.spheres[D]
    pair = nearest(result.lesions, tuple((np.array(c.center_mm) + d.center_mm) / 2))
    assert pair.suv_max == pytest.approx(6.0, rel=0.005)
    assert pair.volume_ml == pytest.approx(c.volume_ml + d.volume_ml, rel=0.15)
    f = phantom.spheres[F]
    visible = f.volume_ml / 2 + math.pi * (100 * 1.5 - 1.5 ** 3 / 3) / 1000   # z ≤ +1.5 mm (slice 0's edge)
    edge = _run(volumes, threshold=4.0, min_volume_ml=0.1)
    assert nearest(edge.lesions, f.center_mm).volume_ml == pytest.approx(visible, rel=0.10)


def test_lesions_are_numbered_by_suvmax_and_match_the_label_map(volumes):
    result = _run(volumes, threshold=3.0, min_volume_ml=0.1)
    assert [les.label for les in result.lesions] == list(range(1, len(result.lesions) + 1))
    assert [les.suv_max for les in result.lesions] == sorted((les.suv_max for les in result.lesions), reverse=True)
    assert len(result.lesions) == 5          # A, B, C+D, E, F
    counts = np.bincount(result.label_map.ravel())
    assert [les.voxel_count for les in result.lesions] == list(counts[1:])
    assert result.tmtv_ml == pytest.approx(sum(les.volume_ml for les in result.lesions))


def test_minimum_volume_drops_small_lesions(phantom: Phantom, volumes):
    kept = _run(volumes, threshold=3.5, min_volume_ml=0.1).lesions
    dropped = _run(volumes, threshold=3.5, min_volume_ml=1.5).lesions
    small = phantom.spheres[E]
    assert math.dist(nearest(kept, small.center_mm).centroid_mm, small.center_mm) < 2
    assert all(math.dist(les.centroid_mm, small.center_mm) > 20 for les in dropped)
    assert all(les.volume_ml >= 1.5 for les in dropped)


def test_label_map_slices_follow_the_pet_instances(volumes):
    """label_map[k] belongs to pet_sop_instance_uids[k]: the big sphere's slices are where its z is."""
    pet, _ = volumes
    result = _run(volumes, threshold=5.5)
    z_of = {str(ds.SOPInstanceUID): float(ds.ImagePositionPatient[2]) for ds in pet.slice_datasets}
    zs = [z_of[uid] for uid in result.pet_sop_instance_uids]
    assert result.label_map.shape == pet.data.shape and len(zs) == pet.data.shape[0]
    lesion_z = [zs[k] for k in np.nonzero((result.label_map == 1).any(axis=(1, 2)))[0]]
    assert min(lesion_z) >= -148 - 15 and max(lesion_z) <= -148 + 15


def test_percent_of_each_lesions_max(phantom: Phantom, volumes):
    """55 % of SUVmax 10 is 5.5, half-way for the big sphere; the 2 cm one (SUV 8, 4.4 ≈ its 4.5)."""
    result = _run(volumes, method="percent_max", threshold=0.55, min_volume_ml=0.1)
    for index in (A, B):
        s = phantom.spheres[index]
        lesion = nearest(result.lesions, s.center_mm)
        assert lesion.volume_ml == pytest.approx(s.volume_ml, rel=0.10)
        assert lesion.suv_max == pytest.approx(s.suv, rel=0.005)
    assert result.segmentation.method == "percent_max" and result.segmentation.seed_threshold == 2.5
    # C (SUV 6) is hotter: its 3.3 region runs into D (SUV 5), which it touches
    assert sum(1 for les in result.lesions if math.dist(les.centroid_mm, phantom.spheres[D].center_mm) < 12) == 1


def test_percist_with_the_liver_placed_automatically(phantom: Phantom, volumes):
    result = _run(volumes, method="percist", min_volume_ml=0.1)
    liver = result.liver
    assert liver.method.startswith("auto")
    assert math.dist(liver.center_mm, phantom.liver_center_mm) < 15
    assert liver.suv_mean == pytest.approx(2.0, rel=0.005) and liver.suv_sd < 0.01
    assert result.segmentation.threshold == pytest.approx(1.5 * liver.suv_mean + 2 * liver.suv_sd)
    assert len(result.lesions) == 5


def test_percist_liver_sd_and_a_user_centre(tmp_path: Path):
    noisy = standard_phantom(noise_sd=0.2)
    write_phantom(noisy, tmp_path)
    result = analyze_dir(tmp_path, method="percist", liver_center_mm=(-50.0, 10.0, -150.0), min_volume_ml=1.0)
    assert result.liver.method == "user" and result.liver.center_mm == (-50.0, 10.0, -150.0)
    assert result.liver.suv_mean == pytest.approx(2.0, abs=0.03)
    assert result.liver.suv_sd == pytest.approx(0.2, rel=0.15)
    assert result.segmentation.threshold == pytest.approx(result.liver.percist_threshold)
    pet, _ = load_study(tmp_path, need_ct_pixels=False)               # noise in the air is not body
    auto = liver_reference(to_suv(pet, suv_factors(pet, "bw")[1]), pet)
    assert math.dist(auto.center_mm, (-50.0, 10.0, -150.0)) < 15 and auto.suv_mean == pytest.approx(2.0, abs=0.05)


def test_without_a_liver_percist_refuses_and_other_methods_go_on(tmp_path: Path):
    write_phantom(standard_phantom(liver_suv=1.0), tmp_path)
    with pytest.raises(AnalysisError, match="liver_center_mm"):
        analyze_dir(tmp_path, method="percist")
    result = analyze_dir(tmp_path, threshold=4.0)
    assert result.liver is None and any("no liver reference" in note for note in result.suv.notes)


def test_radiomics_features_per_lesion(volumes):
    result = _run(volumes, threshold=5.5, radiomics=True)
    features = result.lesions[0].radiomics
    assert features["firstorder_Maximum"] == pytest.approx(result.lesions[0].suv_max, rel=1e-6)
    assert features["shape_VoxelVolume"] / 1000 == pytest.approx(result.lesions[0].volume_ml, rel=1e-6)
    assert {"glcm_Contrast", "glrlm_RunLengthNonUniformity", "glszm_ZoneEntropy"} <= set(features)
