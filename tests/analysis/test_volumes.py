"""Reading series into volumes: any file order, geometry checks, Enhanced PET, CT onto the PET grid."""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from neuropetrix.analysis.errors import AnalysisError
from neuropetrix.analysis.volumes import Volume, _block_mean, choose_pet, load_volume, read_folder, resample_to
from tests.analysis.helpers import analyze_dir
from tests.support.phantom import small_spec, standard_phantom, write_phantom


def _tiny(tmp_path: Path, **kw) -> Path:
    write_phantom(standard_phantom(small_spec(pet_matrix=16, pet_spacing_mm=15.0, pet_slices=8)), tmp_path, **kw)
    return tmp_path


def test_file_order_and_names_do_not_matter(phantom_dir, tmp_path: Path):
    source = phantom_dir()
    for path in (source / "PT").iterdir():                  # random names, no order left
        shutil.copy(path, tmp_path / f"{uuid.uuid4().hex}")
    a, b = analyze_dir(source, threshold=3.0), analyze_dir(tmp_path, threshold=3.0)
    assert a.pet_sop_instance_uids == b.pet_sop_instance_uids
    assert np.array_equal(a.label_map, b.label_map) and a.lesions == b.lesions


def test_slices_are_sorted_along_the_normal_with_their_own_slopes(volumes):
    pet, _ = volumes
    z = [float(ds.ImagePositionPatient[2]) for ds in pet.slice_datasets]
    assert z == sorted(z) and pet.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert len({str(ds.RescaleSlope) for ds in pet.slice_datasets}) > 10
    np.testing.assert_allclose(pet.index_to_mm(np.array([0, 0, 0])), pet.slice_datasets[0].ImagePositionPatient)
    np.testing.assert_allclose(pet.mm_to_index(pet.index_to_mm(np.array([3.5, 7.0, 11.0]))), [3.5, 7.0, 11.0])


def test_enhanced_pet_gives_the_classic_volume(phantom_dir, volumes):
    classic, _ = volumes
    enhanced = load_volume(choose_pet(read_folder(phantom_dir("enhanced"))))
    frame_of_slice = {k: (k // 2 + 1 if k % 2 == 0 else 40 + k // 2 + 1) for k in range(80)}   # interleaved
    assert enhanced.frame_numbers == [frame_of_slice[k] for k in range(79, -1, -1)]   # sorted by z, upwards
    assert len(set(enhanced.sop_instance_uids)) == 1
    np.testing.assert_allclose(enhanced.origin, classic.origin)
    np.testing.assert_allclose(enhanced.data, classic.data, rtol=1e-6, atol=1e-3)


def test_ct_is_resampled_onto_the_pet_grid(volumes):
    pet, ct = volumes
    hu = resample_to(ct, pet, fill=-1000.0)
    assert hu.shape == pet.data.shape

    def at(x: float, y: float, z: float) -> float:
        k, r, c = np.rint(pet.mm_to_index(np.array([x, y, z]))).astype(int)
        return float(hu[k, r, c])
    assert at(0.0, 0.0, -60.0) == pytest.approx(40, abs=40)        # soft tissue
    assert at(0.0, 70.0, -60.0) == pytest.approx(700, abs=60)      # spine, posterior (+y)
    assert at(-118.5, -118.5, -60.0) == pytest.approx(-1000, abs=40)   # air in the corner


def test_missing_slice_is_refused(tmp_path: Path):
    folder = _tiny(tmp_path)
    (folder / "PT" / "PT0004.dcm").unlink()
    with pytest.raises(AnalysisError, match="1 missing slice"):
        analyze_dir(folder)


def test_mixed_orientations_are_refused(tmp_path: Path):
    def tilt(ds, k):
        if k == 3:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    with pytest.raises(AnalysisError, match="mixed image orientations"):
        analyze_dir(_tiny(tmp_path, customize=tilt))


def test_two_images_at_one_position_are_refused(tmp_path: Path):
    def same(ds, k):
        if k == 5:
            ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], "-12"]
    with pytest.raises(AnalysisError, match="two images at the same position"):
        analyze_dir(_tiny(tmp_path, customize=same))


