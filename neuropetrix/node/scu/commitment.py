"""Storage commitment (Push Model): ask a PACS to take responsibility for what we stored, and read
its answer.

The request (N-ACTION) goes on the association that carried the C-STOREs; the answer (N-EVENT-REPORT)
comes later, usually on an association the PACS opens to us (node/scp/commitment_listener.py), sometimes on the
same one. The transaction UID names the job and its attempt, so an answer finds its job after a
restart and an answer to an older attempt is recognised as such.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    StorageCommitmentPushModel,
    StorageCommitmentPushModelInstance,
)

from neuropetrix.node.scu.errors import DeliveryError

log = logging.getLogger("neuropetrix.scu.commitment")
# Our transaction UIDs: <root>.<job id>.<attempt>, under pydicom's root like our generated UIDs.
TRANSACTION_ROOT = "1.2.826.0.1.3680043.8.498.1.20."
REQUEST_COMMITMENT = 1          # N-ACTION Action Type ID
COMMITTED, FAILURES = 1, 2      # N-EVENT-REPORT Event Type IDs


def transaction_uid(job_id: int, attempt: int) -> str:
    return f"{TRANSACTION_ROOT}{job_id}.{attempt}"


def job_of(transaction: str) -> tuple[int, int] | None:
    """(job id, attempt) named by one of our transaction UIDs, None for anyone else's."""
    if not transaction.startswith(TRANSACTION_ROOT):
        return None
    parts = transaction[len(TRANSACTION_ROOT):].split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


@dataclass(frozen=True)
class CommitmentReport:
    transaction_uid: str
    committed: list[str]                       # SOP Instance UIDs
    failed: list[tuple[str, int]]              # (SOP Instance UID, FailureReason)


def offered(assoc: Association) -> bool:
    """Whether the peer accepted the Storage Commitment Push Model on this association."""
    return any(cx.abstract_syntax == StorageCommitmentPushModel for cx in assoc.accepted_contexts)


def request(assoc: Association, transaction: str, refs: list[tuple[str, str]]) -> None:
    """Send the N-ACTION for `refs` [(SOP Class UID, SOP Instance UID)]; DeliveryError if refused."""
    info = Dataset()
    info.TransactionUID = transaction
    items = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
        items.append(item)
    info.ReferencedSOPSequence = items
    status, _ = assoc.send_n_action(info, REQUEST_COMMITMENT, StorageCommitmentPushModel,
                                    StorageCommitmentPushModelInstance)
    code = getattr(status, "Status", None)
    if code != 0x0000:
        shown = "no response" if code is None else f"status 0x{code:04X}"
        raise DeliveryError(f"storage commitment request refused: {shown}")


def parse_report(info: Dataset) -> CommitmentReport:
    """The committed and failed instances of an N-EVENT-REPORT's Event Information."""
    committed = [str(i.ReferencedSOPInstanceUID) for i in info.get("ReferencedSOPSequence", [])]
    failed = [(str(i.ReferencedSOPInstanceUID), int(i.get("FailureReason", 0x0110)))
              for i in info.get("FailedSOPSequence", [])]
    return CommitmentReport(str(info.get("TransactionUID", "")), committed, failed)
