"""Query/Retrieve SCU: C-FIND the studies a peer holds, C-MOVE them to an AE title (pynetdicom), over
TLS with node.tls to a peer with `tls: true`.

The engine uses it to fetch a patient's earlier studies from the PACS (engine/priors.py); what to ask
and what to do with the answers is the engine's.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from neuropetrix.config.settings import Peer, TlsSettings
from neuropetrix.node.entity import node_ae
from neuropetrix.node.scu.errors import DeliveryError
from neuropetrix.node.tls import peer_tls_args

log = logging.getLogger("neuropetrix.scu")
PENDING = (0xFF00, 0xFF01)


@dataclass(frozen=True)
class MoveOutcome:
    """A C-MOVE's final status and sub-operation counts (PS3.7 9.3.4.2)."""

    status: int
    completed: int
    failed: int
    warning: int
    comment: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0x0000


def _associate(peer: Peer, calling_ae: str, sop_class: str, timeout: float, tls: TlsSettings | None):
    ae = node_ae(calling_ae)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(sop_class)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=peer_tls_args(peer, tls))
    if not assoc.is_established:
        raise DeliveryError(f"{peer.name} ({peer.ae_title}@{peer.host}:{peer.port}{' TLS' if peer.tls else ''}) "
                            "refused or unreachable")
    return assoc


def find(peer: Peer, calling_ae: str, identifier: Dataset, timeout: float | None = None,
         tls: TlsSettings | None = None) -> list[Dataset]:
    """Every match of a Study Root C-FIND at `peer`, at the identifier's level; DeliveryError when it
    cannot answer."""
    assoc = _associate(peer, calling_ae, StudyRootQueryRetrieveInformationModelFind, timeout or peer.timeout, tls)
    matches: list[Dataset] = []
    try:
        for status, match in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
            code = getattr(status, "Status", None)
            if code is None:
                raise DeliveryError(f"{peer.name} did not answer the C-FIND (timeout or association lost)")
            if code in PENDING:
                if match is not None:
                    matches.append(match)
            elif code != 0x0000:
                raise DeliveryError(f"{peer.name} answered the C-FIND with 0x{code:04X} "
                                    f"{status.get('ErrorComment', '')}".strip())
    finally:
        if assoc.is_established:
            assoc.release()
    return matches


def move(peer: Peer, calling_ae: str, destination_ae: str, identifier: Dataset, timeout: float = 300.0,
         tls: TlsSettings | None = None) -> MoveOutcome:
    """C-MOVE what `identifier` selects from `peer` to `destination_ae`; the final response's outcome.
    DeliveryError when the peer cannot be reached or stops answering."""
    assoc = _associate(peer, calling_ae, StudyRootQueryRetrieveInformationModelMove, timeout, tls)
    final: MoveOutcome | None = None
    try:
        for status, _ in assoc.send_c_move(identifier, destination_ae, StudyRootQueryRetrieveInformationModelMove):
            code = getattr(status, "Status", None)
            if code is None:
                raise DeliveryError(f"{peer.name} did not answer the C-MOVE (timeout or association lost)")
            if code not in PENDING:
                final = MoveOutcome(code, int(status.get("NumberOfCompletedSuboperations", 0) or 0),
                                    int(status.get("NumberOfFailedSuboperations", 0) or 0),
                                    int(status.get("NumberOfWarningSuboperations", 0) or 0),
                                    str(status.get("ErrorComment", "") or ""))
    finally:
        if assoc.is_established:
            assoc.release()
    if final is None:
        raise DeliveryError(f"{peer.name} sent no final C-MOVE response")
    return final
