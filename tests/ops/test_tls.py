"""DICOM and MLLP over TLS with a self-made CA: dcmtk's echoscu/storescu/storescp, Orthanc (DICOM TLS
and storage commitment) and python-hl7 on the other side; a plaintext caller on a TLS port and a
certificate from another CA are refused."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import hl7
import pydicom
import pytest
from hl7.mllp import open_hl7_connection
from pynetdicom import AE
from pynetdicom.sop_class import StorageCommitmentPushModel

from neuropetrix.config.loader import ConfigError, parse_settings
from neuropetrix.config.settings import TlsSettings
from neuropetrix.node.scp.mllp_listener import MllpListener
from neuropetrix.node.scu import mllp
from neuropetrix.node.scu.errors import DeliveryError
from neuropetrix.node.tls import client_context, server_context
from tests.conftest import dcmtk, storescu
from tests.engine.conftest import FAST_ENGINE, jobs_of
from tests.engine.conftest import storescu as scanner_sends
from tests.engine.conftest import wait_for as wait_for_node
from tests.node.test_retrieve import _final as final_status
from tests.node.test_scp_peers import stored_path
from tests.ops.ca import make_ca
from tests.support.dicomfiles import dataset_bytes
from tests.support.hbys_peer import LoopThread, mllp_listener
from tests.support.nodeproc import SCANNER_AE, free_port, running_node
from tests.support.peers import ORTHANC_AET, orthanc, storescp, upload
from tests.support.synthetic import StudySpec, write_ct_series, write_petct_study

MESSAGE = b"MSH|^~\\&|HBYS|H|NEUROPETRIX|N|20260101120000||ADT^A08|CTRL-TLS-1|P|2.5\rPID|1||12345||DOE^JOHN\r"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return make_ca(tmp_path_factory.mktemp("ca"))


def tls_settings(ca, **more) -> dict:
    return {"certificate": str(ca.server.certificate), "private_key": str(ca.server.private_key),
            "ca_certificates": str(ca.ca), **more}


def echo_tls(port: int, *tls: str) -> subprocess.CompletedProcess:
    return dcmtk("echoscu", "-aet", "STORESCU", "-aec", "NEUROPETRIX", *tls, "127.0.0.1", str(port), timeout=30)


def test_dicom_tls_port_beside_the_plain_one(tmp_path, ca) -> None:
    tls_port = free_port()
    with running_node(tmp_path, {"node": {"tls": tls_settings(ca, port=tls_port)}}) as node:
        mutual = ("+tls", str(ca.client.private_key), str(ca.client.certificate), "+cf", str(ca.ca))
        assert echo_tls(tls_port, *mutual).returncode == 0
        # client certificates are optional: a caller without one is served
        assert echo_tls(tls_port, "+tla", "+cf", str(ca.ca)).returncode == 0
        # a certificate from another CA is refused in the handshake
        stranger = echo_tls(tls_port, "+tls", str(ca.stranger.private_key), str(ca.stranger.certificate),
                            "+cf", str(ca.ca))
        assert stranger.returncode != 0
        # a plaintext caller on the TLS port gets no association
        plain = echo_tls(tls_port)
        assert plain.returncode != 0
        # the plain port still serves plaintext, and the TLS port goes on serving
        assert echo_tls(node.dicom_port).returncode == 0
        _, files = write_petct_study(tmp_path / "study", StudySpec(ct_slices=2, pet_slices=2, ct_matrix=64,
                                                                  pet_matrix=32))
        sent = storescu(tls_port, *files, options=mutual)
        assert sent.returncode == 0, sent.stderr
        for f in files:     # what arrived over TLS is what was sent
            kept, sent_ds = pydicom.dcmread(stored_path(node, f)), pydicom.dcmread(f)
            assert kept.PixelData == sent_ds.PixelData and kept.SOPInstanceUID == sent_ds.SOPInstanceUID
        log = node.log_text()
    assert log.count("TLS handshake with 127.0.0.1") >= 2     # the stranger and the plaintext caller
    assert "(TLS)" in log


def test_api_over_https(tmp_path, ca) -> None:
    with running_node(tmp_path, {"node": {"tls": tls_settings(ca)}, "api": {"https": True}}) as node:
        context = ssl.create_default_context(cafile=str(ca.ca))
        url = f"https://127.0.0.1:{node.api_port}/healthz"
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:
            assert answer.status == 200
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{node.api_port}/healthz", timeout=10)


def test_tls_only_node_has_no_plain_port(tmp_path, ca) -> None:
    tls_port = free_port()
    overrides = {"node": {"dicom_port": tls_port, "plain_dicom": False, "tls": tls_settings(ca, port=tls_port)}}
    with running_node(tmp_path, overrides):
        assert echo_tls(tls_port, "+tla", "+cf", str(ca.ca)).returncode == 0
        assert echo_tls(tls_port).returncode != 0


def test_required_client_certificates(tmp_path, ca) -> None:
    tls_port = free_port()
    with running_node(tmp_path, {"node": {"tls": tls_settings(ca, port=tls_port,
                                                             require_client_certificate=True)}}):
        assert echo_tls(tls_port, "+tla", "+cf", str(ca.ca)).returncode != 0
        assert echo_tls(tls_port, "+tls", str(ca.client.private_key), str(ca.client.certificate),
                        "+cf", str(ca.ca)).returncode == 0


def test_send_to_a_tls_peer(tmp_path, ca) -> None:
    """`peers[].tls: true`: the node's SCU calls dcmtk's storescp over TLS with its certificate."""
    _, files = write_petct_study(tmp_path / "study", StudySpec(ct_slices=1, pet_slices=1, ct_matrix=64,
                                                              pet_matrix=32))
    trusted = ("+tls", str(ca.server.private_key), str(ca.server.certificate), "+cf", str(ca.ca))
    with storescp(tmp_path / "received", "STORESCP", trusted) as port:
        peer = {"name": "pacs", "ae_title": "STORESCP", "host": "127.0.0.1", "port": port, "tls": True}
        overrides = {"node": {"tls": tls_settings(ca)}, "peers": [peer]}
        with running_node(tmp_path, overrides) as node:
            result = node.cli("send", "pacs", *map(str, files))
            if result.returncode != 0:      # a fresh TLS storescp refused its first association once in 4 runs
                result = node.cli("send", "pacs", *map(str, files))
            assert result.returncode == 0, result.stderr + result.stdout
            doctor = node.cli("doctor")
            assert "answers C-ECHO" in next(line for line in doctor.stdout.splitlines() if "peer pacs" in line)
    received = sorted(p.name for p in (tmp_path / "received").iterdir())
    assert len(received) == len(files)


def test_send_to_a_tls_peer_with_an_untrusted_certificate_fails(tmp_path, ca) -> None:
    _, files = write_petct_study(tmp_path / "study", StudySpec(ct_slices=1, pet_slices=1, ct_matrix=64,
                                                              pet_matrix=32))
    untrusted = ("+tls", str(ca.stranger.private_key), str(ca.stranger.certificate), "-ic")
    with storescp(tmp_path / "received", "STORESCP", untrusted) as port:
        peer = {"name": "pacs", "ae_title": "STORESCP", "host": "127.0.0.1", "port": port, "tls": True}
        with running_node(tmp_path, {"node": {"tls": tls_settings(ca)}, "peers": [peer]}) as node:
            result = node.cli("send", "pacs", *map(str, files[:1]))
    assert result.returncode != 0
    assert "refused or unreachable" in result.stderr + result.stdout
    assert not list((tmp_path / "received").iterdir())


def test_move_to_a_tls_peer_goes_over_tls_and_a_failed_handshake_is_a702(tmp_path, ca) -> None:
    """C-MOVE to a `peers[].tls: true` destination: the sub-operations reach a TLS-only dcmtk storescp
    that requires a certificate from our CA, so what arrived came over TLS with the node's own
    certificate. A TLS destination whose certificate is from another CA fails the handshake: every
    sub-operation failed, 0xA702, and the log says why."""
    _, files = write_petct_study(tmp_path / "study", StudySpec(ct_slices=2, pet_slices=2, ct_matrix=64,
                                                              pet_matrix=32))
    spec = pydicom.dcmread(files[0], stop_before_pixels=True)
    trusted = ("+tls", str(ca.server.private_key), str(ca.server.certificate), "+cf", str(ca.ca))
    untrusted = ("+tls", str(ca.stranger.private_key), str(ca.stranger.certificate), "-ic")
    with storescp(tmp_path / "viewer", "VIEWER", trusted) as viewer, \
            storescp(tmp_path / "stranger", "STRANGER", untrusted) as stranger:
        assert echo_tls(viewer).returncode != 0            # the destination speaks TLS only
        peers = [{"name": "scanner", "ae_title": SCANNER_AE, "host": "127.0.0.1", "port": free_port()},
                 {"name": "viewer", "ae_title": "VIEWER", "host": "127.0.0.1", "port": viewer, "tls": True},
                 {"name": "stranger", "ae_title": "STRANGER", "host": "127.0.0.1", "port": stranger, "tls": True}]
        with running_node(tmp_path / "node", {"node": {"tls": tls_settings(ca)}, "peers": peers}) as node:
            assert storescu(node.dicom_port, *files).returncode == 0

            def move(destination: str) -> tuple[str, dict[str, int]]:
                done = dcmtk("movescu", "-S", "-d", "-aet", SCANNER_AE, "-aec", node.ae_title, "-aem", destination,
                             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={spec.StudyInstanceUID}",
                             "127.0.0.1", str(node.dicom_port))
                return final_status(done.stdout + done.stderr)
            status, counts = move("VIEWER")
            assert status == "0x0000" and counts["Completed"] == len(files) and counts["Failed"] == 0
            arrived = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: dataset_bytes(p)
                       for p in (tmp_path / "viewer").iterdir()}
            assert arrived == {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: dataset_bytes(f)
                               for f in files}
            status, counts = move("STRANGER")
            assert status == "0xa702" and counts["Failed"] == len(files) and counts["Completed"] == 0
            assert not list((tmp_path / "stranger").iterdir())
            log = node.log_text()
    assert re.search(rf"WARNING +neuropetrix.scp: C-MOVE from STORESCU \(127.0.0.1:\d+\): "
                     rf"stranger \(STRANGER@127.0.0.1:{stranger} TLS\) refused or unreachable", log)
    assert "CERTIFICATE_VERIFY_FAILED" in log           # the cause, from pynetdicom's transport


def test_priors_from_a_tls_pacs_over_tls(tmp_path, ca) -> None:
    """`priors.peer` with `tls: true`: the C-FIND and the C-MOVE go to a TLS-only Orthanc that requires
    our CA's certificate, and it moves the prior study to the node's TLS port."""
    _, baseline = write_petct_study(tmp_path / "baseline", StudySpec(
        ct_slices=1, pet_slices=2, ct_matrix=32, pet_matrix=16,
        injection_time=dt.datetime(2026, 6, 2, 9, 0), scan_start=dt.datetime(2026, 6, 2, 10, 0)))
    write_petct_study(tmp_path / "follow_up", StudySpec(ct_slices=1, pet_slices=2, ct_matrix=32, pet_matrix=16))
    tls_port = free_port()
    orthanc_tls = {"DicomTlsEnabled": True, "DicomTlsCertificate": str(ca.server.certificate),
                   "DicomTlsPrivateKey": str(ca.server.private_key), "DicomTlsTrustedCertificates": str(ca.ca),
                   "DicomTlsRemoteCertificateRequired": True,
                   "DicomModalities": {"neuropetrix": {"AET": "NEUROPETRIX", "Host": "127.0.0.1", "Port": tls_port,
                                                       "UseDicomTls": True}}}
    with orthanc(tmp_path / "orthanc", settings=orthanc_tls) as pacs:
        for path in baseline:
            upload(pacs, path)
        peers = [{"name": "scanner", "ae_title": SCANNER_AE, "host": "127.0.0.1", "port": free_port()},
                 {"name": "pacs", "ae_title": ORTHANC_AET, "host": "127.0.0.1", "port": pacs.dicom_port, "tls": True}]
        config = {"node": {"tls": tls_settings(ca, port=tls_port)}, "peers": peers, "priors": {"peer": "pacs"},
                  "engine": {**FAST_ENGINE, "retry": {**FAST_ENGINE["retry"], "max_attempts": 1}},
                  "routes": [{"name": "petct", "match": {"modality": "PT"}, "actions": ["analyze"]}]}
        with running_node(tmp_path / "node", config) as node:
            scanner_sends(node, tmp_path / "follow_up")
            fetch = wait_for_node("the priors job", lambda: [j for j in jobs_of(node) if j["kind"] == "priors"
                                                             and j["state"] in ("done", "failed")], node)[0]
            assert fetch["state"] == "done", fetch
            prior_uid = str(pydicom.dcmread(baseline[0], stop_before_pixels=True).StudyInstanceUID)
            assert fetch["result"]["retrieved"] == [prior_uid]
            for path in baseline:        # what Orthanc moved over TLS is what it holds
                kept, sent = pydicom.dcmread(stored_path(node, path)), pydicom.dcmread(path)
                assert kept.PixelData == sent.PixelData and kept.SOPInstanceUID == sent.SOPInstanceUID


def test_forward_to_orthanc_over_tls_committed_over_tls(tmp_path, ca) -> None:
    """A TLS-only Orthanc as the PACS: the node forwards over TLS and asks for storage commitment;
    Orthanc answers on engine.commitment_port over TLS (UseDicomTls) and the job is done. A
    plaintext caller on that port fails the handshake; one with the CA's certificate gets in."""
    study = tmp_path / "ct"
    write_ct_series(StudySpec(ct_slices=3, ct_matrix=64), study)
    commitment_port = free_port()
    orthanc_tls = {"DicomTlsEnabled": True, "DicomTlsCertificate": str(ca.server.certificate),
                   "DicomTlsPrivateKey": str(ca.server.private_key), "DicomTlsTrustedCertificates": str(ca.ca),
                   "DicomTlsRemoteCertificateRequired": True}
    with orthanc(tmp_path / "orthanc", settings=orthanc_tls) as pacs:
        peer = {"name": "pacs", "ae_title": ORTHANC_AET, "host": "127.0.0.1", "port": pacs.dicom_port, "tls": True}
        scanner = {"name": "scanner", "ae_title": SCANNER_AE, "host": "127.0.0.1", "port": free_port()}
        config = {"node": {"tls": tls_settings(ca)}, "peers": [scanner, peer],
                  "routes": [{"name": "archive", "match": {"modality": "CT"}, "actions": [{"forward": "pacs"}]}],
                  "engine": {**FAST_ENGINE, "commitment_port": commitment_port, "commitment_tls": True,
                             "commitment_timeout": 30}}
        with running_node(tmp_path / "node", config) as node:
            pacs.request("PUT", "/modalities/neuropetrix", json.dumps(
                {"AET": node.ae_title, "Host": "127.0.0.1", "Port": commitment_port, "UseDicomTls": True}).encode())
            scanner_sends(node, study)
            forward = wait_for_node("the commitment", lambda: (js := jobs_of(node)) and js[0]["state"] == "done"
                                    and js[0], node)
            assert forward["result"]["committed"] is True and forward["result"]["sent"] == 3
            assert len(pacs.get("/instances")) == 3

            caller = AE(ae_title=ORTHANC_AET)
            caller.add_requested_context(StorageCommitmentPushModel)
            plain = caller.associate("127.0.0.1", commitment_port, ae_title=node.ae_title)
            assert not plain.is_established
            tls = _tls(ca)
            secure = caller.associate("127.0.0.1", commitment_port, ae_title=node.ae_title,
                                      tls_args=(client_context(tls), "127.0.0.1"))
            assert secure.is_established
            secure.release()


