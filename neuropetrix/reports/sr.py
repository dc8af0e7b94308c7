"""Comprehensive 3D SR following TID 1500 (Measurement Report), built with highdicom.

One TID 1411 volumetric group per lesion, referencing its SEG segment and sharing its tracking UID, with
SUVmax, SUVmean, SUVpeak, volume and TLG; one TID 1501 group with the study totals (lesion count, MTV,
TLG, highest SUVmax) and, when measured, one for the PERCIST liver reference. Viewers that read TID 1500
(OHIF, 3D Slicer) pair each group with its segment through the Referenced Segment item. The Image
Library (TID 1600) lists the PET images the measurements were made on: OHIF's SR handler needs it
(not yet for an Enhanced PET, see build_sr); reports/imagelibrary.py builds it without highdicom's
per-image cost.
With a response to a prior study, two more TID 1501 groups, each with its TID 1502 time point: the prior's
target SULpeak, total MTV and TLG, from the slice of its target lesion; and the response — the current
target SULpeak, its change in %, ΔTMTV and ΔTLG as numbers with UCUM units, the PERCIST category and the
Deauville score as qualitative evaluations (codes: reports/measures.py), PERCIST 1.0 as the group's
method. The prior's PET images are the SR's Pertinent Other Evidence.
Each value is the reported decimal (`Measure.reported`), the same digits HL7 and FHIR carry.
"""
from __future__ import annotations

from datetime import datetime

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage

from neuropetrix.analysis.response import Response
from neuropetrix.analysis.results import AnalysisResult
from neuropetrix.reports.comparison import PriorStudy, check_prior, hottest_slice
from neuropetrix.reports.errors import require
from neuropetrix.reports.imagelibrary import add_image_library
from neuropetrix.reports.measures import (
    CURRENT_RESPONSE,
    DEAUVILLE_POINTS,
    DEAUVILLE_SCALE,
    LIVER,
    LOCAL_SYSTEM,
    PERCIST_CRITERIA,
    Measure,
    lesion_measures,
    measures,
    response_category,
    response_measures,
    study_measures,
)
from neuropetrix.reports.seg import MANUFACTURER, lesion_tracking_uid, software_version
from neuropetrix.reports.source import StudyInfo, procedure_code
from neuropetrix.reports.stamp import settle_charset, stamp_created
from neuropetrix.reports.uids import derived_uid
from neuropetrix.reports.version import AUTOMATIC, ResultVersion

SERIES_NUMBER = 902
LOCAL_SCHEME = CodingSchemeIdentificationItem(
    designator=LOCAL_SYSTEM, name="NeuroPETRIX local codes", responsible_organization="NeuroPETRIX")


def sr_instance_uid(result: AnalysisResult) -> str:
    """The SR's SOP Instance UID, which also identifies the FHIR DiagnosticReport of the same analysis."""
    return derived_uid(result, "sr", "instance")


def _algorithm(result: AnalysisResult) -> hd.sr.AlgorithmIdentification:
    seg = result.segmentation
    return hd.sr.AlgorithmIdentification(name=seg.algorithm_name, version=seg.algorithm_version)


def _measurement(m: Measure, algorithm: hd.sr.AlgorithmIdentification | None) -> hd.sr.Measurement:
    """A TID 300 measurement of the reported decimal: pydicom would format 9.999999999999998 as the
    17-character DS "10.00000000000000", which dciodvfy rejects; the reported value always fits."""
    return hd.sr.Measurement(name=m.concept, value=float(m.reported), unit=m.unit, derivation=m.derivation,
                             algorithm_id=algorithm)


def _predecessor(result: AnalysisResult, sr_uid: str) -> Dataset:
    """The earlier version this SR replaces: same study and SR series, its own instance."""
    ds = Dataset()
    ds.SOPClassUID = Comprehensive3DSRStorage
    ds.SOPInstanceUID = sr_uid
    ds.StudyInstanceUID = result.study_instance_uid
    ds.SeriesInstanceUID = derived_uid(result, "sr", "series")
    return ds


def _source_image(result: AnalysisResult, datasets: list[Dataset],
                  label: int | None) -> list[hd.sr.SourceImageForMeasurementGroup]:
    """The image (and frame) holding lesion `label`'s hottest voxel; none without a lesion."""
    if label is None:
        return []
    require(result.suv_volume is not None, "the analysis has no SUV volume to find the target's slice in")
    k = hottest_slice(result.label_map, np.asarray(result.suv_volume), label)
    frames = None if result.pet_frame_numbers is None else [result.pet_frame_numbers[k]]
    return [hd.sr.SourceImageForMeasurementGroup(str(datasets[k].SOPClassUID), str(datasets[k].SOPInstanceUID),
                                                 referenced_frame_numbers=frames)]


