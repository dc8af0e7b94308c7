"""Log lines a person can read: time, level, component, message. Patient names never at INFO."""
from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom's own INFO lines repeat ours and include patient attributes on C-STORE
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
