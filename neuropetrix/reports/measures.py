"""The measures every report carries, with their codes and units, in one catalogue.

SR, HL7, FHIR and the PDF print the same numbers under the same concepts, so they all take them from
`measures(result)`. Concepts and units follow DICOM PS3.16: the SUV quantity by SUV type (CID 218),
its derivation (CID 7464: Maximum, Mean, Peak Value Within ROI), UCUM units from CID 85 as the current
standard spells them (``g/ml{SUVbw}``; editions before 2020 wrote ``{SUVbw}g/ml``).

A measure is identified by its quantity concept *and* its derivation (TID 1419 / CID 7464: SUVbw with
Maximum, Mean or Peak Value Within ROI); systems that key on one code (HL7 OBX-3, an EHR's Observation
list) get `Measure.code`, a local code per quantity, derivation and SUV type, beside the DICOM concept.
Every value is written as the same decimal (`number`, REPORTED_DIGITS significant digits) in SR, HL7
and FHIR, so no receiver sees 9.999999046325684 where another sees 10.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from pydicom.sr.coding import Code

from neuropetrix.analysis.results import CATEGORIES, AnalysisResult, Lesion
from neuropetrix.reports.errors import require

UCUM = "UCUM"
LOCAL_SYSTEM = "99NPX"       # HL7 local coding scheme of `Measure.code` (FHIR: urn:neuropetrix:measure)
REPORTED_DIGITS = 6          # significant digits of every reported value (SR, HL7, FHIR)

# suv_type → (quantity concept, unit concept)
_SUV = {
    "bw": (Code("126401", "DCM", "SUVbw"),
           Code("g/ml{SUVbw}", UCUM, "Standardized Uptake Value body weight")),
    "lbm_james": (Code("126406", "DCM", "SUVlbm(James128)"),
                  Code("g/ml{SUVlbm(James128)}", UCUM,
                       "Standardized Uptake Value lean body mass (James 128 multiplier)")),
    "lbm_janmahasatian": (Code("126405", "DCM", "SUVlbm(Janma)"),
                          Code("g/ml{SUVlbm(Janma)}", UCUM, "Standardized Uptake Value lean body mass (Janma)")),
    "bsa": (Code("126403", "DCM", "SUVbsa"),
            Code("cm2/ml{SUVbsa}", UCUM, "Standardized Uptake Value body surface area")),
    "ibw": (Code("126404", "DCM", "SUVibw"),
            Code("g/ml{SUVibw}", UCUM, "Standardized Uptake Value ideal body weight")),
}

MAXIMUM = Code("56851009", "SCT", "Maximum")
MEAN = Code("373098007", "SCT", "Mean")
PEAK = Code("126031", "DCM", "Peak Value Within ROI")
STANDARD_DEVIATION = Code("386136009", "SCT", "Standard Deviation")
VOLUME = Code("118565006", "SCT", "Volume")
METABOLIC_VOLUME = Code("126032", "DCM", "Metabolic Volume")
TLG = Code("126033", "DCM", "Total Lesion Glycolysis")
NUMBER_OF_LESIONS = Code("246206008", "SCT", "Number of lesions")
MILLILITER = Code("ml", UCUM, "milliliter")
LESIONS_UNIT = Code("{lesions}", UCUM, "lesions")
LIVER = Code("10200004", "SCT", "Liver")
PERCENT = Code("%", UCUM, "percent")
SCORE_UNIT = Code("{score}", UCUM, "score")
# The response to a prior study: no standard code names a PERCIST category or a change between two
# studies, so these are local codes (99NPX), with the criteria in the code's meaning. The Deauville score
# is SNOMED CT's "Deauville five point scale" (below) in every report.
PERCIST_RESPONSE = Code("percist_category", LOCAL_SYSTEM, "PERCIST 1.0 response category")
SULPEAK_CHANGE = Code("sul_peak_change", LOCAL_SYSTEM, "Change of the hottest lesion's SULpeak")
TMTV_CHANGE = Code("tmtv_change", LOCAL_SYSTEM, "Change of the total MTV since the prior study")
TLG_CHANGE = Code("tlg_change", LOCAL_SYSTEM, "Change of the total TLG since the prior study")
NOT_ASSESSABLE = Code("NA", LOCAL_SYSTEM, "not assessable")
# In the SR (TID 1501 qualitative evaluations) the response is coded as far as standards reach:
# the criteria are the group's Measurement Method (CID 6147 Response Criteria lists RECIST 1.0/1.1, WHO
# and RANO, no PERCIST: a local code); the category is DCM "Current Response" (the concept DICOM uses
# for a time point's response evaluation) with a local value (CID 6143's lesion responses are RECIST's
# anatomical definitions, not PERCIST's metabolic ones); the Deauville score is SNOMED CT "Deauville five
# point scale" valued with the NCI Thesaurus's five points, the codes HL7 mCODE's DeauvilleScale uses.
PERCIST_CRITERIA = Code("PERCIST1.0", LOCAL_SYSTEM, "PERCIST 1.0")
CURRENT_RESPONSE = Code("112048", "DCM", "Current Response")
DEAUVILLE_SCALE = Code("708895006", "SCT", "Deauville five point scale")
DEAUVILLE_POINTS = {score: Code(code, "NCIt", f"London Deauville Criteria Point Scale {score}")
                    for score, code in ((1, "C99728"), (2, "C99747"), (3, "C99748"), (4, "C99749"), (5, "C99750"))}


@dataclass(frozen=True)
class Measure:
    """One number as it is reported: what it is, how it was derived, its unit, and whose it is."""

    key: str                 # suv_max, suv_mean, suv_peak, volume_ml, tlg, tmtv_ml, tlg_total, lesion_count, …
    label: str               # short text for people and HL7 OBX-3 text, e.g. "SUVbw max"
    concept: Code
    derivation: Code | None
    unit: Code
    value: float
    lesion: int | None       # Lesion.label, None for whole-study measures
    site: Code | None = None  # finding site (the liver reference)

    @property
    def observation_id(self) -> str:
        """Stable id of this measure within the study, e.g. "lesion-2/suv_max" or "study/tmtv_ml"."""
        return f"{'study' if self.lesion is None else f'lesion-{self.lesion}'}/{self.key}"

    @property
    def code(self) -> Code:
        """The measure's own code, distinct for each quantity, derivation and SUV type (e.g.
        "suv_max.SUVbw", "liver_suv_sd.SUVbw", "volume_ml"), for receivers that key on one code."""
        annotation = self.unit.value.partition("{")[2].rstrip("}")
        value = f"{self.key}.{annotation}" if annotation.startswith("SUV") else self.key
        return Code(value, LOCAL_SYSTEM, self.label)

    @property
    def reported(self) -> str:
        """The value as every report writes it (`number`)."""
        return number(self.value)

    @property
    def display_unit(self) -> str:
        """The unit for people: UCUM without the annotation braces."""
        code = self.unit.value
        return code.split("{")[0] or code.strip("{}")


def suv_concepts(result: AnalysisResult) -> tuple[Code, Code]:
    """The SUV quantity and its UCUM unit for this analysis's SUV type."""
    require(result.suv.suv_type in _SUV,
            f"unknown SUV type {result.suv.suv_type!r} (known: {', '.join(_SUV)})")
    return _SUV[result.suv.suv_type]


