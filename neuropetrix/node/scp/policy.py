"""What the SCP accepts: which callers (A-ASSOCIATE-RJ reasons of PS3.8 9.3.4), which presentation
contexts, and within which limits. The limits' defaults are the settings' (config/settings.py)."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import ModalityPerformedProcedureStep, Verification

from neuropetrix.config.settings import NodeSettings
from neuropetrix.node.scp.retrieve import GET_SOP_CLASSES

_NODE = NodeSettings.model_fields
# A-ASSOCIATE-RJ (result, source, reason) of PS3.8 9.3.4
CALLING_AE_NOT_RECOGNISED = (1, 1, 3)
CALLED_AE_NOT_RECOGNISED = (1, 1, 7)
APPLICATION_CONTEXT_NOT_SUPPORTED = (1, 1, 2)
LOCAL_LIMIT_EXCEEDED = (2, 3, 2)


@dataclass
class AcceptancePolicy:
    """Who may associate: the node's AE title and the callers it knows."""

    ae_title: str
    known_callers: frozenset[str]
    accept_unknown_callers: bool = False
    check_called_ae: bool = True
    # why the node cannot take images now (the disk watermark, store/space.py), or None; injected
    # by the runtime so that the SCP imports no storage policy
    space: Callable[[], str | None] | None = None

    def refusal(self, calling: str, called: str) -> tuple[int, int, int, str] | None:
        """(result, source, reason, why) of an A-ASSOCIATE-RJ, or None to accept."""
        if not self.accept_unknown_callers and calling not in self.known_callers:
            return *CALLING_AE_NOT_RECOGNISED, "calling AE title not recognised"
        if self.check_called_ae and called != self.ae_title:
            return *CALLED_AE_NOT_RECOGNISED, f"called AE title {called!r} is not {self.ae_title!r}"
        if self.space is not None and (why := self.space()) is not None:
            return *LOCAL_LIMIT_EXCEEDED, why
        return None


@dataclass(frozen=True)
class ServerLimits:
    """How many associations, and how long the SCP waits for each step of one (seconds)."""

    max_associations: int = _NODE["max_associations"].default
    acse_timeout: float = _NODE["acse_timeout"].default        # from connect to A-ASSOCIATE-RQ
    dimse_timeout: float = _NODE["dimse_timeout"].default      # an idle association's next message
    network_timeout: float = _NODE["network_timeout"].default  # silence within a message
    max_pdu_size: int = _NODE["max_pdu_size"].default

    @classmethod
    def of(cls, node: NodeSettings) -> ServerLimits:
        return cls(max_associations=node.max_associations, acse_timeout=node.acse_timeout,
                   dimse_timeout=node.dimse_timeout, network_timeout=node.network_timeout,
                   max_pdu_size=node.max_pdu_size)


# Identifiers are decoded and encoded by pydicom: the uncompressed little-endian syntaxes suffice
QUERY_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def accepted_contexts(mpps: bool, find_sop_classes: Iterable[str] = (),
                      retrieve_sop_classes: Iterable[str] = ()) -> list[PresentationContext]:
    """Every storage SOP class pynetdicom knows (PET, CT, Enhanced …) and Verification, with every
    transfer syntax (instances are stored as they arrive, never re-encoded); MPPS when handled; and
    the C-FIND, C-MOVE and C-GET SOP classes that have a provider. With C-GET, the storage contexts
    also accept the roles a requestor proposes (PS3.7 D.3.3.4), so that a C-GET's sub-operations
    can go back to it as C-STORE requests."""
    storage = {cx.abstract_syntax for cx in AllStoragePresentationContexts}
    uids = storage | {Verification}
    if mpps:
        uids.add(ModalityPerformedProcedureStep)
    query = set(find_sop_classes) | set(retrieve_sop_classes)
    get = bool(GET_SOP_CLASSES & set(retrieve_sop_classes))
    contexts = [build_context(uid, ALL_TRANSFER_SYNTAXES) for uid in sorted(uids)]
    for cx in contexts:
        if get and cx.abstract_syntax in storage:
            cx.scu_role = cx.scp_role = True
    return contexts + [build_context(uid, QUERY_TRANSFER_SYNTAXES) for uid in sorted(query)]
