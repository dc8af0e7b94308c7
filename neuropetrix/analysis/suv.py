"""Stored PET values → SUV, the way a physicist would check it (QIBA rules), or a refusal.

SUV = activity concentration × normaliser / decayed dose, the normaliser being body weight (g), lean
body mass (James or Janmahasatian, g) or body-surface area (DuBois, cm²). Every input that went into
the factor is returned in `SuvInputs`; when an input is missing or contradicts another, `InputRefused`
names the attribute instead of a plausible-looking guess.

Reference time (QIBA): SeriesDate/Time, unless it is later than the earliest acquisition date-time
(a post-processed series); then GE's private scan date-time (0009,100d), else the earliest acquisition.
Decay correction START uses that reference; ADMIN images are already corrected to the injection;
NONE images are corrected here slice by slice from each frame's acquisition start and duration.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from neuropetrix.analysis.dicomtime import parse_date, parse_date_time, parse_dt, parse_time
from neuropetrix.analysis.errors import InputRefused
from neuropetrix.analysis.results import SuvInputs
from neuropetrix.analysis.volumes import Volume

SUV_TYPES = ("bw", "lbm_james", "lbm_janmahasatian", "bsa")
# A dose below this many "Bq" cannot be a PET injection: it was recorded in MBq.
_MBQ_RECORDED_BELOW = 1e5
# Radionuclides this long-lived are imaged days after injection: a time without a date is ambiguous.
_LONG_HALF_LIFE_S = 12 * 3600.0
_GE_CREATOR, _GE_SCAN_DATETIME = "GEMS_PETD_01", 0x0D
_PHILIPS_CREATOR = "Philips PET Private Group"
_PHILIPS_SUV_FACTOR, _PHILIPS_ACTIVITY_FACTOR = 0x00, 0x09
_UCUM_UNITS = {"Bq/ml": "BQML", "{SUVbw}g/ml": "GML", "g/ml": "GML", "{SUVbsa}cm2/ml": "CM2ML",
               "cm2/ml": "CM2ML", "{counts}": "CNTS", "{propcounts}": "PROPCNTS"}


def _private(ds: Dataset, group: int, creator: str, element: int) -> object | None:
    """A private element by its creator (any block), falling back to the usual block 0x10."""
    try:
        block = ds.private_block(group, creator)
    except KeyError:
        elem = ds.get(Tag(group, 0x1000 + element))
        return None if elem is None else elem.value
    return block[element].value if element in block else None


def _number(value: object) -> float | None:
    if value in (None, ""):
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore").strip("\x00 ")
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def units_of(ds: Dataset) -> str:
    """Units (0054,1001), or the UCUM unit of an Enhanced PET's real-world value mapping."""
    units = str(ds.get("Units", "") or "").strip().upper()
    if units:
        return units
    for item in ds.get("RealWorldValueMappingSequence", []):
        for code in item.get("MeasurementUnitsCodeSequence", []):
            if str(code.get("CodeValue", "")) in _UCUM_UNITS:
                return _UCUM_UNITS[str(code.CodeValue)]
    for group in ds.get("SharedFunctionalGroupsSequence", []):
        for rwvm in group.get("RealWorldValueMappingSequence", []):
            for code in rwvm.get("MeasurementUnitsCodeSequence", []):
                if str(code.get("CodeValue", "")) in _UCUM_UNITS:
                    return _UCUM_UNITS[str(code.CodeValue)]
    raise InputRefused("Units (0054,1001)", "missing: cannot tell what the stored PET values measure")


def _corrections(ds: Dataset) -> set[str]:
    """CorrectedImage (0028,0051), or the Enhanced PET YES/NO flags mapped onto its terms."""
    if "CorrectedImage" in ds:
        value = ds.CorrectedImage
        return {str(v).strip().upper() for v in (value if not isinstance(value, str) else [value])}
    flags = {"ATTN": "AttenuationCorrected", "DECY": "DecayCorrected"}
    return {term for term, keyword in flags.items() if str(ds.get(keyword, "")).upper() == "YES"}


def _decay_correction(ds: Dataset) -> str:
    value = str(ds.get("DecayCorrection", "") or "").strip().upper()
    if not value and "DecayCorrected" in ds:
        value = "START" if str(ds.DecayCorrected).upper() == "YES" else "NONE"
    if value not in ("START", "ADMIN", "NONE"):
        raise InputRefused("DecayCorrection (0054,1102)",
                           f"{value or 'missing'}: must be START, ADMIN or NONE")
    return value