def _response_groups(result: AnalysisResult, response: Response, pet_datasets: list[Dataset], prior: PriorStudy,
                     algorithm: hd.sr.AlgorithmIdentification) -> list:
    """The prior time point's numbers and the response (see the module's docstring)."""
    changes = {m.key: m for m in response_measures(result)}
    before = [changes[k] for k in ("response_sul_peak_before",) if k in changes]
    before += [m for m in study_measures(prior.result) if m.key in ("tmtv_ml", "tlg_total")]
    after = [changes[k] for k in ("response_sul_peak_after", "response_sul_peak_change", "response_tmtv_change",
                                  "response_tlg_change") if k in changes]
    category = response_category(result)
    evaluations = [hd.sr.QualitativeEvaluation(CURRENT_RESPONSE, category)] if category is not None else []
    if response.deauville.score is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(DEAUVILLE_SCALE, DEAUVILLE_POINTS[response.deauville.score]))
    return [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=derived_uid(result, "sr", "prior"),
                                                         identifier=f"Prior study {prior.study_date}"),
            time_point_context=hd.sr.TimePointContext(time_point=f"prior study {prior.study_date}"),
            algorithm_id=algorithm, measurements=[_measurement(m, algorithm) for m in before],
            source_images=_source_image(prior.result, prior.pet_datasets, response.target_before)),
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=derived_uid(result, "sr", "response"),
                                                         identifier=f"Response to prior study ({response.criteria})"),
            time_point_context=hd.sr.TimePointContext(time_point="current study"),
            method=PERCIST_CRITERIA, algorithm_id=algorithm,
            measurements=[_measurement(m, algorithm) for m in after], qualitative_evaluations=evaluations,
            source_images=_source_image(result, pet_datasets, response.target_after)),
    ]


def build_sr(result: AnalysisResult, pet_datasets: list[Dataset], info: StudyInfo,
             seg: Dataset | None, now: datetime | None = None,
             version: ResultVersion = AUTOMATIC, prior: PriorStudy | None = None) -> hd.sr.Comprehensive3DSR:
    """The measurement report, created `now` (default: the clock); `seg` is the SEG the lesion groups
    reference (None only without lesions). `version`: preliminary is PARTIAL and UNVERIFIED; a signed
    version is COMPLETE and VERIFIED by its signer, with the version it replaces in
    PredecessorDocumentsSequence. `prior` is the study `result.response` compares with: required when
    there is a response, so the SR references what it was compared with."""
    require(pet_datasets, "no PET datasets were given")
    require(result.response is None or prior is not None,
            "the analysis has a response to a prior study but the prior study was not given")
    check_prior(result, prior)
    require(seg is not None or not result.lesions,
            "lesions without a SEG: each lesion's measurement group must reference its segment")
    measures(result)   # refuses non-finite values and duplicate labels before anything is built
    algorithm = _algorithm(result)
    groups: list = []
    if seg is not None:
        segment_by_tracking = {str(s.TrackingUID): int(s.SegmentNumber) for s in seg.SegmentSequence}
        for lesion in sorted(result.lesions, key=lambda les: les.label):
            tracking = lesion_tracking_uid(result, lesion.label)
            require(tracking in segment_by_tracking, f"the SEG has no segment for lesion {lesion.label}")
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking, identifier=f"Lesion {lesion.label}"),
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                    segment_number=segment_by_tracking[tracking],
                    source_series=hd.sr.SourceSeriesForSegmentation(result.pet_series_instance_uid)),
                finding_type=codes.SCT.Lesion,
                finding_category=codes.SCT.MorphologicallyAbnormalStructure,
                algorithm_id=algorithm,
                measurements=[_measurement(m, algorithm) for m in lesion_measures(result, lesion)],
            ))
    totals = [m for m in study_measures(result) if m.site is None]
    groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=derived_uid(result, "sr", "totals"),
                                                     identifier="Whole-body totals"),
        algorithm_id=algorithm,
        measurements=[_measurement(m, algorithm) for m in totals],
    ))
    if result.liver is not None:
        liver = [m for m in study_measures(result) if m.site is not None]
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=derived_uid(result, "sr", "liver"),
                                                         identifier="Liver reference (PERCIST)"),
            finding_sites=[hd.sr.FindingSite(LIVER)],
            measurements=[_measurement(m, None) for m in liver],
        ))
    if prior is not None and result.response is not None:
        groups += _response_groups(result, result.response, pet_datasets, prior, algorithm)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derived_uid(result, "device"), name=MANUFACTURER, manufacturer_name=MANUFACTURER,
            model_name=result.segmentation.algorithm_name))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=procedure_code(info),
        imaging_measurements=groups,
    )
    evidence = list(pet_datasets) + ([seg] if seg is not None else []) + (prior.pet_datasets if prior else [])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=derived_uid(result, "sr", "series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=derived_uid(result, "sr", "instance", *version.uid_suffix),
        instance_number=version.version,
        manufacturer=MANUFACTURER,
        is_complete=version.status != "preliminary",
        is_final=version.status != "preliminary",
        is_verified=version.verified,
        verifying_observer_name=None if version.signer is None else version.signer.person_name,
        verifying_organization=None if version.signer is None else version.signer.organisation or "unknown",
        previous_versions=None if version.predecessor_sr_uid is None else [
            _predecessor(result, version.predecessor_sr_uid)],
        institution_name=info.institution_name,
        series_description="NeuroPETRIX PET measurements",
        software_versions=software_version(result),
        coding_schemes=[LOCAL_SCHEME] if prior is not None else None,
    )
    # highdicom describes single-frame images only (it reads PixelSpacing at the top level); an
    # Enhanced PET's SR goes without the library. Added after the SR is built (see imagelibrary).
    if result.pet_frame_numbers is None:
        add_image_library(sr, pet_datasets)
    stamp_created(sr, info.study_datetime.tzinfo, now)
    settle_charset(sr, pet_datasets[0].get("SpecificCharacterSet"))
    return sr

