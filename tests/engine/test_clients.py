"""The delivery clients against real listeners: python-hl7's MLLP server, raw sockets that misbehave,
and the aiohttp FHIR endpoint."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from neuropetrix.node.scu import fhir, mllp
from neuropetrix.node.scu.errors import DeliveryError
from tests.support.hbys_peer import fhir_endpoint, mllp_listener
from tests.support.nodeproc import free_port

ORU = ("MSH|^~\\&|NEUROPETRIX|NUKLEER|HBYS|HASTANE|20261124101500||ORU^R01^ORU_R01|CTRL-42|P|2.5|||AL|NE||"
       "UNICODE UTF-8\rPID|1||10000000146^^^MERNIS^NNTUR||YILMAZ^AYŞE\r"
       "OBX|1|NM|SUVMAX^SUVmax^L||9.1|{SUVbw}|||||F\r").encode("utf-8")
BUNDLE = b'{"resourceType": "Bundle", "type": "transaction", "entry": []}'


def test_control_id_is_read_from_any_charset() -> None:
    assert mllp.control_id(ORU) == "CTRL-42"
    with pytest.raises(ValueError, match="does not start with MSH"):
        mllp.control_id(b"PID|1")


@pytest.mark.parametrize("code, permanent", [("AE", False), ("AR", True)])
def test_ack_codes(code: str, permanent: bool) -> None:
    with mllp_listener(["AA", code]) as listener:
        ack = mllp.send_message("127.0.0.1", listener.port, ORU, timeout=5)
        assert (ack.code, ack.control_id) == ("AA", "CTRL-42")
        with pytest.raises(DeliveryError) as err:
            mllp.send_message("127.0.0.1", listener.port, ORU, timeout=5)
        assert err.value.permanent is permanent and code in str(err.value)
        assert "YILMAZ^AYŞE" in listener.received[0]                  # UTF-8 arrived intact


@contextmanager
def raw_server(answer: bytes | None) -> Iterator[int]:
    """Accepts one connection, reads the message, answers `answer` (None: says nothing)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    done = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\x1c\x0d" not in data:
                data += conn.recv(65536)
            if answer is not None:
                conn.sendall(answer)
            done.wait(5)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield port
    finally:
        done.set()
        server.close()


@pytest.mark.parametrize("answer, message", [
    (b"\x0bthis is not HL7\x1c\x0d", "not an HL7 ACK"),
    (b"\x0bMSH|^~\\&|HBYS||||20261124||ACK|1|P|2.5\rMSA|AA|SOMEONE-ELSE\x1c\x0d", "ACK is for message 'SOMEONE-ELSE'"),
    (b"\x0bMSH|^~\\&|HBYS||||20261124||ACK|1|P|2.5\rMSA|XX|CTRL-42\x1c\x0d", "unknown acknowledgment code 'XX'"),
    (None, "no acknowledgment within 0.5 s"),
])
def test_bad_answers_are_retried_with_a_clear_reason(answer: bytes | None, message: str) -> None:
    with raw_server(answer) as port:
        with pytest.raises(DeliveryError) as err:
            mllp.send_message("127.0.0.1", port, ORU, timeout=0.5)
    assert not err.value.permanent and message in str(err.value)


def test_nobody_listening() -> None:
    with pytest.raises(DeliveryError, match="MLLP 127.0.0.1:.*(refused|Connection)") as err:
        mllp.send_message("127.0.0.1", free_port(), ORU, timeout=1)
    assert not err.value.permanent


def test_fhir_token_and_statuses() -> None:
    with fhir_endpoint(token="t0k", answers=[503, 200]) as endpoint:
        with pytest.raises(DeliveryError) as err:
            fhir.post_bundle(endpoint.base_url, BUNDLE, "wrong", timeout=5)
        assert err.value.permanent and "HTTP 401" in str(err.value) and "bad token" in str(err.value)
        with pytest.raises(DeliveryError) as err:
            fhir.post_bundle(endpoint.base_url, BUNDLE, "t0k", timeout=5)
        assert not err.value.permanent and err.value.retry_after == 1.0
        answer = fhir.post_bundle(endpoint.base_url, BUNDLE, "t0k", timeout=5)
        assert answer["type"] == "transaction-response"
        assert endpoint.statuses == [401, 503, 200]
    with pytest.raises(DeliveryError, match="FHIR http://127.0.0.1") as err:
        fhir.post_bundle(f"http://127.0.0.1:{free_port()}/fhir", BUNDLE, None, timeout=1)
    assert not err.value.permanent


def test_retry_after_forms() -> None:
    assert fhir.retry_after_seconds("120") == 120
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    assert 80 < fhir.retry_after_seconds(later) <= 90
    assert fhir.retry_after_seconds("soon") is None and fhir.retry_after_seconds(None) is None