def _lbm_kg(suv_type: str, weight: float, height_m: float, sex: str) -> float:
    """Lean body mass: James (1976) or Janmahasatian et al. (2005)."""
    if suv_type == "lbm_james":
        height_cm = height_m * 100.0
        lbm = (1.10 * weight - 128.0 * (weight / height_cm) ** 2 if sex == "M"
               else 1.07 * weight - 148.0 * (weight / height_cm) ** 2)
    else:
        bmi = weight / height_m ** 2
        lbm = 9270.0 * weight / ((6680.0 + 216.0 * bmi) if sex == "M" else (8780.0 + 244.0 * bmi))
    if lbm <= 0:
        raise InputRefused("PatientWeight (0010,1030)",
                           f"{weight:g} kg at {height_m:g} m is outside the James formula's range; "
                           "use lbm_janmahasatian")
    return lbm


def normaliser(suv_type: str, weight: float | None, height_m: float | None, sex: str | None) -> float:
    """The SUV normaliser: grams of body weight or lean body mass, or cm² of body-surface area."""
    if weight is None or weight <= 0:
        raise InputRefused("PatientWeight (0010,1030)", "missing or zero; needed for SUV")
    if suv_type == "bw":
        return weight * 1000.0
    if height_m is None or height_m <= 0:
        raise InputRefused("PatientSize (0010,1020)", f"missing or zero; needed for SUV {suv_type}")
    if height_m > 2.8:
        raise InputRefused("PatientSize (0010,1020)", f"{height_m:g} m is not a height in metres")
    if suv_type == "bsa":
        return 0.007184 * weight ** 0.425 * (height_m * 100.0) ** 0.725 * 1e4   # DuBois, cm²
    if sex not in ("M", "F"):
        raise InputRefused("PatientSex (0010,0040)", f"{sex or 'missing'}: lean body mass needs M or F")
    return _lbm_kg(suv_type, weight, height_m, sex) * 1000.0


def _radiopharmaceutical(ds: Dataset) -> Dataset:
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    if not seq:
        raise InputRefused("RadiopharmaceuticalInformationSequence (0054,0016)", "missing: no dose, no times")
    return seq[0]


def _radionuclide(rp: Dataset) -> str | None:
    codes = rp.get("RadionuclideCodeSequence")
    if codes and "CodeMeaning" in codes[0]:
        return str(codes[0].CodeMeaning)
    return str(rp.Radionuclide) if rp.get("Radionuclide") else None


def _dose(rp: Dataset, notes: list[str]) -> float:
    dose = _number(rp.get("RadionuclideTotalDose"))
    if dose is None or dose <= 0:
        raise InputRefused("RadionuclideTotalDose (0018,1074)", "missing or zero; the injected dose is needed")
    if dose < _MBQ_RECORDED_BELOW:
        notes.append(f"RadionuclideTotalDose (0018,1074) {dose:g} read as MBq (a PET dose in Bq is "
                     f"at least {_MBQ_RECORDED_BELOW:g})")
        dose *= 1e6
    return dose


def _half_life(rp: Dataset) -> float:
    half_life = _number(rp.get("RadionuclideHalfLife"))
    if half_life is None or half_life <= 0:
        raise InputRefused("RadionuclideHalfLife (0018,1075)", "missing or zero; decay cannot be corrected")
    return half_life


def _earliest(datetimes: Sequence[datetime | None]) -> datetime | None:
    known = [d for d in datetimes if d is not None]
    return min(known) if known else None


def reference_time(ds: Dataset, acquisitions: Sequence[datetime | None]) -> tuple[datetime, str]:
    """The decay-correction reference time by the QIBA rule, and where it came from."""
    if "DecayCorrectionDateTime" in ds and parse_dt(ds.DecayCorrectionDateTime):
        return parse_dt(ds.DecayCorrectionDateTime), "decay_correction_datetime"  # type: ignore[return-value]
    series = parse_date_time(ds.get("SeriesDate"), ds.get("SeriesTime"))
    earliest = _earliest(acquisitions)
    if series is not None and (earliest is None or series <= earliest):
        return series, "series"
    ge = parse_dt(_private(ds, 0x0009, _GE_CREATOR, _GE_SCAN_DATETIME))
    if ge is not None:
        return ge, "ge_private_scan_datetime"
    if earliest is not None:
        return earliest, "earliest_acquisition"
    raise InputRefused("SeriesDate/SeriesTime (0008,0021)/(0008,0031)",
                       "missing, and no AcquisitionDate/Time either: no reference time for decay")


