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

from neuropetrix.dicom_uids import numbered_uid, numbers_of
from neuropetrix.node.scp.status import PROCESSING_FAILURE, SUCCESS
from neuropetrix.node.scu.errors import DeliveryError

log = logging.getLogger("neuropetrix.scu.commitment")
# Our transaction UIDs: <the node's arc>.1.<job id>.<attempt> (dicom_uids.numbered_uid)
TRANSACTION_ARC = 1
REQUEST_COMMITMENT = 1          # N-ACTION Action Type ID
COMMITTED, FAILURES = 1, 2      # N-EVENT-REPORT Event Type IDs


def transaction_uid(job_id: int, attempt: int) -> str:
    return numbered_uid(TRANSACTION_ARC, job_id, attempt)


def job_of(transaction: str) -> tuple[int, int] | None:
    """(job id, attempt) named by one of our transaction UIDs, None for anyone else's."""
    numbers = numbers_of(transaction)
    if numbers is None or len(numbers) != 3 or numbers[0] != TRANSACTION_ARC:
        return None
    return numbers[1], numbers[2]


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
    if code != SUCCESS:
        shown = "no response" if code is None else f"status 0x{code:04X}"
        raise DeliveryError(f"storage commitment request refused: {shown}")


def parse_report(info: Dataset) -> CommitmentReport:
    """The committed and failed instances of an N-EVENT-REPORT's Event Information."""
    committed = [str(i.ReferencedSOPInstanceUID) for i in info.get("ReferencedSOPSequence", [])]
    failed = [(str(i.ReferencedSOPInstanceUID), int(i.get("FailureReason", PROCESSING_FAILURE)))
              for i in info.get("FailedSOPSequence", [])]
    return CommitmentReport(str(info.get("TransactionUID", "")), committed, failed)
