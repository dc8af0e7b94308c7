"""FHIR R4 transaction Bundle: DiagnosticReport, one Observation per measure, ImagingStudy, Patient.

Built and validated with fhir.resources' R4B models (FHIR 4.3.0, pydantic 2): fhir.resources 8 speaks R5
by default, and no pydantic-2 package models 4.0.1 exactly. Only elements that R4 (4.0.1) and R4B share
are used, so the JSON is R4 as the hospitals speak it (the tests check it against the R4 JSON Schema too).
Entries reference each other by urn:uuid fullUrls derived from the analysis, and each request is
conditional on a business identifier, so posting a re-run updates instead of duplicating:
Patient and ImagingStudy are created only if absent (they belong to the hospital and the PACS),
the DiagnosticReport and Observations are updated in place by their identifiers. A conditional URL is
the resource's own identifier as a token, FHIR-escaped (\\| \\, \\$ \\\\) and percent-encoded, so a Patient
ID such as `2024/17 A+B&C` is searched as itself and not as another identifier plus a stray parameter.
The Patient identifier is in the national-ID system only when it is a valid T.C. Kimlik No (type NI);
other Patient IDs are hospital record numbers (type MR) in the site's record-number system.
Each Observation's code has the measure's own coding first (`urn:neuropetrix:measure`, one per quantity,
derivation and SUV type) and the DICOM concept second; `method` keeps the CID 7464 derivation.
"""
from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from neuropetrix.analysis.results import AnalysisResult
from neuropetrix.config.settings import HbysSettings
from neuropetrix.reports.errors import ReportError, require
from neuropetrix.reports.measures import (
    LOCAL_SYSTEM,
    PERCIST_RESPONSE,
    Measure,
    lesion_measures,
    measures,
    response_category,
    response_measures,
    summary,
)
from neuropetrix.reports.seg import lesion_tracking_uid
from neuropetrix.reports.source import StudyInfo, procedure_code
from neuropetrix.reports.sr import sr_instance_uid
from neuropetrix.reports.uids import derived_uuid
from neuropetrix.reports.version import AUTOMATIC, ResultVersion

SYSTEMS = {"DCM": "http://dicom.nema.org/resources/ontology/DCM", "SCT": "http://snomed.info/sct",
           "LN": "http://loinc.org", "UCUM": "http://unitsofmeasure.org", LOCAL_SYSTEM: "urn:neuropetrix:measure"}
DICOM_UID = "urn:dicom:uid"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
OBSERVATION_ID_SYSTEM = "urn:neuropetrix:observation"   # value: "<SR SOP Instance UID>/<observation id>"


def _coding(value: str, scheme: str, meaning: str) -> dict[str, str]:
    return {"system": SYSTEMS[scheme], "code": value, "display": meaning}


def _oid(uid: str) -> str:
    return f"urn:oid:{uid}"


def _token(value: str) -> str:
    """A token search value part, FHIR-escaped: a backslash, `|`, `,` and `$` are literal only escaped."""
    for char in ("\\", "|", ",", "$"):
        value = value.replace(char, "\\" + char)
    return value


def identifier_query(system: str, value: str) -> str:
    """`identifier=system|value` as a query string a server decodes back to exactly this identifier."""
    return "identifier=" + quote(f"{_token(system)}|{_token(value)}", safe="")


def _gender(sex: str | None) -> str:
    return {"M": "male", "F": "female", "O": "other"}.get(sex or "", "unknown")


def _observation(result: AnalysisResult, m: Measure, report_uid: str, patient: str, study: str,
                 effective: str, status: str) -> dict[str, Any]:
    code = {"coding": [_coding(m.code.value, m.code.scheme_designator, m.code.meaning),
                       _coding(m.concept.value, m.concept.scheme_designator, m.concept.meaning)],
            "text": m.label if m.lesion is None else f"Lesion {m.lesion} {m.label}"}
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": OBSERVATION_ID_SYSTEM, "value": f"{report_uid}/{m.observation_id}"}],
        "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "imaging", "display": "Imaging"}]}],
        "code": code,
        "subject": {"reference": patient},
        "effectiveDateTime": effective,
        "valueQuantity": {"value": Decimal(m.reported), "unit": m.display_unit, "system": SYSTEMS["UCUM"],
                          "code": m.unit.value},
        "derivedFrom": [{"reference": study}],
    }
    if m.derivation is not None:
        obs["method"] = {"coding": [_coding(m.derivation.value, m.derivation.scheme_designator,
                                            m.derivation.meaning)]}
    if m.site is not None:
        obs["bodySite"] = {"coding": [_coding(m.site.value, m.site.scheme_designator, m.site.meaning)]}
    if m.lesion is not None:
        tracking = lesion_tracking_uid(result, m.lesion)
        obs["focus"] = [{"identifier": {"system": DICOM_UID, "value": _oid(tracking)},
                         "display": f"Lesion {m.lesion} (tracking UID {tracking})"}]
    return obs


