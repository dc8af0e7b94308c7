"""Results filed against the order: with the HBYS's OrderFacts the ORU (every version, hl7apy strict)
carries placer/filler numbers, LOINC + SUT, the ordering physician and the HBYS's identifiers and
name; the FHIR bundle gets a ServiceRequest reference and stays valid R4. Read back with python-hl7
and the R4 JSON Schema."""
from __future__ import annotations

import json

import hl7
import pytest

from neuropetrix.config.settings import HbysSettings, MllpOut
from neuropetrix.reports.fhir import build_bundle, bundle_json
from neuropetrix.reports.hl7 import oru_bytes
from neuropetrix.reports.source import OrderFacts, study_info
from tests.reports.conftest import pet_study, result  # noqa: F401  (fixtures)
from tests.reports.test_fhir import _schema_errors, sop_classes

ORDER = OrderFacts(
    patient_id="10000000146", issuer_of_patient_id="TCKN", identifier_type="NNTUR", patient_family_name="Yılmaz",
    patient_given_name="Ayşe", patient_birth_date="19650314", patient_sex="F", accession_number="ACC77",
    placer_order_number="PL77", placer_authority="ENLIL", filler_order_number="F77", requested_procedure_id="RP77",
    procedure_code="24472-5", procedure_text="PET/BT Tüm vücut FDG", procedure_system="LN", sut_code="804210",
    sut_text="PET-BT tüm vücut", ordering_physician="ÖZTÜRK^İSMAİL", referring_physician="DEMİR^GÜLŞEN",
    admission_id="AD1", other_identifiers=(("H778899", "", "", "ENLIL", "PI"),))


@pytest.mark.parametrize("version", ["2.3.1", "2.5", "2.5.1"])
def test_the_oru_carries_the_order(result, pet_study, version) -> None:  # noqa: F811
    info = study_info(result, pet_study.datasets, order=ORDER)
    oru = hl7.parse(oru_bytes(result, info, MllpOut(version=version)).decode("utf-8"))
    orc, obr, pid = oru.segment("ORC"), oru.segment("OBR"), oru.segment("PID")
    assert (str(orc(2)), str(orc(3)), str(obr(2)), str(obr(3))) == ("PL77^ENLIL", "F77", "PL77^ENLIL", "F77")
    assert str(obr(4)) == "24472-5^PET/BT Tüm vücut FDG^LN^804210^PET-BT tüm vücut^SUT"
    assert str(obr(44)) == "804210^PET-BT tüm vücut^SUT" and str(obr(18)) == "ACC77"
    assert str(obr(16)) == "^ÖZTÜRK^İSMAİL" and str(orc(12)) == "^ÖZTÜRK^İSMAİL"
    assert str(pid(3)) == "10000000146^^^TCKN^NNTUR~H778899^^^ENLIL^PI" and str(pid(5)) == "Yılmaz^Ayşe"


def test_without_an_order_nothing_changes(result, pet_study) -> None:  # noqa: F811
    oru = hl7.parse(oru_bytes(result, study_info(result, pet_study.datasets), MllpOut()).decode("utf-8"))
    assert str(oru.segment("OBR")(4)).endswith("^SCT") and len(oru.segment("OBR")) < 45


def test_fhir_references_the_service_request(result, pet_study) -> None:  # noqa: F811
    info = study_info(result, pet_study.datasets, order=ORDER)
    document = json.loads(bundle_json(build_bundle(result, info, HbysSettings(), sop_classes(pet_study.datasets))))
    assert _schema_errors(document) == []
    resources = {e["resource"]["resourceType"]: e["resource"] for e in document["entry"]}
    for kind in ("DiagnosticReport", "ImagingStudy"):
        (based_on,) = resources[kind]["basedOn"]
        assert based_on["type"] == "ServiceRequest"
        assert based_on["identifier"]["value"] == "PL77"
        assert based_on["identifier"]["type"]["coding"][0]["code"] == "PLAC"
    assert resources["Patient"]["name"][0]["family"] == "Yılmaz"
