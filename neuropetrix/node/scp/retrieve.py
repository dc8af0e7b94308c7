"""C-MOVE and C-GET: the contract between the SCP and whoever says what a retrieve request selects
(the engine's Query/Retrieve), and the bookkeeping of the sub-operations (PS3.4 C.4.2, C.4.3).

A provider is called with the request's identifier and the calling AE title and returns the files
(Part 10, as stored) the request selects; it is registered by SOP Class UID
(`DicomServer(retrieve_providers=…)`, injected by the runtime: node/ imports no engine code), and only
then does the SCP accept that SOP class. A C-MOVE's sub-operations go to its Move Destination, which
must be a configured peer (else 0xA801) over a new association (node/scu/dicom.py; TLS with node.tls
to a peer with `tls: true`, `DicomServer(move_tls=…)`); a C-GET's go back
on the requestor's own association, as C-STORE-RQs on the storage contexts it accepted the SCP role
for. After each sub-operation a Pending response carries the counts; a C-CANCEL between two ends with
Cancel; the final status is Success, 0xB000 when some sub-operations failed or warned, 0xA702 when all
failed, with the failed SOP Instance UIDs in the final identifier.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)

from neuropetrix.node.scp.status import (
    CANCEL,
    SUBOPERATIONS_WITH_FAILURES,
    SUCCESS,
    UNABLE_TO_PERFORM_SUBOPERATIONS,
)

log = logging.getLogger("neuropetrix.scp")

RetrieveProvider = Callable[[Dataset, str], Sequence[Path]]
"""(identifier, calling AE title) → the files the request selects."""

GET_SOP_CLASSES = frozenset({PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet})


def is_warning(status: int) -> bool:
    """A C-STORE status that stored the instance with a remark (PS3.4 B.2.3: Bxxx)."""
    return 0xB000 <= status <= 0xBFFF


@dataclass
class SubOperations:
    """The counts of PS3.7 9.3.3.2 while a retrieve runs, and its outcome."""

    total: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    cancelled: bool = False
    failed_uids: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.total - self.completed - self.failed - self.warning

    def count(self, sop_instance_uid: str, status: int | None) -> None:
        """One sub-operation's C-STORE status (None: no answer)."""
        if status == SUCCESS:
            self.completed += 1
        elif status is not None and is_warning(status):
            self.warning += 1
        else:
            self.failed += 1
            if sop_instance_uid:
                self.failed_uids.append(sop_instance_uid)

    def pending(self) -> tuple[int, int, int, int]:
        return self.remaining, self.completed, self.failed, self.warning

    def final(self) -> tuple[int, tuple[int | None, int, int, int], Dataset | None]:
        """(status, counts, identifier or None) of the last response."""
        identifier = None
        if self.failed_uids:
            identifier = Dataset()
            identifier.FailedSOPInstanceUIDList = self.failed_uids
        if self.cancelled:
            return CANCEL, (self.remaining, self.completed, self.failed, self.warning), identifier
        counts = (None, self.completed, self.failed, self.warning)
        if self.total and self.failed == self.total:
            return UNABLE_TO_PERFORM_SUBOPERATIONS, counts, identifier
        if self.failed or self.warning:
            return SUBOPERATIONS_WITH_FAILURES, counts, identifier
        return SUCCESS, counts, identifier
