"""Bad input on the MLLP port: random bytes, truncated and unframed messages, a 10 MB frame, callers
not allowed. Each costs at most its own connection; the listener answers the next good message."""
from __future__ import annotations

import logging
import random
import socket

from neuropetrix.config.settings import HbysSettings
from neuropetrix.engine.orders import Intake
from neuropetrix.node.scp.mllp_listener import MllpListener
from tests.hbys import corpus
from tests.hbys.conftest import ack_of
from tests.nodeproc import free_port


def raw_exchange(port: int, data: bytes, timeout: float = 30) -> bytes:
    """Send `data` as it is, half-close, and read whatever comes back until the listener closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


def test_random_and_truncated_frames_leave_the_listener_serving(hbys, caplog) -> None:
    caplog.set_level(logging.INFO, "neuropetrix")
    rng = random.Random(15)
    good = corpus.orm("G0", "PL1", "ACC1")
    answered = 0
    for n in range(100):
        kind = n % 4
        if kind == 0:                                            # random bytes, unframed
            data = rng.randbytes(rng.randint(1, 4000))
        elif kind == 1:                                          # random bytes in a frame
            data = b"\x0b" + rng.randbytes(rng.randint(1, 4000)).replace(b"\x1c", b"") + b"\x1c\x0d"
        elif kind == 2:                                          # a message cut anywhere, framed
            data = b"\x0b" + good[:rng.randint(0, len(good) - 1)] + b"\x1c\x0d"
        else:                                                    # a frame that never ends
            data = b"\x0b" + good[:rng.randint(0, len(good))]
        reply = raw_exchange(hbys.port, data)
        if reply:
            answered += 1
            assert reply.startswith(b"\x0b") and b"MSA|A" in reply, reply[:80]
    assert answered >= 25                    # the framed ones got an ACK (AE/AR), the rest nothing
    assert ack_of(hbys.send(corpus.orm("AFTER", "PL2", "ACC2")))[:2] == ("AA", "AFTER")
    assert "outside an MLLP frame skipped" in caplog.text


def test_a_10_mb_frame_is_refused_and_the_listener_goes_on(hbys, caplog) -> None:
    caplog.set_level(logging.INFO, "neuropetrix")
    huge = b"\x0b" + corpus.orm("BIG", "PL1", "ACC1").rstrip(b"\r") + b"\rNTE|1||" + b"X" * (10 << 20) + b"\r\x1c\x0d"
    assert raw_exchange(hbys.port, huge) == b""
    assert "longer than 262144 bytes refused" in caplog.text
    assert ack_of(hbys.send(corpus.orm("AFTER", "PL2", "ACC2")))[:2] == ("AA", "AFTER")


def test_callers_outside_allowed_callers_are_closed(sessions, caplog) -> None:
    caplog.set_level(logging.INFO, "neuropetrix")
    port = free_port()
    listener = MllpListener("127.0.0.1", port, Intake(sessions, HbysSettings()).receive,
                            allowed_callers=["10.20.0.0/16"])
    listener.start()
    try:
        assert raw_exchange(port, b"\x0b" + corpus.orm("X1", "PL1", "ACC1") + b"\x1c\x0d") == b""
        assert "refused: not in hbys.mllp_listen.allowed_callers" in caplog.text
    finally:
        listener.stop()
    port = free_port()
    listener = MllpListener("127.0.0.1", port, Intake(sessions, HbysSettings()).receive,
                            allowed_callers=["127.0.0.1"])
    listener.start()
    try:
        assert b"MSA|AA|X2" in raw_exchange(port, b"\x0b" + corpus.orm("X2", "PL1", "ACC1") + b"\x1c\x0d")
    finally:
        listener.stop()
