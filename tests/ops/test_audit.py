"""The access audit trail: a row for each kind of access (API reads, downloads, WebSocket, review,
logins failed and not, associations accepted and refused, C-FIND), who/where/what/outcome right,
the admin's GET /api/audit filters, nothing writable through the API or SQL, and the same rows as
DICOM PS3.15 A.5 XML in RFC 5424 syslog messages to a UDP and a TCP collector."""
from __future__ import annotations

import shutil
import socket
import threading
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta

import pydicom
import pytest
import yaml
from pydicom.dataset import Dataset
from pynetdicom.sop_class import ModalityWorklistInformationFind as MWL
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from neuropetrix.api.audit_middleware import _networks, client_address
from neuropetrix.config.loader import parse_settings
from neuropetrix.config.settings import SyslogSettings
from neuropetrix.engine.executor import JobRunner
from neuropetrix.engine.jobs import JobFailure, JobQueue, new_job
from neuropetrix.engine.result_store import ResultStore
from neuropetrix.node.scp.policy import AcceptancePolicy, ServerLimits
from neuropetrix.node.scp.server import DicomServer
from neuropetrix.node.scu.syslog import SyslogExporter
from neuropetrix.store.audit import FAILURE, SUCCESS, Access, AuditTrail, DicomAudit
from neuropetrix.store.db import open_database
from neuropetrix.store.files import FileStore, relative_path
from neuropetrix.store.index import InstanceRecord, StudyIndex
from neuropetrix.store.ingest import Ingest
from tests.api.conftest import accounts_db, bearer, client, env, login, make_env  # noqa: F401  (fixtures)
from tests.conftest import dcmtk
from tests.engine.conftest import postgres_server  # noqa: F401  (fixture)
from tests.engine.test_jobs import db_url  # noqa: F401  (fixture: SQLite and PostgreSQL)
from tests.support.nodeproc import free_port
from tests.support.peers import storescp
from tests.support.synthetic import StudySpec, write_petct_study

UID = "1.2.826.0.1.3680043.10.17.1"
PATIENT = "10000000146"


class UdpCollector:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]

    def messages(self, n: int) -> list[bytes]:
        return [self.sock.recvfrom(65536)[0] for _ in range(n)]


def xml_of(message: bytes) -> ET.Element:
    """The AuditMessage of one RFC 5424 message (header, NILVALUE structured data, BOM, XML)."""
    header, _, body = message.partition(b"\xef\xbb\xbf")
    assert header.startswith(b"<85>1 ") and b" neuropetrix - IHE+RFC-3881 - " in header, header
    return ET.fromstring(body)


