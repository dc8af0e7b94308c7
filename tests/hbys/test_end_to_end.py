"""End to end in a node process: the HBYS (python-hl7's MLLP client) sends an ORM, dcmtk storescu
sends a study with that order's accession, and the ORU that arrives at the HBYS peer (python-hl7's
MLLP server) carries the order's placer number, procedure codes and the HBYS's spelling of the
patient. A study with an unknown accession waits on the reconcile list and is delivered only after a
technologist links it through the API."""
from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import hl7
import pydicom
from hl7.client import MLLPClient
from pydicom.uid import generate_uid

from tests.engine.conftest import events_of, jobs_of, petct_study, storescu, wait_for  # noqa: F401  (fixture)
from tests.hbys import corpus
from tests.hbys.conftest import ack_of, parse_ack
from tests.support.hbys_peer import mllp_listener
from tests.support.nodeproc import free_port, running_node

ROUTE = {"name": "petct", "match": {"modality": "PT"}, "actions": ["analyze", {"hl7": "hbys"}]}


def send_hl7(port: int, raw: bytes) -> tuple[str, str, str]:
    with MLLPClient("127.0.0.1", port) as client:
        return ack_of(parse_ack(client.send_message(raw)))


def copy_as_new_study(source: Path, target: Path, accession: str) -> Path:
    """The same images as another examination: new UIDs, another accession number."""
    study, series = generate_uid(), {}
    target.mkdir(parents=True)
    for path in sorted(source.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series.setdefault(ds.SeriesInstanceUID, generate_uid())
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.AccessionNumber = accession
        ds.save_as(target / path.name)
    return target


def of_type(peer, kind: str) -> list[hl7.Message]:
    """The messages of one type (MSH-9.1) the HBYS peer received, in order, parsed by python-hl7."""
    parsed = [hl7.parse(m) for m in peer.received]
    return [m for m in parsed if str(m.segment("MSH")(9)).startswith(kind)]


def api(node, method: str, path: str, token: str | None = None, body: dict | None = None) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{node.api_port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def test_order_in_study_in_result_against_the_order(tmp_path: Path, petct_study: Path) -> None:  # noqa: F811
    listen_port = free_port()
    with mllp_listener() as hbys_end, running_node(tmp_path / "node", {
            "hbys": {"mllp": {"host": "127.0.0.1", "port": hbys_end.port, "version": "2.3.1",
                              "timeout": 5},
                     "mllp_listen": {"enabled": True, "host": "127.0.0.1", "port": listen_port},
                     "order_status": True},
            # every job is counted: a study must complete once, even when a loaded machine pauses storescu
            "node": {"study_quiet_seconds": 8},
            "engine": {"poll_seconds": 0.1}, "routes": [ROUTE]}) as node:
        # the HBYS orders two examinations for the patient, spelling the name its own way
        assert send_hl7(listen_port, corpus.orm("E2E1", "PL7001", "ACC2026001", name="Yılmaz^Ayşe",
                                                birth="19650314", sex="F")) == (
            "AA", "E2E1", "")
        assert send_hl7(listen_port, corpus.orm("E2E2", "PL7002", "ACC2026002", "UNICODE UTF-8",
                                                name="Yılmaz^Ayşe", birth="19650314", sex="F"))[0] == "AA"

        storescu(node, petct_study)               # accession ACC2026001, as the worklist gave it
        wait_for("the ORU of the ordered study", lambda: of_type(hbys_end, "ORU"), node, timeout=180)
        (oru,) = of_type(hbys_end, "ORU")
        orc, obr, pid = oru.segment("ORC"), oru.segment("OBR"), oru.segment("PID")
        assert str(orc(2)) == "PL7001^ENLIL" and str(obr(2)) == "PL7001^ENLIL"
        assert str(orc(3)) == "FPL7001" and str(obr(3)) == "FPL7001"
        assert str(obr(4)) == "24472-5^PET/BT Tüm vücut FDG^LN^804210^PET-BT tüm vücut^SUT"
        assert str(obr(44)) == "804210^PET-BT tüm vücut^SUT"
        assert str(obr(16)) == "^ÖZTÜRK^İSMAİL" and str(obr(18)) == "ACC2026001"
        assert str(pid(3)) == f"{corpus.TCKN}^^^TCKN^NNTUR~H778899^^^ENLIL^PI"    # as the HBYS sent them
        assert str(pid(5)) == "Yılmaz^Ayşe"
        # and the order's status went back as ORM^O01: IP when the images came, CM when complete
        wait_for("the order status messages", lambda: len(of_type(hbys_end, "ORM")) == 2, node)
        assert [(str(m.segment("ORC")(5)), str(m.segment("ORC")(2)), str(m.segment("OBR")(18)))
                for m in of_type(hbys_end, "ORM")] == [("IP", "PL7001^ENLIL", "ACC2026001"),
                                                       ("CM", "PL7001^ENLIL", "ACC2026001")]
        assert set(hbys_end.acked) == {"AA"}

        # the same images under an accession the HBYS never sent: held, no job, until linked
        unknown = copy_as_new_study(petct_study, tmp_path / "unknown", "TYPED-BY-HAND")
        storescu(node, unknown)
        wait_for("the study to be held", lambda: "held on the reconcile list" in node.log_text(), node)
        assert sorted(j["kind"] for j in jobs_of(node)) == ["analyze", "hl7", "order_status", "order_status"]
        assert len(of_type(hbys_end, "ORU")) == 1

        assert node.cli("users", "add", "tech", "--role", "technologist", input="a long password\n").returncode == 0
        token = api(node, "POST", "/api/auth/login", body={"username": "tech", "password": "a long password"})[
            "access_token"]
        (waiting,) = api(node, "GET", "/api/reconcile", token)["items"]
        assert (waiting["state"], waiting["held"], waiting["study"]["accession_number"]) == (
            "unmatched", True, "TYPED-BY-HAND")
        order = next(o for o in api(node, "GET", "/api/orders", token)["items"] if o["placer_number"] == "PL7002")
        linked = api(node, "POST", f"/api/reconcile/{waiting['study_uid']}", token, {"order_id": order["id"]})
        assert linked["state"] == "linked"

        wait_for("the ORU of the linked study", lambda: len(of_type(hbys_end, "ORU")) == 2, node, timeout=180)
        second = of_type(hbys_end, "ORU")[1]
        assert str(second.segment("ORC")(2)) == "PL7002^ENLIL"
        assert str(second.segment("OBR")(18)) == "ACC2026002"          # the order's, not the typed one
        orders = {o["placer_number"]: o["status"] for o in api(node, "GET", "/api/orders", token)["items"]}
        assert orders == {"PL7001": "completed", "PL7002": "completed"}
        assert [e.payload["reason"] for e in events_of(node, "study.complete")][-1] == "reconciled"
    shutil.rmtree(tmp_path / "unknown", ignore_errors=True)