def _response_observation(result: AnalysisResult, report_uid: str, patient: str, study: str, effective: str,
                          status: str) -> dict[str, Any] | None:
    """The PERCIST category as an Observation derived from this study and the prior one (None without one)."""
    category, response = response_category(result), result.response
    if category is None or response is None:
        return None
    return {
        "resourceType": "Observation",
        "identifier": [{"system": OBSERVATION_ID_SYSTEM, "value": f"{report_uid}/study/response_category"}],
        "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "imaging", "display": "Imaging"}]}],
        "code": {"coding": [_coding(PERCIST_RESPONSE.value, LOCAL_SYSTEM, PERCIST_RESPONSE.meaning)],
                 "text": response.criteria},
        "subject": {"reference": patient},
        "effectiveDateTime": effective,
        "valueCodeableConcept": {"coding": [_coding(category.value, LOCAL_SYSTEM, category.meaning)],
                                 "text": category.meaning},
        "note": [{"text": reason} for reason in response.not_assessable] or None,
        "derivedFrom": [{"reference": study},
                        {"type": "ImagingStudy", "identifier": {"system": DICOM_UID,
                                                                "value": _oid(response.prior_study_uid)},
                         "display": "prior study"}],
    }


def build_bundle(result: AnalysisResult, info: StudyInfo, settings: HbysSettings, sop_classes: Mapping[str, str],
                 pdf: bytes | None = None, now: datetime | None = None,
                 version: ResultVersion = AUTOMATIC, prior: str | None = None) -> Bundle:
    """The transaction Bundle, validated by fhir.resources (R4B models); `pdf` goes into presentedForm,
    `now` (default: the clock, in the study's zone) is the report's `issued`.
    `sop_classes`: SOP Class UID of each PET instance (PET, Enhanced PET, Legacy Converted), as stored.
    `version` gives the status (preliminary, final, amended); every version updates the same
    DiagnosticReport and Observations, identified by the analysis. `prior` names the prior study of a
    response in the conclusion (PriorStudy.description), as the PDF does."""
    values = measures(result) + response_measures(result)
    zone = info.study_datetime.tzinfo
    now = (now or datetime.now(zone)).astimezone(zone).replace(microsecond=0)
    require(result.pet_sop_instance_uids, "no PET instances: the ImagingStudy would be empty")
    instances = list(dict.fromkeys(result.pet_sop_instance_uids))    # an Enhanced PET: one instance, many frames
    require(all(uid in sop_classes for uid in instances), "the SOP Class UID of a PET instance is not known")
    report_uid = sr_instance_uid(result)
    patient_url = f"urn:uuid:{derived_uuid(result, 'fhir', 'patient')}"
    study_url = f"urn:uuid:{derived_uuid(result, 'fhir', 'imagingstudy')}"
    report_url = f"urn:uuid:{derived_uuid(result, 'fhir', 'report')}"
    effective = info.study_datetime.isoformat()
    id_type = ({"coding": [{"system": V2_0203, "code": "NI", "display": "National unique individual identifier"}]}
               if info.is_tckn else {"coding": [{"system": V2_0203, "code": "MR", "display": "Medical record number"}]})
    patient_system = settings.patient_id_system if info.is_tckn else settings.patient_record_system
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"type": id_type, "system": patient_system, "value": info.patient_id}],
        "name": [{"family": info.patient_family_name, "given": [info.patient_given_name] if info.patient_given_name
                  else None, "text": info.patient_name_display}],
        "gender": _gender(info.patient_sex),
    }
    if info.patient_birth_date and len(info.patient_birth_date) == 8:
        d = info.patient_birth_date
        patient["birthDate"] = f"{d[:4]}-{d[4:6]}-{d[6:]}"
    accession = {"type": {"coding": [{"system": V2_0203, "code": "ACSN", "display": "Accession ID"}]},
                 "value": info.accession_number}
    study = {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": DICOM_UID, "value": _oid(result.study_instance_uid)}, accession],
        "status": "available",
        "subject": {"reference": patient_url},
        "started": effective,
        # The study's CT instances are not counted here: without them the total would be wrong.
        "numberOfSeries": 1 if result.ct_series_instance_uid is None else 2,
        "numberOfInstances": len(instances) if result.ct_series_instance_uid is None else None,
        "description": info.study_description,
        "series": [{
            "uid": result.pet_series_instance_uid,
            "modality": {"system": SYSTEMS["DCM"], "code": "PT", "display": "Positron emission tomography"},
            "numberOfInstances": len(instances),
            "instance": [{"uid": uid, "sopClass": {"system": "urn:ietf:rfc:3986",
                                                   "code": f"urn:oid:{sop_classes[uid]}"},
                          "number": k + 1} for k, uid in enumerate(instances)],
        }, *([] if result.ct_series_instance_uid is None else [{
            "uid": result.ct_series_instance_uid,
            "modality": {"system": SYSTEMS["DCM"], "code": "CT", "display": "Computed Tomography"},
        }])],
    }
    observations = [(f"urn:uuid:{derived_uuid(result, 'fhir', 'obs', m.observation_id)}",
                     _observation(result, m, report_uid, patient_url, study_url, effective,
                                  version.fhir_status)) for m in values]
    response = _response_observation(result, report_uid, patient_url, study_url, effective, version.fhir_status)
    if response is not None:
        observations.append((f"urn:uuid:{derived_uuid(result, 'fhir', 'obs', 'study/response_category')}", response))
    # a lesion the physician took out keeps its identifiers: what an earlier version posted is withdrawn
    withdrawn = [(f"urn:uuid:{derived_uuid(result, 'fhir', 'obs', m.observation_id)}",
                  _observation(result, m, report_uid, patient_url, study_url, effective, "entered-in-error"))
                 for lesion in version.withdrawn for m in lesion_measures(result, lesion)]
    procedure = procedure_code(info)
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": DICOM_UID, "value": _oid(report_uid)}, accession],
        "status": version.fhir_status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "NMS",
                                  "display": "Nuclear Medicine Scan"}]}],
        "code": {"coding": [_coding("18748-4", "LN", "Diagnostic imaging study"),
                            _coding(procedure.value, procedure.scheme_designator, procedure.meaning)],
                 "text": info.study_description or procedure.meaning},
        "subject": {"reference": patient_url},
        "effectiveDateTime": effective,
        "issued": now.isoformat(),
        "result": [{"reference": url} for url, _ in observations],
        "imagingStudy": [{"reference": study_url}],
        "conclusion": summary(result, prior) + (f" Impression: {version.impression}" if version.impression else ""),
    }
    if version.signer is not None:
        report["resultsInterpreter"] = [{"display": version.signer.display_name or version.signer.username}]
    if info.placer_order_number:             # the HBYS's order: a logical ServiceRequest reference
        report["basedOn"] = [{"type": "ServiceRequest", "identifier": {
            "type": {"coding": [{"system": V2_0203, "code": "PLAC", "display": "Placer Identifier"}]},
            "value": info.placer_order_number,
            "assigner": {"display": info.placer_authority}},
            "display": f"filler order {info.filler_order_number}" if info.filler_order_number else None}]
        study["basedOn"] = report["basedOn"]
    if pdf is not None:
        report["presentedForm"] = [{"contentType": "application/pdf", "language": "en",
                                    "data": base64.b64encode(pdf).decode("ascii"), "title": "PET/CT report"}]
    entries = [
        (patient_url, patient, {"method": "POST", "url": "Patient",
                                "ifNoneExist": identifier_query(patient_system, info.patient_id)}),
        (study_url, study, {"method": "POST", "url": "ImagingStudy",
                            "ifNoneExist": identifier_query(DICOM_UID, _oid(result.study_instance_uid))}),
        *[(url, obs, {"method": "PUT", "url": "Observation?" + identifier_query(
            OBSERVATION_ID_SYSTEM, obs["identifier"][0]["value"])}) for url, obs in observations + withdrawn],
        (report_url, report, {"method": "PUT",
                              "url": "DiagnosticReport?" + identifier_query(DICOM_UID, _oid(report_uid))}),
    ]
    document = {"resourceType": "Bundle", "type": "transaction",
                "entry": [{"fullUrl": url, "resource": _pruned(res), "request": req} for url, res, req in entries]}
    try:
        return Bundle.model_validate(document)
    except ValidationError as exc:
        raise ReportError(f"the FHIR bundle would not be valid R4: {exc}") from exc


def _pruned(value: Any) -> Any:
    """Drop empty values: FHIR forbids nulls and empty strings, lists and objects."""
    if isinstance(value, dict):
        kept = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [v for v in (_pruned(v) for v in value) if v not in (None, "", [], {})]
    return value


def bundle_json(bundle: Bundle) -> str:
    """The bundle as the JSON a FHIR server accepts."""
    return bundle.model_dump_json(exclude_none=True, by_alias=True, indent=1)