# -- the store ----------------------------------------------------------------------------------
def test_rows_are_append_only(db_url) -> None:  # noqa: F811
    engine, sessions = open_database(db_url)
    trail = AuditTrail(sessions)
    trail.record(Access("doctor", "user", "read", SUCCESS, "10.0.0.5", UID, PATIENT, "GET /api/studies/x"))
    for sql in ("UPDATE audit_events SET outcome = 'failure'", "DELETE FROM audit_events"):
        with pytest.raises(DatabaseError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(text(sql))
    [row] = trail.query()
    assert (row["user"], row["outcome"], row["patient_id"], row["address"]) == ("doctor", SUCCESS, PATIENT,
                                                                                "10.0.0.5")
    engine.dispose()


def test_query_filters(tmp_path) -> None:
    _, sessions = open_database(f"sqlite:///{tmp_path / 'a.db'}")
    now = [datetime(2026, 12, 1, 8, 0)]
    trail = AuditTrail(sessions, clock=lambda: now[0])
    trail.record(Access("ayse", "user", "read", SUCCESS, "10.0.0.1", patient_id="P1"))
    now[0] += timedelta(hours=2)
    trail.record(Access("mehmet", "user", "download", SUCCESS, "10.0.0.2", patient_id="P2"))
    trail.record(Access("ayse", "user", "sign", SUCCESS, "10.0.0.1", patient_id="P2"))
    assert [r["action"] for r in trail.query(user="ayse")] == ["sign", "read"]
    assert [r["user"] for r in trail.query(patient_id="P2")] == ["ayse", "mehmet"]
    assert [r["action"] for r in trail.query(since=datetime(2026, 12, 1, 9, 0))] == ["sign", "download"]
    assert trail.query(patient_id="P2", user="mehmet")[0]["at"] == "2026-12-01T10:00:00Z"


# -- syslog ---------------------------------------------------------------------------------------
def test_syslog_over_udp_and_tcp(tmp_path) -> None:
    _, sessions = open_database(f"sqlite:///{tmp_path / 'a.db'}")
    udp = UdpCollector()
    AuditTrail(sessions, SyslogExporter("127.0.0.1", udp.port, "udp", "NEUROPETRIX")).record(
        Access("PACS", "ae", "forward", FAILURE, "10.1.1.9:104", UID, PATIENT, "refused"))
    root = xml_of(udp.messages(1)[0])
    ident = root.find("EventIdentification")
    assert ident.get("EventActionCode") == "R" and ident.get("EventOutcomeIndicator") == "4"
    assert ident.find("EventID").get("csd-code") == "110106"              # Export
    requestor = root.find("ActiveParticipant")
    assert requestor.get("UserID") == "PACS" and requestor.get("NetworkAccessPointID") == "10.1.1.9"
    objects = {o.get("ParticipantObjectTypeCode"): o.get("ParticipantObjectID")
               for o in root.findall("ParticipantObjectIdentification")}
    assert objects == {"1": PATIENT, "2": UID}
    assert root.find("AuditSourceIdentification").get("AuditSourceID") == "NEUROPETRIX"

    received: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def collect() -> None:
        conn, _ = server.accept()
        with conn:
            buf = b""
            while len(received) < 2:
                buf += conn.recv(65536)
                while b" " in buf:                              # RFC 6587 octet counting
                    length, _, rest = buf.partition(b" ")
                    if len(rest) < int(length):
                        break
                    received.append(rest[:int(length)])
                    buf = rest[int(length):]
    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    trail = AuditTrail(sessions, SyslogExporter("127.0.0.1", port, "tcp", "NEUROPETRIX"))
    trail.record(Access("ayse", "user", "login", FAILURE, "10.0.0.1", detail="bad password"))
    trail.record(Access("ayse", "user", "login", SUCCESS, "10.0.0.1"))
    collector.join(10)
    server.close()
    codes = [(xml_of(m).find("EventIdentification/EventID").get("csd-code"),
              xml_of(m).find("EventIdentification").get("EventOutcomeIndicator")) for m in received]
    assert codes == [("110114", "4"), ("110114", "0")]


def test_a_collector_that_is_down_costs_no_row(tmp_path) -> None:
    _, sessions = open_database(f"sqlite:///{tmp_path / 'a.db'}")
    trail = AuditTrail(sessions, SyslogExporter("127.0.0.1", free_port(), "tcp", "NEUROPETRIX", timeout=1))
    trail.record(Access("ayse", "user", "read", SUCCESS, "10.0.0.1"))
    assert len(trail.query()) == 1


# -- the DICOM SCP --------------------------------------------------------------------------------
def orders(identifier: Dataset, calling_ae: str):
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName, ds.PatientID = "DOE^JOHN", PATIENT
    return iter([ds])


def test_associations_and_queries_are_recorded(tmp_path) -> None:
    _, sessions = open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    udp = UdpCollector()
    trail = AuditTrail(sessions, SyslogExporter("127.0.0.1", udp.port, "udp", "NEUROPETRIX"))
    server = DicomServer("127.0.0.1", 0, AcceptancePolicy("NEUROPETRIX", frozenset({"STORESCU"})),
                         Ingest(FileStore(tmp_path / "storage"), StudyIndex(sessions)),
                         ServerLimits(network_timeout=10), find_providers={MWL: orders}, audit=DicomAudit(trail))
    port = server.start()
    try:
        assert dcmtk("echoscu", "-aet", "INTRUDER", "-aec", "NEUROPETRIX", "127.0.0.1", str(port)).returncode != 0
        found = dcmtk("findscu", "-W", "-aet", "STORESCU", "-aec", "NEUROPETRIX", "-k", "PatientName=",
                      "-k", f"PatientID={PATIENT}", "127.0.0.1", str(port))
        assert found.returncode == 0, found.stderr
    finally:
        server.stop(5)
    rows = list(reversed(trail.query()))
    assert [(r["user"], r["action"], r["outcome"]) for r in rows] == [
        ("INTRUDER", "association", FAILURE), ("STORESCU", "association", SUCCESS), ("STORESCU", "query", SUCCESS)]
    assert "calling AE title not recognised" in rows[0]["detail"]
    assert rows[2]["patient_id"] == PATIENT and rows[2]["detail"].startswith(MWL)
    assert all(r["address"].startswith("127.0.0.1:") for r in rows)
    events = [xml_of(m).find("EventIdentification/EventID").get("csd-code") for m in udp.messages(3)]
    assert events == ["110113", "110114", "110112"]     # security alert, authentication, query


# -- the API --------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_api_access_is_recorded_and_only_admins_read_it(env, aiohttp_client) -> None:  # noqa: F811
    env.add_instance(UID, patient_id=PATIENT)
    env.settings.audit.trusted_proxies = ["127.0.0.1/32"]
    api = await aiohttp_client(env.app())
    bad = await api.post("/api/auth/login", json={"username": "physician", "password": "wrong"},
                         headers={"X-Forwarded-For": "203.0.113.7"})
    assert bad.status == 401
    doctor = bearer(await login(api, "physician"))
    assert (await api.get(f"/api/studies/{UID}", headers=doctor)).status == 200
    assert (await api.get(f"/api/studies/{UID}/report.pdf", headers=doctor)).status == 404
    assert (await api.get(f"/api/studies/{UID}", headers={"X-Forwarded-For": "198.51.100.1"})).status == 401
    ws = await api.ws_connect("/api/ws", headers=doctor)
    await ws.close()
    assert (await api.get("/healthz")).status == 200                   # not patient data: not recorded

    assert (await api.get("/api/audit", headers=doctor)).status == 403
    admin = bearer(await login(api, "admin"))
    rows = (await (await api.get("/api/audit", params={"patient_id": PATIENT}, headers=admin)).json())["items"]
    assert [(r["user"], r["action"], r["outcome"], r["address"]) for r in reversed(rows)] == [
        ("physician", "read", SUCCESS, "127.0.0.1"), ("physician", "download", FAILURE, "127.0.0.1"),
        ("?", "read", FAILURE, "198.51.100.1")]       # the caller the trusted proxy named
    assert all(r["study_uid"] == UID and r["at"].endswith("Z") for r in rows)
    everything = (await (await api.get("/api/audit", headers=admin)).json())["items"]
    assert [(r["user"], r["action"], r["outcome"]) for r in reversed(everything)] == [
        ("physician", "login", FAILURE), ("physician", "login", SUCCESS), ("physician", "read", SUCCESS),
        ("physician", "download", FAILURE), ("?", "read", FAILURE), ("physician", "subscribe", SUCCESS),
        ("physician", "audit", FAILURE), ("admin", "login", SUCCESS), ("admin", "audit", SUCCESS)]
    assert everything[-1]["address"] == "203.0.113.7"
    mine = (await (await api.get("/api/audit", params={"user": "admin", "action": "audit"}, headers=admin)).json())
    assert [r["detail"] for r in mine["items"]] == ["GET /api/audit → 200",      # newest first
                                                    f"GET /api/audit?patient_id={PATIENT} → 200"]
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert (await api.request(method, "/api/audit", headers=admin)).status == 405
    assert (await api.get("/api/audit", params={"since": "yesterday"}, headers=admin)).status == 400


@pytest.mark.asyncio
async def test_patient_timeline_and_sync_reads_are_recorded_with_the_patient(env, aiohttp_client) -> None:  # noqa: F811
    env.add_instance(UID, patient_id=PATIENT)
    api = await aiohttp_client(env.app())
    doctor = bearer(await login(api, "physician"))
    listed = (await (await api.get("/api/patients", params={"q": PATIENT}, headers=doctor)).json())["items"]
    assert [p["patient_id"] for p in listed] == [PATIENT]
    assert (await api.get(f"/api/patients/{listed[0]['id']}", headers=doctor)).status == 200
    assert (await api.get("/api/patients/99999", headers=doctor)).status == 404
    assert (await api.get("/api/patients/" + "9" * 30, headers=doctor)).status == 404
    assert (await api.get("/api/sync", headers=doctor)).status == 200
    admin = bearer(await login(api, "admin"))
    rows = (await (await api.get("/api/audit", params={"user": "physician", "action": "read"},
                                 headers=admin)).json())["items"]
    assert [(r["detail"], r["patient_id"], r["outcome"]) for r in reversed(rows)] == [
        (f"GET /api/patients?q={PATIENT} → 200", "", SUCCESS),
        (f"GET /api/patients/{listed[0]['id']} → 200", PATIENT, SUCCESS),   # the timeline names its patient
        ("GET /api/patients/99999 → 404", "", FAILURE),
        ("GET /api/patients/" + "9" * 30 + " → 404", "", FAILURE),
        ("GET /api/sync → 200", "", SUCCESS)]


def test_untrusted_forwarded_for_is_ignored() -> None:
    proxies = _networks(["10.0.0.0/8"])
    assert client_address("192.0.2.1", "203.0.113.7", proxies) == "192.0.2.1"
    assert client_address("10.0.0.2", "203.0.113.7, 10.0.0.3", proxies) == "203.0.113.7"
    assert client_address("10.0.0.2", "198.51.100.9, 203.0.113.7", proxies) == "203.0.113.7"
    assert client_address("10.0.0.2", None, proxies) == "10.0.0.2"


def test_syslog_settings_are_checked() -> None:
    assert SyslogSettings(host="collector").port == 514
    with pytest.raises(ValueError):
        SyslogSettings(host="collector", protocol="tls")


# -- forwards ------------------------------------------------------------------------------------
def test_forwards_are_recorded(tmp_path) -> None:
    spec, sent = write_petct_study(tmp_path / "study", StudySpec(ct_slices=1, pet_slices=1, ct_matrix=64,
                                                                 pet_matrix=32))
    with storescp(tmp_path / "pacs", "PACS") as pacs_port:
        gone = free_port()
        config = {"node": {"data_dir": str(tmp_path / "var")},
                  "peers": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port},
                            {"name": "gone", "ae_title": "GONE", "host": "127.0.0.1", "port": gone}],
                  "engine": {"retry": {"max_attempts": 1}}}
        settings = parse_settings(yaml.safe_dump(config), "test", environ={})
        _, sessions = open_database(settings.node.db_url)
        files = FileStore(settings.node.storage_dir, fsync=False)
        for f in sent:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            rel = relative_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
            files.path_of(rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, files.path_of(rel))
            StudyIndex(sessions).add(InstanceRecord(ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID,
                                                    ds.SeriesInstanceUID, str(ds.file_meta.TransferSyntaxUID), rel,
                                                    f.stat().st_size, patient_id=spec.patient_id))
        with sessions.begin() as s:
            for peer in ("pacs", "gone"):
                s.add(new_job("forward", spec.study_uid, "r", 0 if peer == "pacs" else 1, f"dicom:{peer}", 1,
                              objects=["study"], params={"peer": peer}))
        queue = JobQueue(sessions, settings.engine.retry, 60)
        runner = JobRunner(settings, sessions, files, ResultStore(settings.node.data_dir / "results"))
        outcomes = []
        while (job := queue.claim("test", ("forward",))) is not None:
            try:
                outcomes.append(runner.run(job, threading.Event())["sent"])
            except JobFailure:
                outcomes.append("failed")
    assert sorted(outcomes, key=str) == [2, "failed"]
    rows = {r["user"]: r for r in AuditTrail(sessions).query(action="forward")}
    assert rows["PACS"]["outcome"] == SUCCESS and rows["PACS"]["detail"] == "2 of 2 object(s) to pacs"
    assert rows["GONE"]["outcome"] == FAILURE and rows["GONE"]["address"] == f"127.0.0.1:{gone}"
    assert {r["patient_id"] for r in rows.values()} == {spec.patient_id}
    assert {r["study_uid"] for r in rows.values()} == {spec.study_uid}