def _tls(ca) -> TlsSettings:
    return TlsSettings(**tls_settings(ca))


def test_mllp_listener_over_tls(ca) -> None:
    """python-hl7's MLLP client over TLS gets the ACK; a plaintext one on the same port does not."""
    port, received = free_port(), []

    def handler(frame: bytes, caller: str) -> bytes:
        received.append(frame)
        return b"MSH|^~\\&|NEUROPETRIX|N|HBYS|H|20260101120001||ACK|A1|P|2.5\rMSA|AA|CTRL-TLS-1\r"

    listener = MllpListener("127.0.0.1", port, handler, ssl_context=server_context(_tls(ca)))
    listener.start()
    loop = LoopThread()
    try:
        async def exchange(context: ssl.SSLContext | None) -> hl7.Message:
            reader, writer = await open_hl7_connection("127.0.0.1", port, ssl=context, encoding="utf-8")
            try:
                writer.writemessage(hl7.parse(MESSAGE.decode()))
                await writer.drain()
                return await asyncio.wait_for(reader.readmessage(), 10)
            finally:
                writer.close()
        ack = loop.run(exchange(client_context(_tls(ca))))
        assert str(ack.segment("MSA")(1)) == "AA"
        assert received and b"CTRL-TLS-1" in received[0]
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError, TimeoutError)):
            loop.run(exchange(None), timeout=40)
        assert len(received) == 1
    finally:
        loop.close()
        listener.stop()


