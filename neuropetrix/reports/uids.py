"""Deterministic UIDs: the same analysis of the same series gets the same object UIDs on every run.

A PACS keys instances by SOP Instance UID and a FHIR server by identifier, so a re-run of one analysis
replaces what it sent before instead of adding a second copy beside it. A different method, threshold,
SUV type, model file or algorithm version, or a different set of PET images (a study that received
more slices), is a different analysis and gets new UIDs.
"""
from __future__ import annotations

import hashlib
import uuid
from pathlib import PurePath

from neuropetrix import dicom_uids
from neuropetrix.analysis.results import AnalysisResult


def analysis_key(result: AnalysisResult) -> list[str]:
    """Everything that makes two runs "the same analysis": the same images (a study that received
    more slices is a new analysis, whose objects get new UIDs as DICOM requires for new content, and
    whose ORU a HBYS must not drop as a duplicate) measured the same way."""
    seg = result.segmentation
    model = PurePath(seg.model_file).name if seg.model_file else ""
    images = hashlib.sha256("\\".join(sorted(set(result.pet_sop_instance_uids))).encode()).hexdigest()
    return [result.study_instance_uid, result.pet_series_instance_uid, images, result.suv.suv_type, seg.method,
            repr(seg.threshold), repr(seg.seed_threshold), repr(seg.min_volume_ml), seg.algorithm_name,
            seg.algorithm_version, model]


def derived_uid(result: AnalysisResult, *purpose: str) -> str:
    """A DICOM UID for one object or item of this analysis, e.g. ("seg", "series") or ("lesion", "3")."""
    return dicom_uids.derived_uid(*analysis_key(result), *purpose)


def derived_uuid(result: AnalysisResult, *purpose: str) -> uuid.UUID:
    """A UUID for FHIR fullUrls and HL7 control ids, stable in the same way as `derived_uid`."""
    return uuid.uuid5(uuid.NAMESPACE_OID, derived_uid(result, *purpose))
