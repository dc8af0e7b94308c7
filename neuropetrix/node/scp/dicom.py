"""The DICOM SCP: C-ECHO and C-STORE for every storage SOP class, one thread per association.

pynetdicom does the protocol's hard parts here: PDU encoding and decoding, presentation-context and
role negotiation, DIMSE command coding. What this module replaces is pynetdicom's association
*machinery* on the receive path, which FACTS.md measured at 4× slower than dcmtk's storescp: two
polling loops with 1 ms sleeps, three threads per instance, 4 KiB socket reads and whole-dataset
buffering. Here one thread reads PDUs straight from its socket and streams each dataset's bytes into a
temporary file as they arrive (memory does not grow with the instance), and the store decides the
status before the response goes back.
"""
from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import BinaryIO, Protocol

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from pynetdicom import (
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    VerificationPresentationContexts,
)
from pynetdicom._globals import APPLICATION_CONTEXT_NAME
from pynetdicom.dsutils import decode
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import (
    PresentationContext,
    build_context,
    negotiate_as_acceptor,
)
from pynetdicom.sop_class import _STORAGE_CLASSES

from neuropetrix import metrics
from neuropetrix.store.ingest import (
    HEAD_BYTES,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
    OUT_OF_RESOURCES,
    Ingest,
    Outcome,
    file_header,
    is_disk_full,
)

log = logging.getLogger("neuropetrix.scp")


# PDU types (PS3.8 9.3)
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = range(1, 8)
C_STORE_RQ, C_STORE_RSP, C_ECHO_RQ, C_ECHO_RSP, C_CANCEL_RQ = 0x0001, 0x8001, 0x0030, 0x8030, 0x0FFF
N_CREATE_RQ, N_CREATE_RSP, N_SET_RQ, N_SET_RSP = 0x0140, 0x8140, 0x0120, 0x8120
MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
MAX_STEP_DATASET = 1 << 20   # an MPPS dataset is a few KiB; more is refused, not buffered
NO_DATASET = 0x0101
MAX_CONTROL_PDU = 1 << 20   # A-ASSOCIATE-RQ and friends; P-DATA is streamed whatever its length
CHUNK = 1 << 20
MAX_COMMAND = 1 << 16


class ProtocolError(Exception):
    """The peer broke the upper-layer protocol; the association is aborted."""


class PeerClosed(Exception):
    """The connection ended (closed or aborted by the peer)."""


def storage_contexts(mpps: bool = False) -> list[PresentationContext]:
    """Every storage SOP class pynetdicom knows (PET, CT, Enhanced …) and Verification, with every
    transfer syntax: instances are stored as they arrive, never re-encoded. MPPS when handled."""
    uids = {cx.abstract_syntax for cx in AllStoragePresentationContexts}
    uids.update(str(uid) for uid in _STORAGE_CLASSES.values())
    uids.update(cx.abstract_syntax for cx in VerificationPresentationContexts)
    if mpps:
        uids.add(MPPS_SOP_CLASS)
    return [build_context(uid, ALL_TRANSFER_SYNTAXES) for uid in sorted(uids)]


class StepHandler(Protocol):
    """Where N-CREATE and N-SET of procedure steps go (the engine's ProcedureSteps)."""

    def create(self, sop_instance_uid: str, ds: Dataset, calling_ae: str) -> StepAnswerLike: ...

    def update(self, sop_instance_uid: str, ds: Dataset, calling_ae: str) -> StepAnswerLike: ...


class StepAnswerLike(Protocol):
    status: int
    sop_instance_uid: str
    comment: str


@dataclass
class AcceptancePolicy:
    """Who may associate: the node's AE title and the callers it knows."""

    ae_title: str
    known_callers: frozenset[str]
    accept_unknown_callers: bool = False
    check_called_ae: bool = True

    def refusal(self, calling: str, called: str) -> tuple[int, int, int, str] | None:
        """(result, source, reason, why) of an A-ASSOCIATE-RJ, or None to accept."""
        if not self.accept_unknown_callers and calling not in self.known_callers:
            return 1, 1, 3, "calling AE title not recognised"
        if self.check_called_ae and called != self.ae_title:
            return 1, 1, 7, f"called AE title {called!r} is not {self.ae_title!r}"
        return None


