"""SUV through every vendor variant, the QIBA reference-time rule, SUV types, and every refusal."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from neuropetrix.analysis.errors import InputRefused
from tests.analysis.helpers import analyze_dir, nearest
from tests.support.phantom import VARIANTS, Phantom, small_spec, standard_phantom, write_phantom

REFERENCE_SOURCE = {"ge_private_time": "ge_private_scan_datetime", "admin": "admin",
                    "enhanced": "decay_correction_datetime", "gml": None, "cm2ml": None,
                    "none": "each frame's acquisition (decay corrected here)"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_vendor_variant_gives_the_true_suv(variant: str, phantom: Phantom, phantom_dir, tmp_path: Path):
    result = analyze_dir(phantom_dir(variant), threshold=5.5)
    big = phantom.spheres[0]
    lesion = nearest(result.lesions, big.center_mm)
    assert lesion.suv_max == pytest.approx(big.suv, rel=0.005)
    assert result.liver is not None and result.liver.suv_mean == pytest.approx(phantom.liver_suv, rel=0.005)
    assert result.suv.reference_source == REFERENCE_SOURCE.get(variant, "series")
    if variant in ("gml", "cm2ml"):
        assert result.suv.injected_dose_bq is None
    else:
        assert result.suv.injected_dose_bq == pytest.approx(370e6)
        assert result.suv.half_life_s == pytest.approx(6586.2)


def test_repairs_are_recorded(phantom_dir, tmp_path: Path):
    notes = " ".join(analyze_dir(phantom_dir("mbq_dose")).suv.notes)
    assert "RadionuclideTotalDose (0018,1074) 370 read as MBq" in notes
    midnight = analyze_dir(phantom_dir("time_only_midnight")).suv
    assert midnight.injection_datetime == "2026-11-23T23:30:00"
    assert midnight.reference_datetime == "2026-11-24T00:30:00"
    assert any("day before" in note for note in midnight.notes)
    assert "(7053,1009)" in " ".join(analyze_dir(phantom_dir("philips_cnts_activity")).suv.notes)


def test_ge_without_private_time_falls_back_to_the_earliest_acquisition(phantom: Phantom, tmp_path: Path):
    """Without (0009,100d) the QIBA rule takes the earliest acquisition, 90 s after GE's scan start:
    the phantom was decay-corrected to the scan start, so SUV comes out 2^(90/T½) higher."""
    def drop_private(ds: Dataset, k: int) -> None:
        del ds[0x0009, 0x100D]
        del ds[0x0009, 0x0010]
    write_phantom(phantom, tmp_path / "ge", "ge_private_time", customize=drop_private)
    result = analyze_dir(tmp_path / "ge", threshold=5.5)
    assert result.suv.reference_source == "earliest_acquisition"
    expected = phantom.spheres[0].suv * 2 ** (90 / phantom.spec.half_life_s)
    assert nearest(result.lesions, phantom.spheres[0].center_mm).suv_max == pytest.approx(expected, rel=0.001)


def test_suv_types(phantom: Phantom, phantom_dir, tmp_path: Path):
    """A 72 kg, 1.68 m woman: James LBM 49.856 kg, Janmahasatian 44.483 kg, DuBois BSA 1.81586 m²."""
    ratio_to_bw = {"lbm_james": 49.856 / 72, "lbm_janmahasatian": 44.483 / 72, "bsa": 18158.6 / 72000}
    for suv_type, ratio in ratio_to_bw.items():
        result = analyze_dir(phantom_dir(), threshold=5.5 * ratio, suv_type=suv_type)
        lesion = nearest(result.lesions, phantom.spheres[0].center_mm)
        assert result.suv.suv_type == suv_type
        assert lesion.suv_max == pytest.approx(10.0 * ratio, rel=0.005), suv_type
        assert result.liver.suv_mean == pytest.approx(2.0 * ratio, rel=0.005), suv_type


def _drop(item: Dataset, keyword: str) -> None:
    if keyword in item:
        delattr(item, keyword)


def _rp(ds: Dataset) -> Dataset:
    return ds.RadiopharmaceuticalInformationSequence[0]


REFUSALS: dict[str, tuple[Callable[[Dataset, int], None], str, str]] = {
    "no weight": (lambda ds, k: _drop(ds, "PatientWeight"), "bw", "PatientWeight (0010,1030)"),
    "zero weight": (lambda ds, k: setattr(ds, "PatientWeight", "0"), "bw", "PatientWeight (0010,1030)"),
    "no dose": (lambda ds, k: _drop(_rp(ds), "RadionuclideTotalDose"), "bw", "RadionuclideTotalDose (0018,1074)"),
    "no half-life": (lambda ds, k: _drop(_rp(ds), "RadionuclideHalfLife"), "bw", "RadionuclideHalfLife (0018,1075)"),
    "PROPCNTS": (lambda ds, k: setattr(ds, "Units", "PROPCNTS"), "bw", "Units (0054,1001)"),
    "no units": (lambda ds, k: _drop(ds, "Units"), "bw", "Units (0054,1001)"),
    "no ATTN": (lambda ds, k: setattr(ds, "CorrectedImage", ["NORM", "DECY"]), "bw", "CorrectedImage (0028,0051)"),
    "no DECY with START": (lambda ds, k: setattr(ds, "CorrectedImage", ["NORM", "ATTN"]), "bw",
                           "CorrectedImage (0028,0051)"),
    "bad DecayCorrection": (lambda ds, k: setattr(ds, "DecayCorrection", "LATER"), "bw", "DecayCorrection (0054,1102)"),
    "no radiopharmaceutical": (lambda ds, k: _drop(ds, "RadiopharmaceuticalInformationSequence"), "bw",
                               "RadiopharmaceuticalInformationSequence (0054,0016)"),
    "no injection time": (lambda ds, k: (_drop(_rp(ds), "RadiopharmaceuticalStartDateTime"),
                                         _drop(_rp(ds), "RadiopharmaceuticalStartTime")), "bw",
                          "RadiopharmaceuticalStartDateTime (0018,1078)"),
    "long half-life, time only": (lambda ds, k: (_drop(_rp(ds), "RadiopharmaceuticalStartDateTime"),
                                                 setattr(_rp(ds), "RadionuclideHalfLife", "282240")), "bw",
                                  "RadiopharmaceuticalStartDateTime (0018,1078)"),
    "time only, study days before": (lambda ds, k: (_drop(_rp(ds), "RadiopharmaceuticalStartDateTime"),
                                                    setattr(ds, "StudyDate", "20261120")), "bw",
                                     "RadiopharmaceuticalStartDateTime (0018,1078)"),
    "start time contradicts start date-time": (lambda ds, k: setattr(_rp(ds), "RadiopharmaceuticalStartTime",
                                                                     "081500"), "bw",
                                               "RadiopharmaceuticalStartTime (0018,1072)"),
    "injection after the scan": (lambda ds, k: (setattr(_rp(ds), "RadiopharmaceuticalStartDateTime", "20261124110000"),
                                                _drop(_rp(ds), "RadiopharmaceuticalStartTime")),
                                 "bw", "RadiopharmaceuticalStartDateTime (0018,1078)"),
    "CNTS without Philips factors": (lambda ds, k: setattr(ds, "Units", "CNTS"), "bw", "(7053,1000)"),
    "LBM without sex": (lambda ds, k: setattr(ds, "PatientSex", "O"), "lbm_james", "PatientSex (0010,0040)"),
    "BSA without height": (lambda ds, k: _drop(ds, "PatientSize"), "bsa", "PatientSize (0010,1020)"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_missing_or_contradictory_inputs_are_refused_naming_the_attribute(case: str, tmp_path: Path):
    customize, suv_type, attribute = REFUSALS[case]
    tiny = standard_phantom(small_spec(pet_matrix=16, pet_spacing_mm=15.0, pet_slices=4))
    write_phantom(tiny, tmp_path / "study", customize=customize)
    with pytest.raises(InputRefused) as caught:
        analyze_dir(tmp_path / "study", suv_type=suv_type)
    assert attribute in caught.value.attribute
    assert attribute in str(caught.value)


def test_time_only_injection_on_the_same_day(tmp_path: Path):
    tiny = standard_phantom(small_spec(pet_matrix=16, pet_spacing_mm=15.0, pet_slices=4,
                                       injection_time=datetime(2026, 11, 24, 9, 0)))
    write_phantom(tiny, tmp_path / "study", customize=lambda ds, k: _drop(_rp(ds), "RadiopharmaceuticalStartDateTime"))
    suv = analyze_dir(tmp_path / "study").suv
    assert suv.injection_datetime == "2026-11-24T09:00:00"
    assert not any("day before" in note for note in suv.notes)