def injection_time(ds: Dataset, rp: Dataset, reference: datetime, half_life_s: float,
                   notes: list[str]) -> datetime:
    """RadiopharmaceuticalStartDateTime, or StartTime placed on the day that makes the uptake < 24 h."""
    full = parse_dt(rp.get("RadiopharmaceuticalStartDateTime"))
    time_only = parse_time(rp.get("RadiopharmaceuticalStartTime"))
    if full is not None:
        if time_only is not None:
            apart = abs((datetime.combine(full.date(), time_only) - full).total_seconds())
            if min(apart, 86400 - apart) > 1.0:
                raise InputRefused("RadiopharmaceuticalStartTime (0018,1072)",
                                   f"{time_only} contradicts RadiopharmaceuticalStartDateTime (0018,1078) {full}")
        if full > reference:
            raise InputRefused("RadiopharmaceuticalStartDateTime (0018,1078)",
                               f"{full} is after the reference time {reference}")
        return full
    if time_only is None:
        raise InputRefused("RadiopharmaceuticalStartDateTime (0018,1078)",
                           "missing, and RadiopharmaceuticalStartTime (0018,1072) too: injection time unknown")
    if half_life_s > _LONG_HALF_LIFE_S:
        raise InputRefused("RadiopharmaceuticalStartDateTime (0018,1078)",
                           f"needed: only RadiopharmaceuticalStartTime is given and a radionuclide with a "
                           f"{half_life_s / 3600:.1f} h half-life may be imaged more than 24 h after injection")
    start = datetime.combine(reference.date(), time_only)
    if start > reference:
        start -= timedelta(days=1)
        notes.append("injection (RadiopharmaceuticalStartTime only) placed on the day before the scan")
    study_date = parse_date(ds.get("StudyDate"))
    if study_date is not None and study_date < start.date():
        raise InputRefused("RadiopharmaceuticalStartDateTime (0018,1078)",
                           f"needed: StudyDate {study_date} is before the injection day implied by "
                           "RadiopharmaceuticalStartTime alone, so the uptake may exceed 24 h")
    return start


def _frame_decay(seconds_since_injection: float, duration_s: float | None, half_life_s: float) -> float:
    """Mean fraction of the injected activity left over a frame starting `seconds_since_injection`."""
    lam = math.log(2.0) / half_life_s
    start = math.exp(-lam * seconds_since_injection)
    if not duration_s:
        return start
    return start * (1.0 - math.exp(-lam * duration_s)) / (lam * duration_s)


def _vendor(ds: Dataset) -> str | None:
    return str(ds.Manufacturer) if ds.get("Manufacturer") else None


@dataclass(frozen=True)
class _Decay:
    """The decay inputs of an activity-concentration image, as recorded in `SuvInputs`."""

    dose_bq: float
    half_life_s: float
    injection: datetime
    reference: datetime | None
    source: str


def _check_corrections(ds: Dataset, decay: str) -> None:
    corrections = _corrections(ds)
    if "ATTN" not in corrections:
        raise InputRefused("CorrectedImage (0028,0051)", "lacks ATTN: not attenuation corrected, SUV undefined")
    if decay != "NONE" and "DECY" not in corrections:
        raise InputRefused("CorrectedImage (0028,0051)",
                           f"lacks DECY while DecayCorrection (0054,1102) is {decay}: contradictory")
    if decay == "NONE" and "DECY" in corrections:
        raise InputRefused("DecayCorrection (0054,1102)",
                           "NONE while CorrectedImage (0028,0051) lists DECY: contradictory")


