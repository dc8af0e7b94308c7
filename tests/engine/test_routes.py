"""Routing rules: every match operator, the calling AE, and refusals that name the rule."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from neuropetrix.config.loader import ConfigError
from neuropetrix.config.settings import Settings
from neuropetrix.engine.routes.facts import SeriesFacts
from neuropetrix.engine.routes.rules import RouteError, compile_routes, evaluate
from tests.support.nodeproc import run_cli

PEERS = [{"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}]


def settings(*routes: dict) -> Settings:
    return Settings.model_validate({"peers": PEERS, "routes": list(routes)})


def rule(match: dict, actions: list | None = None):
    return compile_routes(settings({"name": "r", "match": match, "actions": actions or [{"forward": "pacs"}]}))[0]


def series(modality: str = "PT", calling_ae: str = "PETCT1", instances: int = 300, **attrs) -> SeriesFacts:
    ds = Dataset()
    ds.Modality = modality
    ds.SeriesDescription = attrs.pop("SeriesDescription", "PET WB AC")
    ds.PatientWeight = attrs.pop("PatientWeight", "72")
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    rp = Dataset()
    rp.Radiopharmaceutical = "Fluorodeoxyglucose"
    ds.RadiopharmaceuticalInformationSequence = Sequence([rp])
    for k, v in attrs.items():
        setattr(ds, k, v)
    return SeriesFacts(f"1.2.3.{modality}", ds, calling_ae, instances)


@pytest.mark.parametrize("match, fires", [
    ({"modality": "PT"}, True),                                   # exact
    ({"modality": "pt"}, False),                                  # exact is case-sensitive
    ({"modality": ["CT", "PT"]}, True),                           # list
    ({"modality": ["CT", "MR"]}, False),
    ({"series_description": "*wb*"}, True),                       # wildcard, case-insensitive
    ({"series_description": "PET?WB*"}, True),
    ({"series_description": "*brain*"}, False),
    ({"tracer": {"regex": "(?i)deoxyglucose"}}, True),            # regex, searched
    ({"tracer": {"regex": "^PSMA"}}, False),
    ({"patient_weight": {">=": 60, "<": 150}}, True),             # numeric, all bounds must hold
    ({"patient_weight": {">": 72}}, False),
    ({"instances": {"==": 300}}, True),
    ({"patient_weight": 72}, True),                               # a number: compared as a number
    ({"patient_weight": [60, 72.0]}, True),
    ({"instances": {"!=": 300}}, False),
    ({"calling_ae": "PETCT1"}, True),                             # the calling AE
    ({"calling_ae": ["PETCT2", "PACS"]}, False),
    ({"ImageType": "PRIMARY"}, True),                             # any DICOM keyword; multi-valued: any value
    ({"Manufacturer": "*"}, False),                               # absent never matches
])
def test_each_operator(match: dict, fires: bool) -> None:
    assert evaluate(rule(match), [series()]).fired is fires


def test_one_series_must_satisfy_every_condition() -> None:
    study = [series("CT", SeriesDescription="CT WB"), series("PT")]
    verdict = evaluate(rule({"modality": "PT", "series_description": "*AC"}), study)
    assert verdict.fired and verdict.series_uid == "1.2.3.PT"
    assert not evaluate(rule({"modality": "CT", "series_description": "PET*"}), study).fired


def test_reasons_say_why_not() -> None:
    verdict = evaluate(rule({"modality": "PT", "calling_ae": "PETCT2"}), [series()])
    assert not verdict.fired
    assert any("calling_ae='PETCT1' does not match == 'PETCT2'" in r for r in verdict.reasons)


def test_result_deliveries_wait_for_the_analysis() -> None:
    r = rule({"modality": "PT"}, ["analyze", {"forward": "pacs", "objects": ["all"]}, {"hl7": "hbys"}])
    assert [a.needs_results for a in r.actions] == [False, True, True]
    assert r.actions[1].objects == ("study", "seg", "sr", "pdf")


@pytest.mark.parametrize("route, message", [
    ({"match": {"modalty": "PT"}, "actions": ["analyze"]}, "match: unknown attribute 'modalty'"),
    ({"match": {"SeriesDescription": {"regex": "(("}}, "actions": ["analyze"]}, "bad regular expression"),
    ({"match": {"PatientWeight": {">": "heavy"}}, "actions": ["analyze"]}, "> needs a number"),
    ({"match": {"PatientWeight": {"~": 3}}, "actions": ["analyze"]}, "unknown operator"),
    ({"match": {"Modality": []}, "actions": ["analyze"]}, "a list must hold one or more"),
    ({"match": {}, "actions": []}, "no actions"),
    ({"match": {}, "actions": ["archive"]}, "unknown action 'archive'"),
    ({"match": {}, "actions": [{"forward": "pacs2"}]}, "no peer named 'pacs2'"),
    ({"match": {}, "actions": [{"forward": "pacs", "objects": ["mip"]}]}, "objects: unknown mip"),
    ({"match": {}, "actions": [{"forward": "pacs", "objects": ["seg"]}]}, "needs an analyze action"),
    ({"match": {}, "actions": [{"hl7": "ris"}]}, "the only HL7 destination is hbys"),
    ({"match": {}, "actions": [{"notify": []}]}, "notify: name one or more recipient roles"),
    ({"match": {}, "actions": [{"forward": "pacs", "speed": 3}]}, "unknown key(s) speed"),
    ({"match": {}, "actions": [{"forward": "pacs", "transforms": [{"set": {"Nonsense": 1}}]}]},
     "'Nonsense' is not a DICOM keyword"),
    ({"match": {}, "actions": ["analyze"], "transforms": ["shuffle"]}, "unknown step 'shuffle'"),
])
def test_refusals_name_the_rule(route: dict, message: str) -> None:
    good = {"name": "first", "match": {}, "actions": [{"forward": "pacs"}]}
    with pytest.raises(RouteError) as err:
        compile_routes(settings(good, {"name": "research", **route}))
    assert str(err.value).startswith("routes[1] 'research': ") and message in str(err.value), str(err.value)
    assert isinstance(err.value, ConfigError)            # `serve` refuses it like any bad key


def test_duplicate_names_refused() -> None:
    r = {"name": "same", "match": {}, "actions": [{"forward": "pacs"}]}
    with pytest.raises(RouteError, match=r"routes\[1\] 'same': another rule has the same name"):
        compile_routes(settings(r, r))


def test_routes_test_command(tmp_path: Path, petct_study: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(
        "peers: [{name: pacs, ae_title: ORTHANC, host: 127.0.0.1, port: 4242}]\n"
        "routes:\n"
        "  - {name: petct, match: {modality: PT, tracer: '*fluorodeoxy*'},\n"
        "     actions: [analyze, {forward: pacs, objects: [seg]}]}\n"
        "  - {name: from-scanner2, match: {calling_ae: PETCT2}, actions: [{forward: pacs}]}\n", encoding="utf-8")
    done = run_cli("routes", "test", str(petct_study), "--calling-ae", "PETCT1", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "rule petct: FIRES" in done.stdout and "→ forward dicom:pacs (seg)" in done.stdout
    assert "rule from-scanner2: does not fire" in done.stdout
    assert "calling_ae='PETCT1' does not match == 'PETCT2'" in done.stdout
    config.write_text("routes: [{name: bad, match: {colour: red}, actions: [analyze]}]\n", encoding="utf-8")
    refused = run_cli("routes", "test", str(petct_study), "--config", str(config))
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith("neuropetrix: routes[0] 'bad': match: unknown attribute 'colour'")


def test_serve_refuses_a_bad_rule_at_start_up(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(f"node: {{data_dir: {tmp_path / 'var'}, dicom_port: 1, api_port: 2}}\n"
                      "routes: [{name: to-nowhere, match: {modality: PT}, actions: [{forward: nowhere}]}]\n",
                      encoding="utf-8")
    done = run_cli("serve", "--config", str(config), timeout=60)
    assert done.returncode == 2
    assert "routes[0] 'to-nowhere': forward: no peer named 'nowhere'" in done.stderr


def test_routes_test_creates_no_key_file(tmp_path: Path, petct_study: Path) -> None:
    """Checking rules (a de-identifying forward included) writes nothing into the data folder."""
    data_dir = tmp_path / "var"
    config = tmp_path / "node.yaml"
    config.write_text(
        f"node: {{data_dir: {data_dir}}}\n"
        "peers: [{name: pacs, ae_title: ORTHANC, host: 127.0.0.1, port: 4242, transforms: [deidentify]}]\n"
        "routes:\n"
        "  - {name: research, match: {modality: PT}, transforms: [deidentify],\n"
        "     actions: [{forward: pacs, transforms: [deidentify]}]}\n", encoding="utf-8")
    done = run_cli("routes", "test", str(petct_study), "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "rule research: FIRES" in done.stdout
    assert not (data_dir / "pseudonym.key").exists()
    assert not data_dir.exists() or not any(data_dir.iterdir())
