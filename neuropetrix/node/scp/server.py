"""The DICOM SCP's listener: C-ECHO, C-STORE for every storage SOP class, MPPS and the C-FIND,
C-MOVE and C-GET SOP classes that have a provider, one thread per association (node/scp/association.py).

It admits associations within the limits, survives an accept that fails (out of descriptors: back
off, log, go on), and stops with one deadline for all associations together: each finishes the
request in hand if it can within the deadline, and whatever is still in hand then is cut off
unanswered (never acknowledged, so never lost).
"""
from __future__ import annotations

import errno
import logging
import resource
import socket
import ssl
import threading
import time
from collections.abc import Mapping

from neuropetrix.config.settings import Peer, TlsSettings
from neuropetrix.node.scp.association import Association, AssociationAudit, StepHandler
from neuropetrix.node.scp.find import FindProvider
from neuropetrix.node.scp.policy import AcceptancePolicy, ServerLimits, accepted_contexts
from neuropetrix.node.scp.retrieve import RetrieveProvider
from neuropetrix.store.ingest import Ingest

log = logging.getLogger("neuropetrix.scp")

# accept() failures that pass when connections close or memory frees up (accept(2))
_TRANSIENT = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED, errno.EPROTO}
_BACKOFF_MAX_S = 1.0


_OPEN_FILES_WANTED = 65536   # ample for every association's socket and file; finite where hard is not


def raise_open_file_limit() -> int:
    """Raise this process's soft limit of open files towards its hard limit (systemd's default soft
    limit, 1024, is what ran out); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, _OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, wanted, exc)
    return soft


class DicomServer:
    """Listens, admits associations within the limits, shuts down without losing an instance."""

    def __init__(self, host: str, port: int, policy: AcceptancePolicy, ingest: Ingest,
                 limits: ServerLimits | None = None, steps: StepHandler | None = None,
                 find_providers: Mapping[str, FindProvider] | None = None,
                 retrieve_providers: Mapping[str, RetrieveProvider] | None = None,
                 move_destinations: Mapping[str, Peer] | None = None,
                 ssl_context: ssl.SSLContext | None = None, audit: AssociationAudit | None = None,
                 move_tls: TlsSettings | None = None) -> None:
        self.host, self.port = host, port
        self.ssl_context = ssl_context   # TLS on this port: the handshake is each association's first step
        self.audit = audit
        self.policy = policy
        self.ingest = ingest
        self.limits = limits or ServerLimits()
        self.steps = steps
        self.find_providers = dict(find_providers or {})   # SOP Class UID → provider
        self.retrieve_providers = dict(retrieve_providers or {})   # C-MOVE / C-GET SOP Class UID → provider
        self.move_destinations = dict(move_destinations or {})     # AE title → the peer C-MOVE sends to
        self.move_tls = move_tls     # node.tls: how C-MOVE calls a destination with `tls: true`, as forwarding does
        self.contexts = accepted_contexts(mpps=steps is not None, find_sop_classes=self.find_providers,
                                          retrieve_sop_classes=self.retrieve_providers)
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
        log.info("DICOM SCP %s listening on %s:%d%s (%d presentation contexts)", self.policy.ae_title,
                 self.host, self.port, " (TLS)" if self.ssl_context else "", len(self.contexts))
        return self.port

    def _accept_loop(self) -> None:
        assert self._sock is not None
        backoff = 0.0
        while not self._stopping.is_set():
            try:
                conn, address = self._sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    return
                if exc.errno not in _TRANSIENT:
                    raise
                # the connection waits in the backlog; retrying at once would spin and flood the log
                backoff = min(_BACKOFF_MAX_S, backoff * 2 or 0.05)
                log.error("cannot accept DICOM connections: %s; retrying in %.2f s", exc.strerror, backoff)
                self._stopping.wait(backoff)
                continue
            backoff = 0.0
            if not self._pending.acquire(blocking=False):
                log.warning("dropping connection from %s:%d: too many connections waiting", *address[:2])
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:   # handshake in the association's thread, under its timeout
                conn = self.ssl_context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
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
        """Refuse new associations; within one deadline `grace` seconds away, let every association
        finish the request in hand and abort it; cut off those still busy at the deadline."""
        deadline = time.monotonic() + grace
        self._stopping.set()
        if self._sock is not None:
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            active = list(self._active)
        closers = [threading.Thread(target=assoc.shut, daemon=True) for assoc in active]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join(timeout=max(0.0, deadline - time.monotonic()))
        while self.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            late = list(self._active)
        for assoc in late:
            assoc.cut()
        if late:
            log.warning("DICOM SCP stop deadline (%.0f s) passed: %d association(s) cut off with a request "
                        "unanswered", grace, len(late))
        log.info("DICOM SCP stopped")