def test_mllp_sender_over_tls(ca) -> None:
    """send_message with a TLS context to python-hl7's MLLP server over TLS; plaintext to it fails."""
    with mllp_listener(ssl=server_context(_tls(ca))) as hbys:
        ack = mllp.send_message("127.0.0.1", hbys.port, MESSAGE, 10, ssl_context=client_context(_tls(ca)))
        assert ack.code == "AA" and ack.control_id == "CTRL-TLS-1"
        assert hbys.control_ids() == ["CTRL-TLS-1"]
        with pytest.raises(DeliveryError):
            mllp.send_message("127.0.0.1", hbys.port, MESSAGE, 5)
        assert hbys.control_ids() == ["CTRL-TLS-1"]


def test_mllp_sender_refuses_an_untrusted_listener(tmp_path, ca) -> None:
    other = make_ca(Path(tmp_path) / "other")
    with mllp_listener(ssl=server_context(_tls(other))) as hbys:
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            mllp.send_message("127.0.0.1", hbys.port, MESSAGE, 10, ssl_context=client_context(_tls(ca)))
        assert hbys.received == []


@pytest.mark.parametrize("config", [{"api": {"https": True}}, {"engine": {"commitment_tls": True}},
                                    {"hbys": {"mllp": {"tls": True}}},
                                    {"peers": [{"name": "pacs", "ae_title": "PACS", "host": "h", "port": 104,
                                                "tls": True}]}])
def test_tls_without_a_certificate_is_a_configuration_error(config) -> None:
    with pytest.raises(ConfigError, match="TLS needs node.tls"):
        parse_settings(json.dumps(config), "test", environ={})