def suv_factors(pet: Volume, suv_type: str) -> tuple[SuvInputs, np.ndarray]:
    """Per-slice factors turning the stored PET values (after rescale) into SUV of `suv_type`."""
    if suv_type not in SUV_TYPES:
        raise InputRefused("analysis.suv_type", f"{suv_type!r} is not one of {', '.join(SUV_TYPES)}")
    ds = pet.header
    units = units_of(ds)
    decay = _decay_correction(ds)
    _check_corrections(ds, decay)
    weight = _number(ds.get("PatientWeight"))
    height = _number(ds.get("PatientSize"))
    sex = str(ds.get("PatientSex", "") or "").strip().upper() or None
    notes: list[str] = []
    n = len(pet.slice_datasets)
    decay_inputs: _Decay | None = None
    if units in ("GML", "CM2ML"):
        rp = ds.get("RadiopharmaceuticalInformationSequence", [Dataset()])[0]
        stored_type = "bw" if units == "GML" else "bsa"
        if stored_type == suv_type:
            factors = np.ones(n)
        else:   # stored SUV × (normaliser wanted / normaliser stored)
            factors = np.full(n, normaliser(suv_type, weight, height, sex)
                              / normaliser(stored_type, weight, height, sex))
            notes.append(f"stored SUV{stored_type} converted to SUV {suv_type}")
    elif units in ("BQML", "CNTS"):
        rp = _radiopharmaceutical(ds)
        norm = normaliser(suv_type, weight, height, sex)
        per_bqml, decay_inputs = _per_bqml(ds, rp, pet, decay, notes)
        if units == "BQML":
            factors = norm * per_bqml
        else:
            factors = _philips_cnts(pet, norm, weight, per_bqml, notes)  # type: ignore[arg-type]
    elif units == "PROPCNTS":
        raise InputRefused("Units (0054,1001)", "PROPCNTS (proportional to counts) cannot be turned into SUV")
    else:
        raise InputRefused("Units (0054,1001)", f"{units!r} is not a unit SUV can be computed from")

    constant = bool(np.allclose(factors, factors[0], rtol=1e-9, atol=0))
    inputs = SuvInputs(
        suv_type=suv_type, units=units, decay_correction=decay, radionuclide=_radionuclide(rp),
        half_life_s=decay_inputs.half_life_s if decay_inputs else _number(rp.get("RadionuclideHalfLife")),
        injected_dose_bq=decay_inputs.dose_bq if decay_inputs else None,
        injection_datetime=decay_inputs.injection.isoformat() if decay_inputs else None,
        reference_datetime=decay_inputs.reference.isoformat() if decay_inputs and decay_inputs.reference else None,
        reference_source=decay_inputs.source if decay_inputs else None,
        patient_weight_kg=weight, patient_height_m=height, patient_sex=sex,
        scale_factor=float(factors[0]) if constant else None, vendor=_vendor(ds), notes=tuple(notes))
    return inputs, factors


def _per_bqml(ds: Dataset, rp: Dataset, pet: Volume, decay: str, notes: list[str]) -> tuple[np.ndarray, _Decay]:
    """Per slice: 1 / (decayed dose in Bq) — SUV per (Bq/ml) per gram of normaliser."""
    dose = _dose(rp, notes)
    half_life = _half_life(rp)
    reference, source = reference_time(ds, pet.acquisition_datetimes)
    injected = injection_time(ds, rp, reference, half_life, notes)
    n = len(pet.slice_datasets)
    if decay == "ADMIN":
        return np.full(n, 1.0 / dose), _Decay(dose, half_life, injected, injected, "admin")
    if decay == "START":
        factor = 1.0 / (dose * 2.0 ** (-(reference - injected).total_seconds() / half_life))
        return np.full(n, factor), _Decay(dose, half_life, injected, reference, source)
    out = np.empty(n)
    for k, (start, duration) in enumerate(zip(pet.acquisition_datetimes, pet.frame_durations_s)):
        if start is None:
            raise InputRefused("AcquisitionDate/AcquisitionTime (0008,0022)/(0008,0032)",
                               f"missing on slice {k} of a DecayCorrection NONE series: decay unknown")
        out[k] = 1.0 / (dose * _frame_decay((start - injected).total_seconds(), duration, half_life))
    return out, _Decay(dose, half_life, injected, _earliest(pet.acquisition_datetimes),
                       "each frame's acquisition (decay corrected here)")


def _philips_cnts(pet: Volume, norm: float, weight: float, per_bqml: np.ndarray,
                  notes: list[str]) -> np.ndarray:
    """Philips CNTS: SUV scale factor (7053,1000) per slice, else activity concentration factor (7053,1009)."""
    out = np.empty(len(pet.slice_datasets))
    for k, ds in enumerate(pet.slice_datasets):
        suv_factor = _number(_private(ds, 0x7053, _PHILIPS_CREATOR, _PHILIPS_SUV_FACTOR))
        activity = _number(_private(ds, 0x7053, _PHILIPS_CREATOR, _PHILIPS_ACTIVITY_FACTOR))
        if suv_factor:
            out[k] = suv_factor * norm / (weight * 1000.0)    # the factor gives SUVbw
        elif activity:
            out[k] = activity * norm * per_bqml[k]
        else:
            raise InputRefused("Philips SUV scale factor (7053,1000)",
                               "Units CNTS without (7053,1000) or activity concentration factor (7053,1009)")
    notes.append("Philips CNTS: " + ("SUV scale factor (7053,1000)" if _number(_private(
        pet.header, 0x7053, _PHILIPS_CREATOR, _PHILIPS_SUV_FACTOR)) else "activity concentration factor (7053,1009)"))
    return out
