"""The DIMSE statuses the node answers and reads, by name, each cited to where PS3.4 / PS3.7 defines it.

pynetdicom's `Status` names the general ones; its `status` module's tables (e.g.
`STORAGE_SERVICE_CLASS_STATUS`) hold the rest by code only, so they are named here. The SCUs
(node/scu) and the engine's MPPS answers use the same names.
"""
from __future__ import annotations

from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, Status, code_to_category

SUCCESS = int(Status.SUCCESS)                # 0x0000, PS3.7 C.1.1
PENDING = int(Status.PENDING)                # 0xFF00, PS3.4 C.4.1.1.4 / K.4.1.1.4: a match follows
CANCEL = int(Status.CANCEL)                  # 0xFE00, PS3.4 C.4.1.1.4: terminated by C-CANCEL

# Storage Service Class, PS3.4 B.2.3
OUT_OF_RESOURCES = 0xA700                    # Refused: Out of Resources (A7xx)
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900    # Error: Data Set does not match SOP Class (A9xx)
CANNOT_UNDERSTAND = 0xC000                   # Error: Cannot understand (Cxxx)

# Query/Retrieve and Worklist C-FIND, PS3.4 C.4.1.1.4 and K.4.1.1.4
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # Failed: Identifier does not match SOP Class
UNABLE_TO_PROCESS = 0xC000                   # Failed: Unable to process (Cxxx)

# Query/Retrieve C-MOVE and C-GET, PS3.4 C.4.2.1.5 and C.4.3.1.4
MOVE_DESTINATION_UNKNOWN = 0xA801            # Refused: Move Destination unknown
UNABLE_TO_PERFORM_SUBOPERATIONS = 0xA702     # Refused: Out of resources – unable to perform sub-operations
SUBOPERATIONS_WITH_FAILURES = 0xB000         # Warning: one or more failures or warnings

# DIMSE-N: N-CREATE / N-SET (MPPS), N-ACTION and N-EVENT-REPORT (storage commitment), PS3.7 C.4
INVALID_ATTRIBUTE_VALUE = 0x0106             # Failure: Invalid attribute value
PROCESSING_FAILURE = 0x0110                  # Failure: Processing failure (also a commitment FailureReason)
DUPLICATE_SOP_INSTANCE = 0x0111              # Failure: Duplicate SOP Instance
NO_SUCH_SOP_INSTANCE = 0x0112                # Failure: No such SOP Instance
NO_SUCH_EVENT_TYPE = 0x0113                  # Failure: No such event type


def done(code: int) -> bool:
    """Whether a peer's status says the operation was done: Success, or a Warning (PS3.4 B.2.3: a
    C-STORE with coercion or elements discarded still stored the instance)."""
    return code_to_category(code) in (STATUS_SUCCESS, STATUS_WARNING)
