"""Stored PET values → SUV, the way a physicist would check it (QIBA rules), or a refusal.

SUV = activity concentration × normaliser / decayed dose, the normaliser being body weight (g), lean
body mass (James 128 or Janmahasatian, g), ideal body weight (g) or body-surface area (Du Bois, cm²),
with the formulas of the IBSI "Comprehensive Manual for SUV Computation" (height in cm there):
LBM James 128 = 1.10 W − 128 (W/H)² (M), 1.07 W − 148 (W/H)² (F); Janmahasatian = 9270 W / (6680 +
216 BMI) (M), 9270 W / (8780 + 244 BMI) (F); IBW = 48.0 + 1.06 (H − 152) (M), 45.5 + 0.91 (H − 152) (F);
BSA = 0.007184 H^0.725 W^0.425 m²; lean and ideal weights need PatientSex M or F (the manual: no
consensus for O, so it is refused, not guessed). Images already in SUV (Units GML or CM2ML) are
converted from the SUV Type (0054,1006) they carry (BW when empty; LBM is Morgan's 120 multiplier),
never assumed to be SUVbw.
Every input that went into the factor is returned in `SuvInputs`; when an input is missing or
contradicts another, `InputRefused` names the attribute instead of a plausible-looking guess.

Reference time (QIBA): SeriesDate/Time, unless it is later than the earliest acquisition date-time
(a post-processed series); then GE's private scan date-time (0009,100d); else, where every slice has
FrameReferenceTime and ActualFrameDuration, the scan start back-computed as the manual gives it:
t_ref = t_acq + T_ave − Δt with T_ave = ln(λT / (1 − e^(−λT))) / λ (T the frame duration, Δt the
frame reference time), when every slice gives the same start within a second; else the earliest
acquisition.
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

SUV_TYPES = ("bw", "lbm_james", "lbm_janmahasatian", "bsa", "ibw")
# SUV Type (0054,1006) of a stored SUV image → our normaliser ("lbm_morgan" only ever describes a stored image)
STORED_SUV_TYPES = {"BW": "bw", "LBM": "lbm_morgan", "LBMJAMES128": "lbm_james", "LBMJANMA": "lbm_janmahasatian",
                    "IBW": "ibw", "BSA": "bsa"}
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


def _lean_or_ideal_kg(suv_type: str, weight: float, height_m: float, sex: str) -> float:
    """Lean body mass (Morgan 120, James 128, Janmahasatian) or ideal body weight, in kg."""
    height_cm = height_m * 100.0
    male = sex == "M"
    if suv_type in ("lbm_james", "lbm_morgan"):
        ratio = (weight / height_cm) ** 2
        kg = (1.10 * weight - (128.0 if suv_type == "lbm_james" else 120.0) * ratio if male
              else 1.07 * weight - 148.0 * ratio)
    elif suv_type == "lbm_janmahasatian":
        bmi = weight / height_m ** 2
        kg = 9270.0 * weight / ((6680.0 + 216.0 * bmi) if male else (8780.0 + 244.0 * bmi))
    else:
        kg = 48.0 + 1.06 * (height_cm - 152.0) if male else 45.5 + 0.91 * (height_cm - 152.0)
    if kg <= 0:
        raise InputRefused("PatientWeight (0010,1030)",
                           f"{weight:g} kg at {height_m:g} m is outside the {suv_type} formula's range; "
                           "use lbm_janmahasatian")
    return kg


def normaliser(suv_type: str, weight: float | None, height_m: float | None, sex: str | None) -> float:
    """The SUV normaliser: grams of body weight, lean body mass or ideal body weight, or cm² of body surface."""
    if weight is None or weight <= 0:
        raise InputRefused("PatientWeight (0010,1030)", "missing or zero; needed for SUV")
    if suv_type == "bw":
        return weight * 1000.0
    if height_m is None or height_m <= 0:
        raise InputRefused("PatientSize (0010,1020)", f"missing or zero; needed for SUV {suv_type}")
    if height_m > 2.8:
        raise InputRefused("PatientSize (0010,1020)", f"{height_m:g} m is not a height in metres")
    if suv_type == "bsa":
        return 0.007184 * weight ** 0.425 * (height_m * 100.0) ** 0.725 * 1e4   # Du Bois, cm²
    if sex not in ("M", "F"):   # the manual: no consensus for O (the mean of both is only a suggestion)
        raise InputRefused("PatientSex (0010,0040)", f"{sex or 'missing'}: SUV {suv_type} needs M or F")
    return _lean_or_ideal_kg(suv_type, weight, height_m, sex) * 1000.0


def stored_suv_type(ds: Dataset, units: str) -> str:
    """Which SUV a GML/CM2ML image already holds, from SUV Type (0054,1006); refused when inconsistent."""
    value = str(ds.get("SUVType", "") or "").strip().upper()
    if units == "CM2ML":
        if value not in ("", "BSA"):
            raise InputRefused("SUV Type (0054,1006)", f"{value} contradicts Units CM2ML (body-surface SUV)")
        return "bsa"
    if not value:
        return "bw"
    if value not in STORED_SUV_TYPES or value == "BSA":
        raise InputRefused("SUV Type (0054,1006)", f"{value!r} is not a SUV type of Units GML "
                                                   f"(BW, LBM, LBMJAMES128, LBMJANMA, IBW)")
    return STORED_SUV_TYPES[value]


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


def back_computed_start(pet: Volume, half_life_s: float) -> datetime | None:
    """Scan start from each slice's acquisition, FrameReferenceTime and ActualFrameDuration (IBSI-SUV).

    t_ref = t_acq + T_ave − Δt, T_ave = ln(λT / (1 − e^(−λT))) / λ; the median over the slices, or None
    when a slice lacks one of the three or the slices disagree by more than a second (a frame reference
    time that does not describe the frames).
    """
    lam = math.log(2.0) / half_life_s
    starts = []
    for ds, acquired, duration_s in zip(pet.slice_datasets, pet.acquisition_datetimes, pet.frame_durations_s):
        reference_ms = _number(ds.get("FrameReferenceTime"))
        if acquired is None or not duration_s or reference_ms is None or pet.frame_numbers is not None:
            return None
        t_ave = math.log(lam * duration_s / (1.0 - math.exp(-lam * duration_s))) / lam
        starts.append(acquired + timedelta(seconds=t_ave - reference_ms / 1000.0))
    if not starts:
        return None
    starts.sort()
    if (starts[-1] - starts[0]).total_seconds() > 1.0:
        return None
    return starts[len(starts) // 2]


def reference_time(ds: Dataset, acquisitions: Sequence[datetime | None],
                   back_computed: datetime | None = None) -> tuple[datetime, str]:
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
    if back_computed is not None:
        return back_computed, "back_computed_frame_reference_time"
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
    stored_type = None
    if units in ("GML", "CM2ML"):
        rp = ds.get("RadiopharmaceuticalInformationSequence", [Dataset()])[0]
        stored_type = stored_suv_type(ds, units)
        if stored_type == suv_type:
            factors = np.ones(n)
        else:   # stored SUV × (normaliser wanted / normaliser stored)
            factors = np.full(n, normaliser(suv_type, weight, height, sex)
                              / normaliser(stored_type, weight, height, sex))
            notes.append(f"stored SUV {stored_type} (SUV Type {ds.get('SUVType') or 'empty: BW'}) "
                         f"converted to SUV {suv_type}")
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
        scale_factor=float(factors[0]) if constant else None, vendor=_vendor(ds), notes=tuple(notes),
        stored_suv_type=stored_type)
    return inputs, factors


def _per_bqml(ds: Dataset, rp: Dataset, pet: Volume, decay: str, notes: list[str]) -> tuple[np.ndarray, _Decay]:
    """Per slice: 1 / (decayed dose in Bq) — SUV per (Bq/ml) per gram of normaliser."""
    dose = _dose(rp, notes)
    half_life = _half_life(rp)
    reference, source = reference_time(ds, pet.acquisition_datetimes, back_computed_start(pet, half_life))
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
