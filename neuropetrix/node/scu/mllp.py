"""MLLP client: send one HL7 v2 message and wait for its acknowledgment (original mode).

AA/CA is success. AE/CE (the receiver could not process it now) is retried. AR/CR (the receiver
rejects this message: wrong type, version or content) is permanent: the same bytes would be refused
again, so the message is parked for an operator. An ACK that is not for our message, unreadable, or
missing within the timeout counts as not delivered and is retried. The timeout bounds the whole
exchange (connect, send, ACK): a receiver that trickles bytes without the end block is given up on.
"""
from __future__ import annotations

import logging
import socket
import ssl
import time
from dataclasses import dataclass

import hl7

from neuropetrix.node.scu.errors import DeliveryError

log = logging.getLogger("neuropetrix.scu.mllp")
START, END = b"\x0b", b"\x1c\x0d"
MAX_ACK_BYTES = 1 << 20


@dataclass(frozen=True)
class Ack:
    code: str              # AA, AE, AR (or CA, CE, CR)
    control_id: str        # MSA-2: the MSH-10 it acknowledges
    text: str              # MSA-3 and any ERR segment, for the log and the job's last error


def control_id(message: bytes) -> str:
    """MSH-10 of an HL7 v2 message, read without decoding the rest (any charset)."""
    msh = message.replace(b"\n", b"\r").split(b"\r", 1)[0]
    if not msh.startswith(b"MSH") or len(msh) < 4:
        raise ValueError("not an HL7 v2 message: it does not start with MSH")
    fields = msh.split(msh[3:4])
    if len(fields) < 10 or not fields[9]:
        raise ValueError("the message has no MSH-10 (message control id)")
    return fields[9].decode("ascii", "replace")


def parse_ack(raw: bytes) -> Ack:
    text = raw.decode("utf-8", "replace").replace("\n", "\r").strip("\r")
    try:
        message = hl7.parse(text)
        msa = message.segment("MSA")
    except (KeyError, IndexError, ValueError, hl7.ParseException) as exc:
        raise ValueError(f"not an HL7 ACK ({exc}): {text[:200]!r}") from None
    code, acked = str(msa(1)).strip(), str(msa(2)).strip()
    details = [str(msa(3)).strip()] if len(msa) > 3 else []
    try:
        details += [str(seg) for seg in message.segments("ERR")]
    except KeyError:
        pass
    return Ack(code, acked, " | ".join(d for d in details if d))


def _read_block(sock: socket.socket, deadline: float) -> bytes:
    """One MLLP block, which must end before `deadline` (time.monotonic) however the bytes come."""
    buf = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the receiver closed the connection before acknowledging")
        buf += chunk
        end = buf.find(END)
        if end >= 0:
            start = buf.find(START)
            return bytes(buf[start + 1 if start >= 0 else 0:end])
        if len(buf) > MAX_ACK_BYTES:
            raise ValueError("no MLLP end block within 1 MiB")


def send_message(host: str, port: int, message: bytes, timeout: float,
                 ssl_context: ssl.SSLContext | None = None) -> Ack:
    """Send `message` over a new connection (TLS with `ssl_context`) and return its AA/CA
    acknowledgment; DeliveryError otherwise."""
    where = f"{host}:{port}"
    ours = control_id(message)
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw_sock:
            raw_sock.settimeout(max(0.001, deadline - time.monotonic()))   # the TLS handshake's share
            with (ssl_context.wrap_socket(raw_sock, server_hostname=host) if ssl_context else raw_sock) as sock:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                sock.sendall(START + message + END)
                raw = _read_block(sock, deadline)
    except TimeoutError:
        raise DeliveryError(f"MLLP {where}: no acknowledgment within {timeout:g} s") from None
    except OSError as exc:
        raise DeliveryError(f"MLLP {where}: {exc.strerror or exc}") from None
    try:
        ack = parse_ack(raw)
    except ValueError as exc:
        log.warning("MLLP %s answered something that is not an ACK: %s", where, exc)
        raise DeliveryError(f"MLLP {where}: {exc}") from None
    if ack.control_id != ours:
        raise DeliveryError(f"MLLP {where}: ACK is for message {ack.control_id!r}, not ours ({ours!r})")
    if ack.code in ("AA", "CA"):
        return ack
    if ack.code in ("AR", "CR"):
        raise DeliveryError(f"MLLP {where}: message {ours} rejected ({ack.code}): {ack.text or 'no reason given'}",
                            permanent=True)
    if ack.code in ("AE", "CE"):
        raise DeliveryError(f"MLLP {where}: application error ({ack.code}) for {ours}: "
                            f"{ack.text or 'no reason given'}")
    raise DeliveryError(f"MLLP {where}: unknown acknowledgment code {ack.code!r} for {ours}")
