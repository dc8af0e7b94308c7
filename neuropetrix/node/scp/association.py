"""One association, from A-ASSOCIATE-RQ to release or abort, on its own thread.

pynetdicom does the protocol's hard parts here (PDU decoding, presentation-context and role
negotiation, command decoding). What this replaces is pynetdicom's association *machinery*, which
FACTS.md measured at 4× slower than dcmtk's storescp (two polling loops with 1 ms sleeps, three
threads per instance, 4 KiB reads, whole datasets in memory): here the association's thread reads
PDUs straight from its socket and pulls each request's dataset through as it arrives — a C-STORE's
into the store's `IncomingInstance` (memory does not grow with the instance), an MPPS dataset or a
C-FIND identifier into memory (bounded) — and answers before reading the next request.

A request holds `busy` from its command to its response (one `with`): shutdown waits for the
request in hand, never cuts one.
"""
from __future__ import annotations

import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import MaximumLengthNotification, SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import negotiate_as_acceptor
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from neuropetrix import metrics
from neuropetrix.node.scp.find import answer_find
from neuropetrix.node.scp.policy import APPLICATION_CONTEXT_NOT_SUPPORTED, LOCAL_LIMIT_EXCEEDED
from neuropetrix.node.scp.retrieve import SubOperations
from neuropetrix.node.scp.status import (
    MOVE_DESTINATION_UNKNOWN,
    OUT_OF_RESOURCES,
    PENDING,
    PROCESSING_FAILURE,
    SUCCESS,
    UNABLE_TO_PROCESS,
)
from neuropetrix.node.scp.wire import (
    ABORT,
    APPLICATION_CONTEXT,
    ASSOCIATE_RQ,
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_ECHO_RSP,
    C_FIND_RQ,
    C_FIND_RSP,
    C_GET_RQ,
    C_GET_RSP,
    C_MOVE_RQ,
    C_MOVE_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
    N_CREATE_RQ,
    N_CREATE_RSP,
    N_SET_RQ,
    N_SET_RSP,
    P_DATA_TF,
    PDV_COMMAND,
    PDV_LAST,
    RELEASE_RP_PDU,
    RELEASE_RQ,
    Command,
    abort_pdu,
    associate_ac,
    associate_rj,
    decode_command,
    encode_response,
    encode_store_request,
    file_header,
    pdata,
    pdu,
    split_file,
)
from neuropetrix.node.scu.dicom import SendError, send_files
from neuropetrix.store.files import TempFile
from neuropetrix.store.incoming import IncomingInstance
from neuropetrix.store.index import InstanceRecord
from neuropetrix.store.ingest import Outcome, StoreRequest

if TYPE_CHECKING:
    from neuropetrix.node.scp.server import DicomServer

log = logging.getLogger("neuropetrix.scp")

MAX_CONTROL_PDU = 1 << 20   # A-ASSOCIATE-RQ and friends; P-DATA is streamed whatever its length
MAX_COMMAND = 1 << 16
MAX_SMALL_DATASET = 1 << 20  # an MPPS dataset or a C-FIND identifier is a few KiB; more is refused
ROWS_WAIT_S = 0.005          # a peer silent this long after an answer: its instances' rows are written now
CHUNK = 1 << 20
_NAMES = {C_FIND_RQ: "C-FIND", C_MOVE_RQ: "C-MOVE", C_GET_RQ: "C-GET"}
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)   # re-encoded between each other for a C-GET


class ProtocolError(Exception):
    """The peer broke the upper-layer protocol; the association is aborted."""


class PeerClosed(Exception):
    """The connection ended (closed or aborted by the peer)."""


class StepHandler(Protocol):
    """Where N-CREATE and N-SET of procedure steps go (the engine's ProcedureSteps)."""

    def create(self, sop_instance_uid: str, ds: Dataset, calling_ae: str) -> StepAnswerLike: ...

    def update(self, sop_instance_uid: str, ds: Dataset, calling_ae: str) -> StepAnswerLike: ...


