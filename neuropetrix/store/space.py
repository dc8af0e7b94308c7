"""The low-disk watermark of the storage folder.

Below `node.min_free_mb` free, the SCP refuses new associations (A-ASSOCIATE-RJ, transient, "local
limit exceeded", naming the disk in its log line): the scanner keeps the study and sends it again
later, instead of having images refused one by one (0xA700) or the disk the database also needs
filled to the last byte. Each association request looks again, so the node recovers by itself as
soon as space is freed. The state is a metric (`neuropetrix_storage_below_watermark`) for alerts.
"""
from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from neuropetrix.metrics import STORAGE_BELOW_WATERMARK

log = logging.getLogger("neuropetrix.store")
MB = 1024 * 1024


class Watermark:
    def __init__(self, folder: Path, min_free_mb: int) -> None:
        self.folder = Path(folder)
        self.min_free = min_free_mb * MB
        self._low = False
        self._lock = threading.Lock()

    def refusal(self) -> str | None:
        """Why a new association must be refused now (too little free space), or None."""
        if not self.min_free:
            return None
        try:
            free = shutil.disk_usage(self.folder).free
        except OSError as exc:
            return f"storage {self.folder} unreadable: {exc.strerror or exc}"
        low = free < self.min_free
        why = f"{free / MB:.0f} MB free in {self.folder}, below node.min_free_mb {self.min_free // MB}"
        with self._lock:
            if low != self._low:
                self._low = low
                STORAGE_BELOW_WATERMARK.set(int(low))
                if low:
                    log.warning("refusing new associations: %s", why)
                else:
                    log.info("accepting associations again: %.0f MB free in %s", free / MB, self.folder)
        return why if low else None