@dataclass
class ServerLimits:
    max_associations: int = 32
    acse_timeout: float = 30.0
    network_timeout: float = 60.0
    max_pdu_size: int = 0


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def _pdata(context_id: int, command: bytes) -> bytes:
    """One P-DATA-TF with one PDV holding a whole command (last fragment, command)."""
    return _pdu(P_DATA_TF, struct.pack(">IBB", len(command) + 2, context_id, 0x03) + command)


def _element(element: int, value: bytes) -> bytes:
    """One Implicit VR Little Endian element of the command group 0000."""
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii", "replace")
    return raw + pad if len(raw) % 2 else raw


def encode_response(field_: int, sop_class_uid: str, message_id: int, status: int,
                    sop_instance_uid: str = "", comment: str = "") -> bytes:
    """A DIMSE response command set (PS3.7 9.3/E.1), group length first, elements in tag order.

    Encoded directly because it goes out once per instance and pydicom's general encoder cost more
    than the rest of the response path (the tests decode it with pydicom)."""
    body = (_element(0x0002, _padded(sop_class_uid, b"\0"))
            + _element(0x0100, struct.pack("<H", field_))
            + _element(0x0120, struct.pack("<H", message_id))
            + _element(0x0800, struct.pack("<H", NO_DATASET))
            + _element(0x0900, struct.pack("<H", status))
            + (_element(0x0902, _padded(comment[:64], b" ")) if comment else b"")
            + (_element(0x1000, _padded(sop_instance_uid, b"\0")) if sop_instance_uid else b""))
    return _element(0x0000, struct.pack("<I", len(body))) + body


@dataclass
class _Transfer:
    """A C-STORE dataset being streamed to its temporary file."""

    message_id: int
    context_id: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    temp: Path | None                 # None: a procedure step's dataset, kept in memory (fp is a BytesIO)
    fp: BinaryIO | None
    command: int = C_STORE_RQ
    failure: Outcome | None = None
    size: int = 0
    head: bytearray = field(default_factory=bytearray)


@dataclass
class _Stats:
    stored: int = 0
    duplicates: int = 0
    failed: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)