def _tlg_unit(suv_unit: Code) -> Code:
    """SUV × ml: g/ml{SUVbw} × ml = g{SUVbw}. The meaning names the annotation, not the long unit
    meaning, to stay within the 64 characters of a DICOM code meaning for every SUV type."""
    number, _, rest = suv_unit.value.partition("/ml")
    annotation = rest.strip("{}")
    return Code(number + rest, UCUM, f"{annotation} multiplied by milliliter")


def lesion_measures(result: AnalysisResult, lesion: Lesion) -> list[Measure]:
    """SUVmax, SUVmean, SUVpeak, volume and TLG of one lesion."""
    suv, unit = suv_concepts(result)
    name = suv.meaning
    return [
        Measure("suv_max", f"{name} max", suv, MAXIMUM, unit, lesion.suv_max, lesion.label),
        Measure("suv_mean", f"{name} mean", suv, MEAN, unit, lesion.suv_mean, lesion.label),
        Measure("suv_peak", f"{name} peak", suv, PEAK, unit, lesion.suv_peak, lesion.label),
        Measure("volume_ml", "Volume", VOLUME, None, MILLILITER, lesion.volume_ml, lesion.label),
        Measure("tlg", "TLG", TLG, None, _tlg_unit(unit), lesion.tlg, lesion.label),
    ]


def study_measures(result: AnalysisResult) -> list[Measure]:
    """Whole-study totals: lesion count, MTV, TLG, the highest SUVmax and the liver reference."""
    suv, unit = suv_concepts(result)
    name = suv.meaning
    out = [
        Measure("lesion_count", "Lesion count", NUMBER_OF_LESIONS, None, LESIONS_UNIT,
                float(len(result.lesions)), None),
        Measure("tmtv_ml", "Total MTV", METABOLIC_VOLUME, None, MILLILITER, result.tmtv_ml, None),
        Measure("tlg_total", "Total TLG", TLG, None, _tlg_unit(unit), result.tlg_total, None),
    ]
    if result.suv_max is not None:
        out.append(Measure("suv_max", f"{name} max (study)", suv, MAXIMUM, unit, result.suv_max, None))
    if result.liver is not None:
        out += [
            Measure("liver_suv_mean", f"Liver {name} mean", suv, MEAN, unit, result.liver.suv_mean, None, LIVER),
            Measure("liver_suv_sd", f"Liver {name} SD", suv, STANDARD_DEVIATION, unit, result.liver.suv_sd,
                    None, LIVER),
        ]
    return out


