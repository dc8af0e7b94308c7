"""Log lines a person can read: time, level, component, message. Patient names never at INFO.

A fault that repeats (descriptors exhausted, a peer retrying the same bad request) must not bury
everything else: `RepeatFilter` lets the first of identical warning and error lines through, holds
back its repeats for a while and then writes one line with their count.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class RepeatFilter(logging.Filter):
    """Passes the first of identical records (same logger, level, message and exception type) at
    `level` or above, drops its repeats for `interval` seconds, and appends to the next one after
    that "[N more like it in the last S s]". Lines that differ (another SOP Instance UID, another
    peer) are never merged. Reusable on any handler; `clock` lets tests move time."""

    def __init__(self, interval: float = 10.0, level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 1024) -> None:
        super().__init__()
        self.interval, self.level, self.clock, self.max_keys = interval, level, clock, max_keys
        self._seen: OrderedDict[tuple, list] = OrderedDict()   # key → [time let through, held back]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return True
        message = record.getMessage()
        key = (record.name, record.levelno, message, record.exc_info[0] if record.exc_info else None)
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.interval:
                seen[1] += 1
                return False
            self._seen[key] = [now, 0]
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
        if seen is not None and seen[1]:
            record.msg, record.args = f"{message} [{seen[1]} more like it in the last {now - seen[0]:.0f} s]", None
        return True


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom's own INFO lines repeat ours and include patient attributes on C-STORE
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
