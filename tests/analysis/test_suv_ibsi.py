"""SUV per the IBSI-SUV manual: stored SUV types converted from their SUV Type, SUV-IBW, scan-start back-computation."""
from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from neuropetrix.analysis.errors import InputRefused
from tests.analysis.helpers import analyze_dir, nearest
from tests.support.phantom import Phantom, small_spec, standard_phantom, write_phantom

# A 72 kg, 1.68 m woman (the phantom's patient), the manual's formulas with H in cm:
LBM_JAMES_KG = 1.07 * 72 - 148 * (72 / 168) ** 2          # 49.856
IBW_KG = 45.5 + 0.91 * (168 - 152)                          # 60.06
BSA_CM2 = 0.007184 * 168 ** 0.725 * 72 ** 0.425 * 1e4        # 18158.6


def _suv_type(value: str):
    def customize(ds: Dataset, k: int) -> None:
        ds.SUVType = value
    return customize


@pytest.fixture(scope="module")
def tiny() -> Phantom:
    return standard_phantom(small_spec(pet_matrix=40, pet_spacing_mm=6.0, slice_mm=6.0, pet_slices=40))


@pytest.mark.parametrize("stored, grams", [("LBMJAMES128", LBM_JAMES_KG * 1000), ("IBW", IBW_KG * 1000)])
def test_a_gml_image_is_converted_from_its_suv_type(tiny: Phantom, tmp_path: Path, stored: str, grams: float):
    """The gml phantom stores the number 10 in the big sphere; with SUV Type X that number is SUV-X,
    so SUVbw = 10 × weight / X-normaliser, and asking for the stored type gives 10 back unchanged."""
    write_phantom(tiny, tmp_path / "s", "gml", customize=_suv_type(stored))
    big = tiny.spheres[0]
    bw = analyze_dir(tmp_path / "s", threshold=3.0, exclude_physiological=False)
    assert bw.suv.stored_suv_type == ("lbm_james" if stored == "LBMJAMES128" else "ibw")
    assert nearest(bw.lesions, big.center_mm).suv_max == pytest.approx(10.0 * 72000 / grams, rel=1e-4)
    same = analyze_dir(tmp_path / "s", threshold=3.0, suv_type=bw.suv.stored_suv_type)
    assert nearest(same.lesions, big.center_mm).suv_max == pytest.approx(10.0, rel=1e-4)


def test_suv_ibw_from_bqml(tiny: Phantom, tmp_path: Path):
    write_phantom(tiny, tmp_path / "s")
    result = analyze_dir(tmp_path / "s", threshold=3.0, suv_type="ibw")
    assert result.suv.suv_type == "ibw"
    assert nearest(result.lesions, tiny.spheres[0].center_mm).suv_max == pytest.approx(10.0 * IBW_KG / 72, rel=0.005)


@pytest.mark.parametrize("units, value", [("GML", "BSA"), ("CM2ML", "IBW"), ("GML", "SUVMAGIC")])
def test_a_suv_type_that_contradicts_the_units_is_refused(tiny: Phantom, tmp_path: Path, units: str, value: str):
    write_phantom(tiny, tmp_path / "s", units.lower(), customize=_suv_type(value))
    with pytest.raises(InputRefused) as caught:
        analyze_dir(tmp_path / "s")
    assert "SUV Type (0054,1006)" in str(caught.value)


def test_cm2ml_is_suv_bsa_and_converts_to_bw(tiny: Phantom, tmp_path: Path):
    write_phantom(tiny, tmp_path / "s", "cm2ml", customize=_suv_type("BSA"))
    result = analyze_dir(tmp_path / "s", threshold=3.0)
    assert result.suv.stored_suv_type == "bsa"
    assert nearest(result.lesions, tiny.spheres[0].center_mm).suv_max == pytest.approx(10.0, rel=1e-3)
    assert BSA_CM2 == pytest.approx(18158.6, rel=1e-4)


def test_scan_start_is_back_computed_from_frame_reference_time(tiny: Phantom, tmp_path: Path):
    """A post-processed series (SeriesTime 40 min late) whose first frame began 150 s after the time it is
    decay-corrected to: the earliest acquisition would make every SUV 2^(150/T½) − 1 ≈ 1.6 % too high;
    t_ref = t_acq + T_ave − FrameReferenceTime recovers the true start."""
    spec = tiny.spec
    lam = math.log(2) / spec.half_life_s
    t_ave = math.log(lam * 120.0 / (1 - math.exp(-lam * 120.0))) / lam

    def reprocessed(ds: Dataset, k: int) -> None:
        offset = 150.0 + (k // tiny.bed_slices) * tiny.bed_seconds
        acquired = spec.scan_start + timedelta(seconds=offset)
        ds.AcquisitionDate, ds.AcquisitionTime = acquired.strftime("%Y%m%d"), acquired.strftime("%H%M%S.%f")
        ds.SeriesTime = (spec.scan_start + timedelta(minutes=40)).strftime("%H%M%S")
        ds.FrameReferenceTime = f"{(offset + t_ave) * 1000:.3f}"
        ds.ActualFrameDuration = 120000
    write_phantom(tiny, tmp_path / "s", customize=reprocessed)
    result = analyze_dir(tmp_path / "s", threshold=3.0)
    assert result.suv.reference_source == "back_computed_frame_reference_time"
    assert result.suv.reference_datetime == spec.scan_start.isoformat()
    suv_max = nearest(result.lesions, tiny.spheres[0].center_mm).suv_max
    assert suv_max == pytest.approx(10.0, rel=1e-3)
    assert 2 ** (150 / spec.half_life_s) - 1 == pytest.approx(0.016, abs=0.001)   # what the old rule was off by