def measures(result: AnalysisResult) -> list[Measure]:
    """Every reported number: the study totals, then each lesion's in label order; all finite."""
    labels = [les.label for les in result.lesions]
    require(len(set(labels)) == len(labels), f"lesion labels are not unique: {labels}")
    out = study_measures(result)
    for lesion in sorted(result.lesions, key=lambda les: les.label):
        out += lesion_measures(result, lesion)
    bad = [m.observation_id for m in out if not math.isfinite(m.value)]
    require(not bad, f"measures without a finite value: {', '.join(bad)}")
    return out


def response_measures(result: AnalysisResult) -> list[Measure]:
    """The numbers of the response to a prior study (none without one): SULpeak before, after and its
    change, ΔTMTV, ΔTLG (in the studies' SUV type) and the Deauville score."""
    response = result.response
    if response is None:
        return []
    sul, sul_unit = _SUV[response.sul_type]
    _, unit = suv_concepts(result)
    doc = response.to_json()
    candidates = [
        ("response_sul_peak_before", "SULpeak prior study", sul, PEAK, sul_unit, response.sul_peak_before),
        ("response_sul_peak_after", "SULpeak current study", sul, PEAK, sul_unit, response.sul_peak_after),
        ("response_sul_peak_change", "SULpeak change", SULPEAK_CHANGE, None, PERCENT, response.percent_change),
        ("response_tmtv_change", "Total MTV change", TMTV_CHANGE, None, MILLILITER, doc["delta_tmtv_ml"]),
        ("response_tlg_change", "Total TLG change", TLG_CHANGE, None, _tlg_unit(unit), doc["delta_tlg"]),
        ("deauville_score", "Deauville score (quantitative)", DEAUVILLE_SCALE, None, SCORE_UNIT,
         response.deauville.score),
    ]
    return [Measure(key, label, concept, derivation, unit_code, float(value), None)
            for key, label, concept, derivation, unit_code, value in candidates if value is not None]


def response_category(result: AnalysisResult) -> Code | None:
    """The PERCIST category as a coded value (`NOT_ASSESSABLE` when the pair broke a rule), or None
    without a prior study."""
    response = result.response
    if response is None:
        return None
    if response.category is None:
        return NOT_ASSESSABLE
    return Code(response.category, LOCAL_SYSTEM, CATEGORIES[response.category])


def response_text(result: AnalysisResult, prior: str | None = None) -> str:
    """One sentence on the response for the summary ('' without a prior study); `prior` names the
    prior study for a reader (the PDF), else its Study Instance UID does."""
    response = result.response
    if response is None:
        return ""
    category = response_category(result)
    head = f"{response.criteria} versus {prior or f'prior study {response.prior_study_uid}'}: "
    if response.category is None:
        return head + "not assessable (" + "; ".join(response.not_assessable) + ")."
    change = "" if response.percent_change is None else f", SULpeak {number(response.percent_change)} %"
    return head + f"{response.category} ({category.meaning if category else ''}){change}, " \
        f"{len(response.new_lesions)} new lesion(s)."


def number(value: float, digits: int = REPORTED_DIGITS) -> str:
    """A value as reports print it: `digits` significant digits, never in exponent notation (HL7 NM
    forbids it)."""
    text = format(Decimal(f"{value:.{digits}g}"), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def summary(result: AnalysisResult, prior: str | None = None) -> str:
    """The one-paragraph text summary that HL7, FHIR and the PDF carry beside the numbers; `prior`
    as for `response_text`."""
    suv, unit = suv_concepts(result)
    suv_unit, tlg_unit = unit.value.split("{")[0], _tlg_unit(unit).value.split("{")[0]
    seg = result.segmentation
    method = seg.method if seg.threshold is None else f"{seg.method}, threshold {seg.threshold:g}"
    parts = [f"{len(result.lesions)} lesion(s) segmented"]
    if result.lesions:
        parts.append(f"highest {suv.meaning} max {number(result.suv_max or 0.0)} {suv_unit}")
    parts.append(f"total MTV {number(result.tmtv_ml)} ml, total TLG {number(result.tlg_total)} {tlg_unit}")
    if result.liver is not None:
        parts.append(f"liver {suv.meaning} mean {number(result.liver.suv_mean)} "
                     f"(PERCIST threshold {number(result.liver.percist_threshold)})")
    response = response_text(result, prior)
    return ("; ".join(parts) + f". Method: {seg.algorithm_name} {seg.algorithm_version} ({method}, "
            f"min volume {seg.min_volume_ml:g} ml). {response + ' ' if response else ''}"
            "Automated measurement, to be read by a physician.")
