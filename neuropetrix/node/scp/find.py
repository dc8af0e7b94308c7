"""C-FIND providers: the contract between the SCP and whoever answers a query (the engine's
Modality Worklist, later Query/Retrieve), and the loop that turns a provider's matches into
responses (PS3.4 C.4.1.1.4 for Query/Retrieve, K.4.1.1.4 for the worklist).

A provider is called with the request's identifier and the calling AE title and yields one
identifier per match. It is registered by SOP Class UID (`DicomServer(find_providers=…)`, injected by
the runtime; node/ imports no engine code), and only then does the SCP accept that SOP class's
presentation contexts. Each match goes back as Pending (0xFF00), encoded in the context's transfer
syntax with the match's own Specific Character Set; a C-CANCEL received between two matches ends the
query with Cancel (0xFE00); the end of the matches with Success; an exception from the provider with
Unable to process (0xC000) and a log line.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from pydicom.dataset import Dataset

from neuropetrix.node.scp.status import CANCEL, SUCCESS, UNABLE_TO_PROCESS

log = logging.getLogger("neuropetrix.scp")

FindProvider = Callable[[Dataset, str], Iterator[Dataset]]
"""(identifier, calling AE title) → the matching identifiers."""


def answer_find(provider: FindProvider, identifier: Dataset, calling_ae: str, encode: Callable[[Dataset], bytes],
                send_pending: Callable[[bytes], None], cancelled: Callable[[], bool]) -> tuple[int, str]:
    """Send every match of `identifier` (`encode`d, then `send_pending`); the final (status, error
    comment). What the provider raises, or a match that cannot be encoded, ends the query with
    Unable to process; what the connection raises is the association's to handle."""
    sent = 0
    try:
        matches = iter(provider(identifier, calling_ae))
    except Exception as exc:
        return _failed(calling_ae, sent, exc)
    while True:
        try:
            encoded = encode(next(matches))
        except StopIteration:
            break
        except Exception as exc:
            return _failed(calling_ae, sent, exc)
        if cancelled():
            log.info("C-FIND from %s cancelled after %d match(es)", calling_ae, sent)
            return CANCEL, ""
        send_pending(encoded)
        sent += 1
    log.debug("C-FIND from %s: %d match(es)", calling_ae, sent)
    return SUCCESS, ""


def _failed(calling_ae: str, sent: int, exc: Exception) -> tuple[int, str]:
    log.warning("C-FIND from %s failed after %d match(es): %s: %s", calling_ae, sent, type(exc).__name__, exc)
    return UNABLE_TO_PROCESS, f"cannot process the query: {type(exc).__name__}"
