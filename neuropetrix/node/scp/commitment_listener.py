"""Listener for storage commitment answers: a PACS opens an association to us and sends the
N-EVENT-REPORT for a commitment we requested (Orthanc, dcm4chee and most PACS answer this way).

A small pynetdicom acceptor of its own on `engine.commitment_port`: it accepts only the Storage
Commitment Push Model from configured peers (over TLS with `engine.commitment_tls`) and hands every
report to a callback; the callback's outcome decides the status we answer.
"""
from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

from pynetdicom import evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from neuropetrix.node.entity import node_ae
from neuropetrix.node.scp.status import NO_SUCH_EVENT_TYPE, PROCESSING_FAILURE, SUCCESS
from neuropetrix.node.scu.commitment import CommitmentReport, parse_report

log = logging.getLogger("neuropetrix.scp.commitment")


class CommitmentListener:
    def __init__(self, ae_title: str, host: str, port: int, known_callers: frozenset[str],
                 on_report: Callable[[CommitmentReport], bool], ssl_context: ssl.SSLContext | None = None) -> None:
        self.address = (host, port)
        self.ssl_context = ssl_context     # TLS only (engine.commitment_tls): a plaintext caller fails the handshake
        self.on_report = on_report
        self.ae = node_ae(ae_title)
        self.ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self.ae.require_calling_aet = sorted(known_callers)
        self._server = None

    def _handle(self, event: evt.Event) -> tuple[int, None]:
        if event.event_type not in (1, 2):
            return NO_SUCH_EVENT_TYPE, None
        try:
            report = parse_report(event.event_information)
        except (AttributeError, ValueError, TypeError) as exc:
            log.warning("storage commitment report from %s unreadable: %s", event.assoc.requestor.ae_title, exc)
            return PROCESSING_FAILURE, None
        log.info("storage commitment report from %s for %s: %d committed, %d failed",
                 event.assoc.requestor.ae_title, report.transaction_uid, len(report.committed), len(report.failed))
        return (SUCCESS if self.on_report(report) else PROCESSING_FAILURE), None

    def start(self) -> None:
        self._server = self.ae.start_server(self.address, block=False, ssl_context=self.ssl_context,
                                            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._handle)])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
