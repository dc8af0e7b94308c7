"""Bad input on the MLLP port: random bytes, truncated and unframed messages, a 10 MB frame, callers
not allowed. Each costs at most its own connection; the listener answers the next good message."""
from __future__ import annotations

import logging
import random
import socket
import threading

from neuropetrix.config.settings import HbysSettings
from neuropetrix.engine.orders import Intake
from neuropetrix.node.scp.mllp_listener import MllpListener
from tests.conftest import storescu
from tests.hbys import corpus
from tests.hbys.conftest import ack_of
from tests.support.nodeproc import free_port, running_node
from tests.support.synthetic import StudySpec, write_pet_series


def raw_exchange(port: int, data: bytes, timeout: float = 30) -> bytes:
    """Send `data` as it is, half-close, and read whatever comes back until the listener closes.

    A listener that refuses the caller may close before the send or the half-close is done: the socket
    then says broken pipe, reset or not connected (ENOTCONN), each of which means "closed", not a failure."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
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


def test_the_nodes_other_work_goes_on_while_the_listener_is_flooded(tmp_path) -> None:
    """Garbage and a 10 MB frame at the node's MLLP port while a scanner sends a study: the study is
    stored, the listener still answers, and the node logs each refusal."""
    write_pet_series(StudySpec(pet_slices=20, pet_matrix=32), tmp_path / "study")
    listen = free_port()
    with running_node(tmp_path / "node", {"hbys": {"mllp_listen": {"enabled": True, "host": "127.0.0.1",
                                                                   "port": listen}}}) as node:
        rng = random.Random(7)

        def flood() -> None:
            for n in range(100):
                raw_exchange(listen, rng.randbytes(rng.randint(1, 3000)) if n % 2 else
                             b"\x0b" + corpus.orm(f"T{n}", "PL1", "ACC1")[:rng.randint(0, 300)] + b"\x1c\x0d")
            raw_exchange(listen, b"\x0b" + b"MSH|" + b"X" * (10 << 20) + b"\x1c\x0d")

        flooding = threading.Thread(target=flood)
        flooding.start()
        sent = storescu(node.dicom_port, tmp_path / "study", aec=node.ae_title)
        flooding.join(300)
        assert sent.returncode == 0, sent.stderr
        assert not flooding.is_alive()
        with socket.create_connection(("127.0.0.1", listen), timeout=30) as sock:
            sock.sendall(b"\x0b" + corpus.orm("GOOD", "PL2", "ACC2") + b"\x1c\x0d")
            assert b"MSA|AA|GOOD" in sock.recv(65536)
        log = node.log_text()
        assert "20 stored" in log, log[-3000:]
        assert "refused; connection closed" in log and "outside an MLLP frame skipped" in log
