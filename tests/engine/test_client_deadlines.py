"""Trickling peers (issue 14, item 3): an MLLP receiver that sends its ACK a byte at a time without
the end block, or a FHIR server that trickles its status line, headers or body, is given up on when
the delivery's timeout has passed — the timeout bounds the whole exchange, not each read."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from neuropetrix.node.scu import fhir, mllp
from neuropetrix.node.scu.errors import DeliveryError
from tests.engine.test_clients import BUNDLE, ORU

pytestmark = pytest.mark.faults
TIMEOUT = 1.5
SLACK = 2.0             # scheduling on a loaded machine; a per-read timeout would run for TRICKLE_SECONDS
TRICKLE_SECONDS = 20


@contextmanager
def trickler(prefix: bytes, drip: bytes, until: bytes) -> Iterator[int]:
    """Accepts connections; reads until `until`, sends `prefix`, then one byte of `drip` every 0.2 s."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            data = b""
            while until not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            try:
                conn.sendall(prefix)
                started = time.monotonic()
                for i in range(10**6):
                    if stop.wait(0.2) or time.monotonic() - started > TRICKLE_SECONDS:
                        return
                    conn.sendall(drip[i % len(drip):i % len(drip) + 1])
            except OSError:
                return           # the client gave up

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        server.close()


def _given_up(call) -> tuple[DeliveryError, float]:
    started = time.monotonic()
    with pytest.raises(DeliveryError) as err:
        call()
    return err.value, time.monotonic() - started


def test_an_mllp_ack_trickled_without_its_end_block_times_out():
    with trickler(b"\x0bMSH|^~\\&|HBYS||||20261124||ACK|1|P|2.5\rMSA|AA|", b"CTRL-42 and more ", b"\x1c\x0d") as port:
        err, took = _given_up(lambda: mllp.send_message("127.0.0.1", port, ORU, timeout=TIMEOUT))
    assert took < TIMEOUT + SLACK, took
    assert not err.permanent and f"no acknowledgment within {TIMEOUT:g} s" in str(err)


@pytest.mark.parametrize("prefix, drip", [
    (b"", b"HTTP/1.1 200 OK\r\n"),                                                   # the status line
    (b"HTTP/1.1 200 OK\r\n", b"X-Slow: yes\r\n"),                                     # the headers
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 100000\r\n\r\n", b" "),  # body
], ids=["status line", "headers", "body"])
def test_a_trickled_fhir_answer_times_out(prefix: bytes, drip: bytes):
    with trickler(prefix, drip, b'"entry": []}') as port:
        err, took = _given_up(lambda: fhir.post_bundle(f"http://127.0.0.1:{port}/fhir", BUNDLE, None, TIMEOUT))
    assert took < TIMEOUT + SLACK, took
    assert not err.permanent and f"no complete answer within {TIMEOUT:g} s" in str(err)
