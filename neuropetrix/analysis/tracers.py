"""Which organs a tracer shows normally: the physiological-uptake profile chosen from the radiopharmaceutical.

A profile names the organs whose uptake is expected physiology for that tracer, so they are reported
apart from lesions. The rules that find an organ without a segmentation model (analysis/physiology.py)
exist for FDG's organs; any other organ of a profile (PSMA's salivary glands, liver, spleen, bowel)
is recognised only from a site's organ label map, and the analysis says so.
"""
from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset


@dataclass(frozen=True)
class TracerProfile:
    name: str                              # "FDG", "PSMA"
    organs: tuple[str, ...]                # canonical organ names (see ORGAN_NAMES)
    codes: tuple[str, ...]                 # SNOMED CT codes of RadiopharmaceuticalCodeSequence
    words: tuple[str, ...]                 # lower-case fragments of the radiopharmaceutical's name


FDG = TracerProfile("FDG", ("brain", "myocardium", "urinary_bladder", "kidney", "ureter"),
                    ("35321007", "C-B1031"), ("fluorodeoxyglucose", "fdg"))
PSMA = TracerProfile("PSMA", ("kidney", "ureter", "urinary_bladder", "salivary_gland", "lacrimal_gland",
                              "liver", "spleen", "bowel"),
                     (), ("psma", "piflufolastat", "dcfpyl", "gozetotide"))   # matched by name
PROFILES = (FDG, PSMA)

# Organ label names as segmentation tools write them → the canonical organ they belong to.
ORGAN_NAMES = {
    "brain": "brain",
    "heart": "myocardium", "heart_myocardium": "myocardium", "myocardium": "myocardium",
    "urinary_bladder": "urinary_bladder", "bladder": "urinary_bladder",
    "kidney_left": "kidney", "kidney_right": "kidney", "kidney": "kidney", "kidneys": "kidney",
    "ureter": "ureter", "ureter_left": "ureter", "ureter_right": "ureter",
    "parotid_gland_left": "salivary_gland", "parotid_gland_right": "salivary_gland",
    "submandibular_gland_left": "salivary_gland", "submandibular_gland_right": "salivary_gland",
    "salivary_glands": "salivary_gland",
    "lacrimal_gland_left": "lacrimal_gland", "lacrimal_gland_right": "lacrimal_gland",
    "liver": "liver", "spleen": "spleen",
    "small_bowel": "bowel", "colon": "bowel", "duodenum": "bowel", "bowel": "bowel",
    "aorta": "aorta",
}


def _texts(ds: Dataset) -> tuple[list[str], list[str]]:
    codes, words = [], []
    for item in ds.get("RadiopharmaceuticalInformationSequence", []) or []:
        if item.get("Radiopharmaceutical"):
            words.append(str(item.Radiopharmaceutical).lower())
        for code in item.get("RadiopharmaceuticalCodeSequence", []) or []:
            codes.append(str(code.get("CodeValue", "")))
            words.append(str(code.get("CodeMeaning", "")).lower())
    return codes, words


def profile_for(ds: Dataset) -> TracerProfile | None:
    """The profile of the study's radiopharmaceutical (code first, then name), or None when unknown."""
    codes, words = _texts(ds)
    for profile in PROFILES:
        if any(code in profile.codes for code in codes):
            return profile
    for profile in PROFILES:
        if any(fragment in word for word in words for fragment in profile.words):
            return profile
    return None
