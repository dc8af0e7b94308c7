"""The DIMSE statuses the SCP answers, by name, each cited to where PS3.4 / PS3.7 defines it.

pynetdicom's `Status` names the general ones; its `status` module's tables (e.g.
`STORAGE_SERVICE_CLASS_STATUS`) hold the rest by code only, so they are named here.
"""
from __future__ import annotations

from pynetdicom.status import Status

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

# N-CREATE / N-SET (MPPS), PS3.7 C.4
PROCESSING_FAILURE = 0x0110                  # Failure: Processing failure
