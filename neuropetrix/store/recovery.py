"""After an unclean stop, put back in the index every stored file it lost.

Received instances are made durable by their files: the data and the name are fsync'd before the
success status goes back. A file named before its data was flushed carries a seal (its CRC-32 and
size, store/files.py); one whose content no longer matches it was cut short by the crash, never
acknowledged, and is removed rather than indexed. The index row is committed without
waiting for the disk (store/db.py), so a power loss may take the last rows, never a file. A marker
file says the node is running; found at start-up, it means the last run did not stop cleanly, and
every series folder changed since that run began is compared with the index and what is missing is
indexed again from the file's own header.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from pydicom import dcmread

from neuropetrix.store.files import FileStore, fsync_dir
from neuropetrix.store.header import keys_of
from neuropetrix.store.index import StudyIndex
from neuropetrix.store.ingest import described, instance_record

log = logging.getLogger("neuropetrix.store")
MTIME_SLACK_S = 2.0   # folder times are compared with a margin for coarse file-system clocks


class RunMarker:
    """`<data_dir>/node-<host>.running`, holding the time the current run began (per host, as
    several nodes may share one data folder)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / f"node-{socket.gethostname()}.running"

    def unclean_since(self) -> float | None:
        """When the previous run began, if it did not stop cleanly."""
        try:
            return float(self.path.read_text().strip() or 0)
        except FileNotFoundError:
            return None
        except ValueError:
            return 0.0        # unreadable: look at everything

    def begin(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w") as fp:
            fp.write(f"{time.time():.3f}\n")
            fp.flush()
            os.fsync(fp.fileno())
        fsync_dir(self.path.parent)

    def end(self) -> None:
        self.path.unlink(missing_ok=True)
        fsync_dir(self.path.parent)


def reindex_since(files: FileStore, index: StudyIndex, since: float) -> int:
    """Index every stored file under a series folder changed after `since` that the index lacks (and
    remove those whose seal says a crash cut them short), and remove the side names of swaps a crash
    interrupted (`FileStore.SIDE_NAMES`: the instance's own name
    holds a whole copy either way)."""
    restored = 0
    for study_dir in sorted(p for p in files.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for series_dir in sorted(p for p in study_dir.iterdir() if p.is_dir()):
            if series_dir.stat().st_mtime < since - MTIME_SLACK_S:
                continue
            for side in series_dir.glob(FileStore.SIDE_NAMES):
                log.info("recovery: removing %s, left by an interrupted swap", side.name)
                side.unlink(missing_ok=True)
            for path in sorted(series_dir.glob("*.dcm")):
                if index.contains(path.stem):
                    continue
                if not files.intact(path):
                    log.warning("recovery: removing %s, cut short by the crash before it was acknowledged", path)
                    path.unlink(missing_ok=True)
                    continue
                try:
                    ds = dcmread(path, stop_before_pixels=True)
                    rel = path.relative_to(files.root).as_posix()
                    rec = instance_record(keys_of(ds), rel, path.stat().st_size, str(ds.file_meta.TransferSyntaxUID),
                                          str(ds.file_meta.get("SourceApplicationEntityTitle", "")).strip(), "",
                                          described(ds))
                except Exception as exc:   # a file we never acknowledged can be anything: say so, go on
                    log.warning("recovery: cannot index %s: %s", path, exc)
                    continue
                if index.add(rec):
                    restored += 1
    return restored