class AssociationAudit(Protocol):
    """Where associations and queries are recorded for the access audit trail (store/audit.py)."""

    def association(self, calling_ae: str, called_ae: str, address: str, accepted: bool, why: str) -> None: ...

    def query(self, calling_ae: str, address: str, sop_class_uid: str, identifier: Dataset, status: int) -> None: ...


class StepAnswerLike(Protocol):
    status: int
    sop_instance_uid: str
    comment: str


@dataclass
class _Stats:
    stored: int = 0
    duplicates: int = 0
    failed: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)


class Association:
    """One accepted connection: negotiation, then requests one at a time until release or abort."""

    def __init__(self, server: DicomServer, sock: socket.socket, address: tuple[str, int]) -> None:
        self.server = server
        self.limits = server.limits
        self.sock = sock
        self.host = f"{address[0]}:{address[1]}"
        self.calling_ae = "?"
        self.contexts: dict[int, tuple[str, str]] = {}   # id → (abstract syntax, transfer syntax)
        self.store_out: dict[tuple[str, str], int] = {}   # (SOP class, syntax) → id, where we may C-STORE (C-GET)
        self.peer_max_pdu = 0                            # the requestor's Maximum Length Received
        self.rfile = sock.makefile("rb", buffering=CHUNK)
        self.busy = threading.Lock()      # held from a request's command to its response
        self.closing = False
        self.stats = _Stats()
        self._chunk = bytearray(CHUNK)
        self._pdu_left = 0                # bytes of the current P-DATA-TF not read yet
        self._cancel_seen = False         # a C-CANCEL read while waiting for a C-GET sub-operation's answer
        self._spare: TempFile | None = None  # opened after an instance was answered, for the next one
        self._rows: list[InstanceRecord] = []  # index rows of answered instances, not written yet
        self._poll: select.poll | None = None

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

    def _next_pdv(self, idle: bool) -> tuple[int, int, int] | None:
        """(context id, control header, data length) of the next PDV, its data not read yet; None when
        the peer releases the association, which it may only do between requests (`idle`)."""
        # waiting for the next request: the DIMSE timeout; within one: the network's (two system calls
        # each way, skipped when they are the same)
        switch = idle and self.limits.dimse_timeout != self.limits.network_timeout
        if idle and self._rows and not self._input_waiting(ROWS_WAIT_S):
            self._write_rows()      # nothing coming at once: no next instance's flush to write them under
        while self._pdu_left == 0:
            if switch:
                self.sock.settimeout(self.limits.dimse_timeout)
            pdu_type, length = self._read_header()
            if switch:
                self.sock.settimeout(self.limits.network_timeout)
            if pdu_type == P_DATA_TF:
                self._pdu_left = length
            elif pdu_type == RELEASE_RQ and idle:
                self._read(length)
                self._write_rows()      # a peer that released finds every row written
                self._send(RELEASE_RP_PDU)
                return None
            elif pdu_type == ABORT:
                self._read(min(length, 64))
                raise PeerClosed("aborted by peer")
            else:
                raise ProtocolError(f"unexpected PDU type 0x{pdu_type:02x} during association")
        if self._pdu_left < 6:
            raise ProtocolError("P-DATA-TF with a truncated PDV")
        item_length, context_id, control = struct.unpack(">IBB", self._read(6))
        if item_length < 2 or item_length + 4 > self._pdu_left:
            raise ProtocolError(f"PDV length {item_length} does not fit its PDU")
        self._pdu_left -= item_length + 4
        return context_id, control, item_length - 2

    def _read_command(self) -> tuple[int, Command] | None:
        """The next request's context id and command set; None when the peer released."""
        command = bytearray()
        while True:
            pdv = self._next_pdv(idle=not command)
            if pdv is None:
                return None
            context_id, control, n = pdv
            if not control & PDV_COMMAND:
                raise ProtocolError("dataset fragment without a request")
            if len(command) + n > MAX_COMMAND:
                raise ProtocolError("command set larger than 64 KiB")
            command += self._read(n)
            if control & PDV_LAST:
                break
        if context_id not in self.contexts:
            raise ProtocolError(f"message on presentation context {context_id}, which was not accepted")
        try:
            cmd = decode_command(bytes(command))
        except ValueError as exc:
            raise ProtocolError(f"undecodable command set: {exc}") from None
        return context_id, cmd

    def _read_dataset(self, context_id: int, sink: Callable[[memoryview], None]) -> None:
        """Stream the dataset that follows a request's command into `sink`, fragment by fragment."""
        while True:
            pdv = self._next_pdv(idle=False)
            assert pdv is not None   # a release is only taken between requests
            cx, control, n = pdv
            if control & PDV_COMMAND or cx != context_id:
                raise ProtocolError("new command before the previous dataset was complete")
            self._stream(n, sink)
            if control & PDV_LAST:
                return

    def _read_small_dataset(self, context_id: int) -> bytes | None:
        """A request's small dataset (MPPS, C-FIND identifier) as received; None when over 1 MiB."""
        buf = bytearray()
        over = False

        def keep(chunk: memoryview) -> None:
            nonlocal over
            over = over or len(buf) + len(chunk) > MAX_SMALL_DATASET
            if not over:
                buf.extend(chunk)
        self._read_dataset(context_id, keep)
        return None if over else bytes(buf)

    def _decode(self, context_id: int, raw: bytes) -> Dataset:
        """A small dataset decoded by pydicom in its context's transfer syntax (which raises assorted
        errors, OSError among them, on malformed data: the caller answers with a failure status)."""
        syntax = UID(self.contexts[context_id][1])
        return read_dataset(BytesIO(raw), syntax.is_implicit_VR, syntax.is_little_endian)

    def _input_waiting(self, wait: float = 0.0) -> bool:
        """Whether the peer has sent something not read yet (a C-CANCEL during a C-FIND), or does
        within `wait` seconds."""
        if self._pdu_left:
            return True
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        self.sock.settimeout(0.0)
        try:
            if self.rfile.peek(1):
                return True
        except (ssl.SSLWantReadError, BlockingIOError):    # TLS: nothing decrypted yet
            pass
        finally:
            self.sock.settimeout(self.limits.network_timeout)
        if wait <= 0:
            return False
        # poll, not a socket timeout: a timed-out read would leave the file object unusable
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self.sock, select.POLLIN)
        return bool(self._poll.poll(wait * 1000))

    def _send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def abort(self, source: int = 2, reason: int = 0) -> None:
        try:
            self._send(abort_pdu(source, reason))
        except OSError:
            pass

    # -- association set-up ---------------------------------------------------------------------
    def negotiate(self) -> bool:
        self.sock.settimeout(self.limits.acse_timeout)
        pdu_type, length = self._read_header()
        if pdu_type != ASSOCIATE_RQ or length > MAX_CONTROL_PDU:
            raise ProtocolError(f"expected A-ASSOCIATE-RQ, got PDU type 0x{pdu_type:02x} ({length} bytes)")
        rq_pdu = A_ASSOCIATE_RQ()
        try:
            rq_pdu.decode(pdu(ASSOCIATE_RQ, self._read(length)))
            rq = rq_pdu.to_primitive()
        except Exception as exc:   # pynetdicom raises assorted errors on malformed items
            raise ProtocolError(f"malformed A-ASSOCIATE-RQ: {exc}") from None
        self.calling_ae = (rq.calling_ae_title or "").strip()
        called = (rq.called_ae_title or "").strip()
        refusal = self.server.policy.refusal(self.calling_ae, called)
        if refusal is None and rq.application_context_name != APPLICATION_CONTEXT:
            refusal = (*APPLICATION_CONTEXT_NOT_SUPPORTED,
                       f"application context {rq.application_context_name} not supported")
        if refusal is None and not self.server.admit(self):
            refusal = (*LOCAL_LIMIT_EXCEEDED, "too many associations")
        if refusal is not None:
            result, source, reason, why = refusal
            # recorded and logged before the caller hears: whoever reads the log after a refusal finds why
            self._audit_association(called, False, why)
            log.warning("refused association from %s (%s) to %s: %s", self.calling_ae, self.host, called, why)
            metrics.ASSOCIATIONS.labels("rejected").inc()
            self._send(associate_rj(result, source, reason))
            return False

        roles = {item.sop_class_uid: (item.scu_role, item.scp_role)
                 for item in rq.user_information if isinstance(item, SCP_SCU_RoleSelectionNegotiation)}
        self.peer_max_pdu = next((item.maximum_length_received or 0 for item in rq.user_information
                                  if isinstance(item, MaximumLengthNotification)), 0)
        results, ac_roles = negotiate_as_acceptor(rq.presentation_context_definition_list,
                                                  self.server.contexts, roles)
        for cx in results:
            if cx.result == 0:
                self.contexts[cx.context_id] = (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                if cx.as_scu:       # the requestor took the SCP role: a C-GET's sub-operations go here
                    self.store_out.setdefault(self.contexts[cx.context_id], cx.context_id)
        self._audit_association(called, True, "")
        self._send(associate_ac(rq, results, ac_roles, self.limits.max_pdu_size))
        metrics.ASSOCIATIONS.labels("accepted").inc()
        log.info("association from %s (%s) to %s accepted: %d of %d presentation contexts",
                 self.calling_ae, self.host, called, len(self.contexts), len(results))
        return True

    def _audit_association(self, called: str, accepted: bool, why: str) -> None:
        if self.server.audit is not None:
            self.server.audit.association(self.calling_ae, called, self.host, accepted, why)

    def handshake(self) -> None:
        """On the TLS port: the TLS handshake, under the association timeout (a plaintext caller or
        one whose certificate fails fails here, before any DICOM byte is read)."""
        if isinstance(self.sock, ssl.SSLSocket):
            self.sock.settimeout(self.limits.acse_timeout)
            try:
                self.sock.do_handshake()
            except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
                log.warning("TLS handshake with %s failed: %s", self.host, exc)
                if self.server.audit is not None:
                    self.server.audit.association("?", self.server.policy.ae_title, self.host, False,
                                                  f"TLS handshake failed: {exc}")
                raise PeerClosed(f"TLS handshake failed: {exc}") from None

    # -- requests -------------------------------------------------------------------------------
    def serve(self) -> None:
        self.sock.settimeout(self.limits.network_timeout)
        while True:
            request = self._read_command()
            if request is None:
                self._log_end("released")
                return
            context_id, cmd = request
            field_ = cmd.field
            if field_ == C_ECHO_RQ:
                self._respond(context_id, C_ECHO_RSP, cmd.sop_class_uid, cmd.message_id, SUCCESS)
                log.debug("C-ECHO from %s (%s)", self.calling_ae, self.host)
                continue
            if field_ == C_CANCEL_RQ:
                continue          # nothing of this association's is in progress any more
            handler = self._handlers.get(field_)
            if handler is None or not cmd.has_dataset:
                raise ProtocolError(f"unsupported DIMSE command 0x{field_:04x}")
            if field_ != C_STORE_RQ:
                self._write_rows()      # a query or retrieve finds the instances stored before it
            with self.busy:
                if self.closing:
                    raise PeerClosed("node is shutting down")
                handler(self, context_id, cmd)

    def _store(self, context_id: int, cmd: Command) -> None:
        """C-STORE: the dataset streams into the store's writer; the answer is the store's."""
        request = StoreRequest(cmd.sop_class_uid, cmd.sop_instance_uid, self.contexts[context_id][1],
                               self.calling_ae, self.host)
        spare, self._spare = self._spare, None
        incoming = IncomingInstance(self.server.ingest, request, file_header(
            request.sop_class_uid, request.sop_instance_uid, request.transfer_syntax, self.calling_ae), spare)
        try:
            self._read_dataset(context_id, incoming.write)
        except BaseException:
            incoming.abort()
            log.warning("association from %s (%s) ended mid-transfer of %s; partial data discarded",
                        self.calling_ae, self.host, request.sop_instance_uid)
            raise
        # answered as soon as the instance is durable; its index row is written with the next one's flushes
        outcome = incoming.commit(lambda answer: self._respond(
            context_id, C_STORE_RSP, request.sop_class_uid, cmd.message_id, answer.status,
            request.sop_instance_uid, answer.message), self._rows)
        self._count(outcome, incoming.size)
        if outcome.status == SUCCESS:   # the next instance's file, opened while it comes (not after a failed write)
            self._spare = self.server.ingest.files.spare_temp()

    def _procedure_step(self, context_id: int, cmd: Command) -> None:
        """N-CREATE or N-SET of an MPPS: the small dataset decoded, the engine's handler answers."""
        abstract = self.contexts[context_id][0]
        if abstract != ModalityPerformedProcedureStep or self.server.steps is None:
            raise ProtocolError(f"N-CREATE/N-SET on {abstract}, which is not MPPS")
        create = cmd.field == N_CREATE_RQ
        response, message_id, uid = (N_CREATE_RSP if create else N_SET_RSP), cmd.message_id, cmd.sop_instance_uid
        raw = self._read_small_dataset(context_id)
        if raw is None:
            self._respond(context_id, response, abstract, message_id, PROCESSING_FAILURE, uid,
                          "procedure step dataset larger than 1 MiB")
            return
        try:
            steps = self.server.steps
            answer = (steps.create if create else steps.update)(uid, self._decode(context_id, raw), self.calling_ae)
        except Exception as exc:
            log.warning("procedure step %s from %s (%s) refused: %s", uid or "(new)", self.calling_ae, self.host, exc)
            self._respond(context_id, response, abstract, message_id, PROCESSING_FAILURE, uid, f"cannot process: {exc}")
            return
        if answer.status != SUCCESS:
            log.warning("procedure step %s from %s (%s): status 0x%04X %s", answer.sop_instance_uid,
                        self.calling_ae, self.host, answer.status, answer.comment)
        self._respond(context_id, response, abstract, message_id, answer.status, answer.sop_instance_uid or uid,
                      answer.comment)

    def _identifier(self, context_id: int, cmd: Command, response: int, providers: Mapping[str, Any]) -> Any:
        """The provider of a query or retrieve request's SOP class and the request's identifier; None
        when the identifier was refused (answered here)."""
        abstract = self.contexts[context_id][0]
        provider = providers.get(abstract)
        if provider is None:
            raise ProtocolError(f"{_NAMES.get(cmd.field, 'request')} on {abstract}, which has no provider")
        raw = self._read_small_dataset(context_id)
        if raw is None:
            self._respond(context_id, response, abstract, cmd.message_id, OUT_OF_RESOURCES, "",
                          "identifier larger than 1 MiB")
            return None
        try:
            return provider, self._decode(context_id, raw)
        except Exception as exc:
            log.warning("%s from %s (%s): undecodable identifier: %s", _NAMES.get(cmd.field, "request"),
                        self.calling_ae, self.host, exc)
            self._respond(context_id, response, abstract, cmd.message_id, UNABLE_TO_PROCESS, "",
                          "undecodable identifier")
            return None

    def _encode(self, context_id: int, ds: Dataset) -> bytes:
        """A dataset in its context's transfer syntax, in its own Specific Character Set."""
        ts = UID(self.contexts[context_id][1])
        fp = DicomBytesIO()
        fp.is_implicit_VR, fp.is_little_endian = ts.is_implicit_VR, ts.is_little_endian
        write_dataset(fp, ds)
        return fp.getvalue()

    def _find(self, context_id: int, cmd: Command) -> None:
        """C-FIND: the registered provider's matches as Pending responses, C-CANCEL heeded between."""
        abstract = self.contexts[context_id][0]
        message_id = cmd.message_id
        request = self._identifier(context_id, cmd, C_FIND_RSP, self.server.find_providers)
        if request is None:
            return
        provider, identifier = request
        pending = encode_response(C_FIND_RSP, abstract, message_id, PENDING, with_dataset=True)
        status, comment = answer_find(
            provider, identifier, self.calling_ae, lambda match: self._encode(context_id, match),
            lambda match: self._send(pdata(context_id, pending, match, self.peer_max_pdu)),
            lambda: self._cancelled(message_id))
        self._respond(context_id, C_FIND_RSP, abstract, message_id, status, "", comment)
        if self.server.audit is not None:
            self.server.audit.query(self.calling_ae, self.host, abstract, identifier, status)

    def _retrieve(self, context_id: int, cmd: Command) -> None:
        """C-MOVE or C-GET: the provider's files as sub-operations, a Pending response after each."""
        abstract = self.contexts[context_id][0]
        move = cmd.field == C_MOVE_RQ
        response = C_MOVE_RSP if move else C_GET_RSP
        request = self._identifier(context_id, cmd, response, self.server.retrieve_providers)
        if request is None:
            return
        provider, identifier = request
        destination = self.server.move_destinations.get(cmd.move_destination) if move else None
        if move and destination is None:
            log.warning("C-MOVE from %s (%s) to unknown destination %r refused", self.calling_ae, self.host,
                        cmd.move_destination)
            self._respond(context_id, response, abstract, cmd.message_id, MOVE_DESTINATION_UNKNOWN, "",
                          f"move destination {cmd.move_destination!r} is not a configured peer")
            return
        try:
            files = list(provider(identifier, self.calling_ae))
        except Exception as exc:
            log.warning("retrieve from %s (%s) refused: %s: %s", self.calling_ae, self.host, type(exc).__name__, exc)
            self._respond(context_id, response, abstract, cmd.message_id, UNABLE_TO_PROCESS, "",
                          f"cannot process: {exc}")
            return
        ops = SubOperations(len(files))

        def after(sop_instance_uid: str, status: int | None) -> bool:
            """Count one sub-operation, tell the requestor, heed its C-CANCEL."""
            ops.count(sop_instance_uid, status)
            if ops.remaining:
                self._send(pdata(context_id, encode_response(response, abstract, cmd.message_id, PENDING,
                                                             suboperations=ops.pending())))
                ops.cancelled = self._cancelled(cmd.message_id)
            return not ops.cancelled
        comment = ""
        if destination is not None and files:
            try:
                send_files(destination, files, self.server.policy.ae_title, self.limits.network_timeout,
                           originator=(self.calling_ae, cmd.message_id), progress=after, tls=self.server.move_tls)
            except SendError as exc:
                comment = str(exc)
                log.warning("C-MOVE from %s (%s): %s", self.calling_ae, self.host, exc)
                ops.failed = ops.total - ops.completed - ops.warning
        elif files:
            self._get(files, after)
        self._cancel_seen = False        # a C-CANCEL that came with the last sub-operation ends nothing more
        status, counts, failed = ops.final()
        if self.server.audit is not None:
            self.server.audit.query(self.calling_ae, self.host, abstract, identifier, status)
        self._send(pdata(context_id, encode_response(response, abstract, cmd.message_id, status,
                                                     comment=comment if status != SUCCESS else "",
                                                     with_dataset=failed is not None, suboperations=counts),
                         b"" if failed is None else self._encode(context_id, failed), self.peer_max_pdu))
        log.info("%s from %s (%s)%s: %d completed, %d warning, %d failed%s", "C-MOVE" if move else "C-GET",
                 self.calling_ae, self.host, f" to {cmd.move_destination}" if move else "", ops.completed,
                 ops.warning, ops.failed, ", cancelled" if ops.cancelled else "")

    def _get(self, files: list[Path], after: Callable[[str, int | None], bool]) -> None:
        """A C-GET's sub-operations: each file as a C-STORE-RQ on this association, as stored when the
        requestor accepted its transfer syntax, re-encoded between the uncompressed ones otherwise."""
        for message_id, path in enumerate(files, start=1):
            try:
                meta, dataset = split_file(path.read_bytes())
            except (OSError, ValueError) as exc:
                log.warning("C-GET: cannot read %s: %s", path.name, exc)
                if not after("", None):
                    return
                continue
            sop_class, sop_instance, syntax = meta[0x0002], meta[0x0003], meta[0x0010]
            context_id, payload = self._store_context(sop_class, syntax, dataset)
            if context_id is None:
                log.warning("C-GET from %s: no accepted context for %s in %s", self.calling_ae, sop_class, syntax)
                if not after(sop_instance, None):
                    return
                continue
            self._send(pdata(context_id, encode_store_request(sop_class, sop_instance, message_id), payload,
                             self.peer_max_pdu))
            if not after(sop_instance, self._store_response(message_id)):
                return

    def _store_context(self, sop_class: str, syntax: str, dataset: memoryview) -> tuple[int | None, bytes]:
        """The context to send an instance on, and its bytes in that context's transfer syntax."""
        context_id = self.store_out.get((sop_class, syntax))
        if context_id is not None:
            return context_id, bytes(dataset)
        if syntax not in UNCOMPRESSED:
            return None, b""
        for other in UNCOMPRESSED:
            context_id = self.store_out.get((sop_class, other))
            if context_id is not None:
                ts = UID(syntax)
                ds = read_dataset(BytesIO(dataset), ts.is_implicit_VR, ts.is_little_endian)
                return context_id, self._encode(context_id, ds)
        return None, b""

    def _store_response(self, message_id: int) -> int | None:
        """The requestor's C-STORE-RSP status to our sub-operation `message_id`; a C-CANCEL that comes
        first is taken note of (the sub-operations stop after this one)."""
        while True:
            request = self._read_command()
            if request is None:
                raise ProtocolError("A-RELEASE-RQ while a C-GET is in progress")
            cmd = request[1]
            if cmd.field == C_STORE_RSP and cmd.message_id == message_id:
                return cmd.status
            if cmd.field != C_CANCEL_RQ:
                raise ProtocolError(f"DIMSE command 0x{cmd.field:04x} while a C-GET is in progress")
            self._cancel_seen = True

    def _cancelled(self, message_id: int) -> bool:
        """True when the peer has sent a C-CANCEL for `message_id` (PS3.7 9.3.2.3)."""
        if self._cancel_seen:
            self._cancel_seen = False
            return True
        if not self._input_waiting():
            return False
        request = self._read_command()
        if request is None:
            raise ProtocolError("A-RELEASE-RQ while a request is in progress")
        cmd = request[1]
        if cmd.field == C_CANCEL_RQ and cmd.message_id == message_id:
            return True
        raise ProtocolError(f"DIMSE command 0x{cmd.field:04x} while a request is in progress")

    _handlers: dict[int, Callable[[Association, int, Command], None]] = {
        C_STORE_RQ: _store, N_CREATE_RQ: _procedure_step, N_SET_RQ: _procedure_step, C_FIND_RQ: _find,
        C_MOVE_RQ: _retrieve, C_GET_RQ: _retrieve}

    def _write_rows(self) -> None:
        self.server.ingest.write_rows(self._rows)

    def _count(self, outcome: Outcome, size: int) -> None:
        if outcome.status != SUCCESS:
            self.stats.failed += 1
            metrics.INSTANCES_REFUSED.labels(f"0x{outcome.status:04X}").inc()
        elif outcome.duplicate:
            self.stats.duplicates += 1
        else:
            self.stats.stored += 1
            self.stats.bytes += size

    def _respond(self, context_id: int, field_: int, sop_class_uid: str, message_id: int, status: int,
                 sop_instance_uid: str = "", comment: str = "") -> None:
        command = encode_response(field_, sop_class_uid.rstrip("\0"), message_id, status, sop_instance_uid,
                                  comment if status != SUCCESS else "")
        self._send(pdata(context_id, command))

    def _log_end(self, how: str) -> None:
        s = self.stats
        elapsed = time.monotonic() - s.started
        log.info("association from %s (%s) %s: %d stored (%.1f MB), %d duplicate, %d failed in %.1f s",
                 self.calling_ae, self.host, how, s.stored, s.bytes / 1e6, s.duplicates, s.failed, elapsed)

    # -- life and death -------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self.handshake()
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
            self._write_rows()
            if self._spare is not None:
                self.server.ingest.files.discard(self._spare)
            self.server.release(self)
            try:
                self.rfile.close()
                self.sock.close()
            except OSError:
                pass

    def shut(self) -> None:
        """At shutdown: wait for the request in hand, then abort."""
        with self.busy:
            self.closing = True
            self.abort(source=0, reason=0)
            self.cut()

    def cut(self) -> None:
        """End the connection now, whatever is in hand (past the stop deadline): nothing unanswered
        is kept, so nothing is lost."""
        self.closing = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
