"""Instance files under `storage/`, laid out by UIDs, written so that nothing acknowledged is lost.

An instance is written to `storage/.incoming/<host>/<random>.part`, fsync'd, renamed to
`storage/<study>/<series>/<sop>.dcm` and the directory fsync'd. Only UIDs that pass
`dicom_uids.check_uid` become path components, so a hostile UID can never climb out of the storage folder.
"""
from __future__ import annotations

import os
import socket
import threading
import uuid
from pathlib import Path

from neuropetrix.dicom_uids import check_uid


def relative_path(study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"{check_uid(study_uid, 'StudyInstanceUID')}/{check_uid(series_uid, 'SeriesInstanceUID')}/" \
           f"{check_uid(sop_uid, 'SOPInstanceUID')}.dcm"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    """The storage folder. Thread-safe: each association's thread writes its own temporary files."""

    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = Path(root)
        # per host: a node cleaning up after itself never touches files another node (sharing this
        # storage) is still receiving
        self.incoming = self.root / ".incoming" / socket.gethostname()
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._known_dirs: set[Path] = set()
        self._lock = threading.Lock()

    def path_of(self, relative: str) -> Path:
        return self.root / relative

    def new_temp(self) -> Path:
        return self.incoming / f"{uuid.uuid4().hex}.part"

    def place(self, temp: Path, relative: str, replace: bool = False) -> bool:
        """Move a finished temporary file to its place. False, leaving `temp`, when a file is already
        there (the first copy of an instance is kept) unless `replace` is set. The new name is
        durable only after `sync_dir`."""
        final = self.root / relative
        try:
            placed = self._move(temp, final, replace)
        except FileNotFoundError:          # its folder was removed behind our back: make it again
            with self._lock:
                self._known_dirs.discard(final.parent)
            self._ensure_dir(final.parent)
            placed = self._move(temp, final, replace)
        return placed

    def sync_file(self, path: Path) -> None:
        """Make a rewritten temporary file's data durable before it is placed."""
        if self.fsync:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

    def sync_dir(self, relative: str) -> None:
        """Make a placed file's name durable (after `place`, before acknowledging the instance)."""
        if self.fsync:
            fsync_dir((self.root / relative).parent)

    def _move(self, temp: Path, final: Path, replace: bool) -> bool:
        if final.parent not in self._known_dirs:
            self._ensure_dir(final.parent)
        if replace:
            os.replace(temp, final)
            return True
        try:
            os.link(temp, final)     # atomic, and fails rather than overwrite
        except FileExistsError:
            return False
        os.unlink(temp)
        return True

    def _ensure_dir(self, folder: Path) -> None:
        new = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        if new and self.fsync:
            fsync_dir(folder.parent)
            fsync_dir(folder.parent.parent)
        with self._lock:
            self._known_dirs.add(folder)

    def discard(self, temp: Path) -> None:
        temp.unlink(missing_ok=True)

    def clean_incoming(self) -> int:
        """Remove temporary files left by a crash: they were never acknowledged."""
        count = 0
        for stale in self.incoming.glob("*.part"):
            stale.unlink(missing_ok=True)
            count += 1
        return count