def test_unreadable_file_and_no_pet_are_refused(tmp_path: Path):
    folder = _tiny(tmp_path / "a")
    (folder / "PT" / "broken.dcm").write_bytes(b"\x00" * 200)
    with pytest.raises(AnalysisError, match="broken.dcm: not a readable DICOM file"):
        analyze_dir(folder)
    ct_only = tmp_path / "b"
    ct_only.mkdir()
    for path in sorted((_tiny(tmp_path / "c", with_ct=True) / "CT").iterdir())[:3]:
        shutil.copy(path, ct_only)
    with pytest.raises(AnalysisError, match="no PET series"):
        analyze_dir(ct_only)


def test_a_broken_ct_stops_only_the_analysis_that_uses_it(tmp_path: Path):
    folder = _tiny(tmp_path, with_ct=True)
    (folder / "CT" / "CT0004.dcm").unlink()
    assert analyze_dir(folder).ct_series_instance_uid is None
    with pytest.raises(AnalysisError, match="CT series .*missing slice"):
        analyze_dir(folder, method="model", model=tmp_path / "weights.pt")


def _grid(shape: tuple[int, int, int], spacing: tuple[float, float, float], origin: tuple[float, float, float],
          data: np.ndarray | None = None) -> Volume:
    return Volume(data=np.zeros(shape, np.float32) if data is None else data, origin=np.array(origin),
                  axes=np.eye(3)[::-1].copy(), spacing=spacing, slice_datasets=[], frame_numbers=None,
                  acquisition_datetimes=[], frame_durations_s=[])


@pytest.mark.parametrize("first_slice", [0.0, 6.0, -9.0])
def test_ct_on_the_same_slices_resamples_as_the_3d_transform(first_slice: float):
    """The per-slice path for a CT on its PET's slices gives the trilinear transform's values exactly,
    slices outside the CT included (filled)."""
    rng = np.random.default_rng(7)
    ct = _grid((20, 37, 41), (3.0, 0.98, 1.07), (-20.0, -18.0, first_slice),
               rng.normal(0.0, 400.0, (20, 37, 41)).astype(np.float32))
    pet = _grid((24, 13, 15), (3.0, 3.5, 3.5), (-23.0, -25.0, 0.0))
    target_steps, source_steps = pet.axes * np.array(pet.spacing)[:, None], ct.axes * np.array(ct.spacing)[:, None]
    inverse = np.linalg.inv(source_steps)
    expected = ndimage.affine_transform(ct.data, np.diag((target_steps @ inverse).T),
                                        offset=(pet.origin - ct.origin) @ inverse, output_shape=pet.data.shape,
                                        order=1, mode="constant", cval=-1000.0, output=np.float32)
    hu = resample_to(ct, pet, fill=-1000.0)
    assert (hu == -1000.0).all(axis=(1, 2)).any() and (hu > -1000.0).any()     # both kinds of slice occur
    np.testing.assert_array_equal(hu, expected)


@pytest.mark.parametrize("dtype, block", [("<i2", 3), ("<u2", 3), ("<i2", 2), ("<u2", 4)])
def test_block_averaging_is_the_float32_mean(dtype: str, block: int):
    rng = np.random.default_rng(3)
    frame = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, (511, 509), endpoint=True).astype(dtype)
    rows, cols = 511 // block, 509 // block
    expected = frame[:rows * block, :cols * block].reshape(rows, block, cols, block).mean(axis=(1, 3),
                                                                                          dtype=np.float32)
    np.testing.assert_array_equal(_block_mean(frame, block, rows, cols), expected)


def test_landmark_centroid_is_the_mean_of_the_voxel_indices():
    from neuropetrix.analysis.pipeline import _centroid

    mask = np.random.default_rng(5).random((61, 47, 53)) > 0.8
    np.testing.assert_array_equal(_centroid(mask), np.stack(np.nonzero(mask), axis=1).mean(axis=0))


def test_compressed_pixel_data_gives_the_uncompressed_volume(tmp_path: Path):
    """Uncompressed pixels are read straight from the file; encapsulated ones (RLE here) go through
    pydicom's decoders, to the same volume."""
    import pydicom
    from pydicom.uid import RLELossless

    plain = _tiny(tmp_path / "plain")
    rle = tmp_path / "rle"
    rle.mkdir()
    for path in (plain / "PT").iterdir():
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(rle / path.name)
    expected = load_volume(choose_pet(read_folder(plain)))
    got = load_volume(choose_pet(read_folder(rle)))
    assert str(got.header.file_meta.TransferSyntaxUID) == RLELossless
    np.testing.assert_array_equal(got.data, expected.data)