class Association:
    """One accepted connection, from A-ASSOCIATE-RQ to release or abort."""

    def __init__(self, server: DicomServer, sock: socket.socket, address: tuple[str, int]) -> None:
        self.server = server
        self.sock = sock
        self.host = f"{address[0]}:{address[1]}"
        self.calling_ae = "?"
        self.contexts: dict[int, tuple[str, str]] = {}   # id → (abstract syntax, transfer syntax)
        self.rfile = sock.makefile("rb", buffering=CHUNK)
        self.busy = threading.Lock()      # held from a C-STORE command to its response
        self.closing = False
        self.stats = _Stats()
        self._chunk = bytearray(CHUNK)

    # -- reading --------------------------------------------------------------------------------
    def _read(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if data is None or len(data) < n:
            raise PeerClosed("connection closed by peer")
        return data

    def _read_header(self) -> tuple[int, int]:
        pdu_type, _, length = struct.unpack(">BBI", self._read(6))
        return pdu_type, length

    def _stream(self, n: int, sink: Callable[[memoryview], None]) -> None:
        view = memoryview(self._chunk)
        while n > 0:
            got = self.rfile.readinto(view[:min(n, CHUNK)])
            if not got:
                raise PeerClosed("connection closed mid-transfer")
            sink(view[:got])
            n -= got

    def _send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def abort(self, source: int = 2, reason: int = 0) -> None:
        try:
            self._send(_pdu(ABORT, struct.pack(">BBBB", 0, 0, source, reason)))
        except OSError:
            pass

    # -- association set-up ---------------------------------------------------------------------
    def negotiate(self) -> bool:
        self.sock.settimeout(self.server.limits.acse_timeout)
        pdu_type, length = self._read_header()
        if pdu_type != ASSOCIATE_RQ or length > MAX_CONTROL_PDU:
            raise ProtocolError(f"expected A-ASSOCIATE-RQ, got PDU type 0x{pdu_type:02x} ({length} bytes)")
        rq_pdu = A_ASSOCIATE_RQ()
        try:
            rq_pdu.decode(_pdu(ASSOCIATE_RQ, self._read(length)))
            rq = rq_pdu.to_primitive()
        except Exception as exc:   # pynetdicom raises assorted errors on malformed items
            raise ProtocolError(f"malformed A-ASSOCIATE-RQ: {exc}") from None
        self.calling_ae = (rq.calling_ae_title or "").strip()
        called = (rq.called_ae_title or "").strip()
        refusal = self.server.policy.refusal(self.calling_ae, called)
        if refusal is None and str(rq.application_context_name) != APPLICATION_CONTEXT_NAME:
            refusal = (1, 1, 2, f"application context {rq.application_context_name} not supported")
        if refusal is None and not self.server.admit(self):
            refusal = (2, 3, 2, "too many associations")
        if refusal is not None:
            result, source, reason, why = refusal
            rj = A_ASSOCIATE_RJ()
            prim = A_ASSOCIATE()
            prim.result, prim.result_source, prim.diagnostic = result, source, reason
            rj.from_primitive(prim)
            self._send(rj.encode())
            metrics.ASSOCIATIONS.labels("rejected").inc()
            log.warning("refused association from %s (%s) to %s: %s", self.calling_ae, self.host, called, why)
            return False

        roles = {item.sop_class_uid: (item.scu_role, item.scp_role)
                 for item in rq.user_information if type(item).__name__ == "SCP_SCU_RoleSelectionNegotiation"}
        results, ac_roles = negotiate_as_acceptor(rq.presentation_context_definition_list,
                                                  self.server.contexts, roles)
        for cx in results:
            if cx.result == 0:
                self.contexts[cx.context_id] = (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
        ac = A_ASSOCIATE()
        ac.application_context_name = APPLICATION_CONTEXT_NAME
        ac.calling_ae_title, ac.called_ae_title = rq.calling_ae_title, rq.called_ae_title
        ac.result, ac.result_source = 0, 1
        ac.presentation_context_definition_results_list = results
        max_length = MaximumLengthNotification()
        max_length.maximum_length_received = self.server.limits.max_pdu_size
        impl_uid = ImplementationClassUIDNotification()
        impl_uid.implementation_class_uid = IMPLEMENTATION_CLASS_UID
        impl_name = ImplementationVersionNameNotification()
        impl_name.implementation_version_name = IMPLEMENTATION_VERSION
        ac.user_information = [max_length, impl_uid, impl_name, *ac_roles]
        ac_pdu = A_ASSOCIATE_AC()
        ac_pdu.from_primitive(ac)
        self._send(ac_pdu.encode())
        metrics.ASSOCIATIONS.labels("accepted").inc()
        log.info("association from %s (%s) to %s accepted: %d of %d presentation contexts",
                 self.calling_ae, self.host, called, len(self.contexts), len(results))
        return True

    # -- the association's life -----------------------------------------------------------------
    def serve(self) -> None:
        self.sock.settimeout(self.server.limits.network_timeout)
        command = bytearray()
        transfer: _Transfer | None = None
        try:
            while True:
                pdu_type, length = self._read_header()
                if pdu_type == P_DATA_TF:
                    transfer = self._pdata(length, command, transfer)
                elif pdu_type == RELEASE_RQ:
                    self._read(length)
                    self._send(_pdu(RELEASE_RP, b"\0\0\0\0"))
                    self._log_end("released")
                    return
                elif pdu_type == ABORT:
                    self._read(min(length, 64))
                    raise PeerClosed("aborted by peer")
                else:
                    raise ProtocolError(f"unexpected PDU type 0x{pdu_type:02x} during association")
        finally:
            if transfer is not None:
                self._drop(transfer)

    def _pdata(self, length: int, command: bytearray, transfer: _Transfer | None) -> _Transfer | None:
        remaining = length
        while remaining > 0:
            if remaining < 6:
                raise ProtocolError("P-DATA-TF with a truncated PDV")
            item_length, context_id, control = struct.unpack(">IBB", self._read(6))
            if item_length < 2 or item_length + 4 > remaining:
                raise ProtocolError(f"PDV length {item_length} does not fit its PDU")
            remaining -= item_length + 4
            data_length = item_length - 2
            if control & 0x01:    # command fragment
                if len(command) + data_length > MAX_COMMAND:
                    raise ProtocolError("command set larger than 64 KiB")
                command += self._read(data_length)
                if control & 0x02:
                    transfer = self._command(context_id, bytes(command), transfer)
                    command.clear()
            else:                 # dataset fragment
                if transfer is None or transfer.context_id != context_id:
                    raise ProtocolError("dataset fragment without a C-STORE request")
                self._stream(data_length, lambda chunk, t=transfer: self._write(t, chunk))
                if control & 0x02:
                    done, transfer = transfer, None
                    self._finish(done)
        return transfer

    def _command(self, context_id: int, raw: bytes, transfer: _Transfer | None) -> _Transfer | None:
        if context_id not in self.contexts:
            raise ProtocolError(f"message on presentation context {context_id}, which was not accepted")
        if transfer is not None:
            raise ProtocolError("new command before the previous dataset was complete")
        try:
            cmd = decode(BytesIO(raw), True, True)
            field_ = int(cmd.CommandField)
        except Exception as exc:
            raise ProtocolError(f"undecodable command set: {exc}") from None
        if field_ == C_ECHO_RQ:
            self._respond(context_id, cmd, C_ECHO_RSP, 0x0000)
            log.debug("C-ECHO from %s (%s)", self.calling_ae, self.host)
            return None
        if field_ == C_CANCEL_RQ:
            return None
        if field_ not in (C_STORE_RQ, N_CREATE_RQ, N_SET_RQ) \
                or int(cmd.get("CommandDataSetType", NO_DATASET)) == NO_DATASET:
            raise ProtocolError(f"unsupported DIMSE command 0x{field_:04x}")
        abstract, syntax = self.contexts[context_id]
        self.busy.acquire()
        if self.closing:
            self.busy.release()
            raise PeerClosed("node is shutting down")
        if field_ != C_STORE_RQ:
            if abstract != MPPS_SOP_CLASS:
                self.busy.release()
                raise ProtocolError(f"N-CREATE/N-SET on {abstract}, which is not MPPS")
            uid = cmd.get("AffectedSOPInstanceUID") if field_ == N_CREATE_RQ else cmd.get("RequestedSOPInstanceUID")
            return _Transfer(int(cmd.MessageID), context_id, abstract, str(uid or "").rstrip("\0"), syntax,
                             None, BytesIO(), field_)
        temp = self.server.ingest.new_temp()
        t = _Transfer(int(cmd.MessageID), context_id, str(cmd.AffectedSOPClassUID).rstrip("\0"),
                      str(cmd.AffectedSOPInstanceUID).rstrip("\0"), syntax, temp, None)
        try:
            t.fp = open(temp, "wb")
            t.fp.write(file_header(t.sop_class_uid, t.sop_instance_uid, syntax, self.calling_ae))
        except OSError as exc:
            self._fail(t, exc)
        return t

    def _write(self, t: _Transfer, chunk: memoryview) -> None:
        t.size += len(chunk)
        if len(t.head) < HEAD_BYTES:
            t.head += chunk[:HEAD_BYTES - len(t.head)]
        if t.fp is None:
            return   # failed earlier: the rest of the dataset is read and dropped
        if t.temp is None and t.size > MAX_STEP_DATASET:
            t.fp, t.failure = None, Outcome(0x0110, "procedure step dataset larger than 1 MiB")
            return
        try:
            t.fp.write(chunk)
        except OSError as exc:
            self._fail(t, exc)

    def _fail(self, t: _Transfer, exc: OSError) -> None:
        if t.fp is not None:
            try:
                t.fp.close()
            except OSError:
                pass
            t.fp = None
        self.server.ingest.discard(t.temp)
        why = "out of storage space" if is_disk_full(exc) else f"cannot write: {exc.strerror}"
        log.error("refusing %s from %s (%s): %s", t.sop_instance_uid, self.calling_ae, self.host, why)
        t.failure = Outcome(OUT_OF_RESOURCES, why)

    def _finish(self, t: _Transfer) -> None:
        if t.command != C_STORE_RQ:
            try:
                self._procedure_step(t)
            finally:
                self.busy.release()
            return
        try:
            if t.fp is not None:
                try:
                    t.fp.flush()
                    if self.server.fsync:
                        os.fdatasync(t.fp.fileno())   # the data and its size; the folder comes later
                    t.fp.close()
                    t.fp = None
                except OSError as exc:
                    self._fail(t, exc)
            outcome = t.failure or self.server.ingest.accept(
                t.temp, sop_class_uid=t.sop_class_uid, sop_instance_uid=t.sop_instance_uid,
                transfer_syntax=t.transfer_syntax, calling_ae=self.calling_ae, calling_host=self.host,
                head=bytes(t.head))
            self._count(outcome, t.size)
            self._respond(t.context_id, None, C_STORE_RSP, outcome.status, t, outcome.message)
        finally:
            self.busy.release()

    def _procedure_step(self, t: _Transfer) -> None:
        """N-CREATE or N-SET of an MPPS: decode the small dataset and let the engine's handler answer."""
        response = N_CREATE_RSP if t.command == N_CREATE_RQ else N_SET_RSP
        if t.failure is not None:
            self._respond(t.context_id, None, response, t.failure.status, t, t.failure.message)
            return
        syntax = UID(t.transfer_syntax)
        try:
            ds = read_dataset(BytesIO(t.fp.getvalue()), syntax.is_implicit_VR, syntax.is_little_endian)
            handler = self.server.steps
            answer = (handler.create if t.command == N_CREATE_RQ else handler.update)(
                t.sop_instance_uid, ds, self.calling_ae)
        except Exception as exc:
            log.warning("procedure step %s from %s (%s) refused: %s", t.sop_instance_uid or "(new)",
                        self.calling_ae, self.host, exc)
            self._respond(t.context_id, None, response, 0x0110, t, f"cannot process: {exc}")
            return
        if answer.status != 0:
            log.warning("procedure step %s from %s (%s): status 0x%04X %s", answer.sop_instance_uid,
                        self.calling_ae, self.host, answer.status, answer.comment)
        t.sop_instance_uid = answer.sop_instance_uid or t.sop_instance_uid
        self._respond(t.context_id, None, response, answer.status, t, answer.comment)

    def _count(self, outcome: Outcome, size: int) -> None:
        if outcome.status != 0:
            self.stats.failed += 1
            metrics.INSTANCES_REFUSED.labels(f"0x{outcome.status:04X}").inc()
        elif outcome.duplicate:
            self.stats.duplicates += 1
        else:
            self.stats.stored += 1
            self.stats.bytes += size

    def _drop(self, t: _Transfer) -> None:
        """The association ended mid-dataset: nothing was acknowledged, nothing is kept."""
        if t.fp is not None:
            t.fp.close()
        if t.temp is not None:
            self.server.ingest.discard(t.temp)
        self.busy.release()
        log.warning("association from %s (%s) ended mid-transfer of %s; partial data discarded",
                    self.calling_ae, self.host, t.sop_instance_uid)

    def _respond(self, context_id: int, cmd: Dataset | None, field_: int, status: int,
                 t: _Transfer | None = None, comment: str = "") -> None:
        if t is not None:
            sop_class, message_id, sop_instance = t.sop_class_uid, t.message_id, t.sop_instance_uid
        else:
            sop_class, message_id = str(cmd.AffectedSOPClassUID).rstrip("\0"), int(cmd.MessageID)
            sop_instance = ""
        command = encode_response(field_, sop_class, message_id, status, sop_instance,
                                  comment if status != 0x0000 else "")
        self._send(_pdata(context_id, command))

    def _log_end(self, how: str) -> None:
        s = self.stats
        elapsed = time.monotonic() - s.started
        log.info("association from %s (%s) %s: %d stored (%.1f MB), %d duplicate, %d failed in %.1f s",
                 self.calling_ae, self.host, how, s.stored, s.bytes / 1e6, s.duplicates, s.failed, elapsed)

    def run(self) -> None:
        try:
            if self.negotiate():
                self.serve()
        except PeerClosed as exc:
            if self.contexts:
                self._log_end(str(exc))
            else:
                log.warning("connection from %s closed before association: %s", self.host, exc)
        except ProtocolError as exc:
            log.warning("aborting association from %s (%s): %s", self.calling_ae, self.host, exc)
            self.abort(source=2, reason=0)
        except TimeoutError:
            log.warning("aborting association from %s (%s): silent for too long", self.calling_ae, self.host)
            self.abort(source=2, reason=0)
        except OSError as exc:
            if not self.closing:
                log.warning("connection from %s (%s) failed: %s", self.calling_ae, self.host, exc)
        except Exception:
            log.exception("association from %s (%s) failed", self.calling_ae, self.host)
            self.abort()
        finally:
            self.server.release(self)
            try:
                self.rfile.close()
                self.sock.close()
            except OSError:
                pass

    def shut(self) -> None:
        """Called by the server at shutdown: wait for the instance in hand, then abort."""
        with self.busy:
            self.closing = True
            self.abort(source=0, reason=0)
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class DicomServer:
    """Listens, admits associations within the limits, shuts down without losing an instance."""

    def __init__(self, host: str, port: int, policy: AcceptancePolicy, ingest: Ingest,
                 limits: ServerLimits | None = None, fsync: bool = True, steps: StepHandler | None = None) -> None:
        self.host, self.port = host, port
        self.policy = policy
        self.ingest = ingest
        self.limits = limits or ServerLimits()
        self.fsync = fsync
        self.steps = steps
        self.contexts = storage_contexts(mpps=steps is not None)
        self._sock: socket.socket | None = None
        self._active: set[Association] = set()
        self._pending = threading.BoundedSemaphore(max(4 * self.limits.max_associations, 16))
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        sock = socket.create_server((self.host, self.port), reuse_port=False, backlog=128)
        sock.settimeout(0.25)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="dicom-accept", daemon=True)
        self._thread.start()
        log.info("DICOM SCP %s listening on %s:%d (%d storage contexts)", self.policy.ae_title,
                 self.host, self.port, len(self.contexts))
        return self.port

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, address = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            if not self._pending.acquire(blocking=False):
                log.warning("dropping connection from %s:%d: too many connections waiting", *address[:2])
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assoc = Association(self, conn, address[:2])
            threading.Thread(target=self._run, args=(assoc,), name=f"assoc-{address[0]}:{address[1]}",
                             daemon=True).start()

    def _run(self, assoc: Association) -> None:
        try:
            assoc.run()
        finally:
            self._pending.release()

    def admit(self, assoc: Association) -> bool:
        with self._lock:
            if self._stopping.is_set() or len(self._active) >= self.limits.max_associations:
                return False
            self._active.add(assoc)
            return True

    def release(self, assoc: Association) -> None:
        with self._lock:
            self._active.discard(assoc)

    @property
    def listening(self) -> bool:
        """True while the accept loop runs (for /readyz)."""
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    @property
    def active_associations(self) -> int:
        with self._lock:
            return len(self._active)

    def stop(self, grace: float = 30.0) -> None:
        """Refuse new associations, let each finish the instance in hand, then abort them."""
        self._stopping.set()
        if self._sock is not None:
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            active = list(self._active)
        for assoc in active:
            closer = threading.Thread(target=assoc.shut, daemon=True)
            closer.start()
            closer.join(timeout=grace)
        deadline = time.monotonic() + grace
        while self.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        log.info("DICOM SCP stopped")
