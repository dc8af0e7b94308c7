"""Instance files under `storage/`, laid out by UIDs, written so that nothing acknowledged is lost.

An instance is written to a nameless file (`O_TMPFILE`) opened in `storage/.incoming/<host>/`,
sealed (its CRC-32 and size in the extended attribute `CHECKSUM_XATTR`), linked to
`storage/<study>/<series>/<sop>.dcm`, and then the file and that folder are fsync'd at once, on two
threads: one new name and two flushes per instance that wait for the disk side by side, nothing to
rename or unlink, and nothing left behind by a crash (a nameless file vanishes with its process).
A crash between the link and the flushes can leave a named file whose data never reached the disk;
it was never acknowledged, and its seal tells recovery so (`intact`). Where the file system keeps no
extended attributes the data is flushed before the link, the folder after it. Where it has no
`O_TMPFILE` (NFS, some FUSE mounts) the file is a named `<random>.part` in the same folder, linked
and then unlinked. Only UIDs that pass
`dicom_uids.check_uid` become path components, so a hostile UID can never climb out of the storage folder.
"""
from __future__ import annotations

import errno
import functools
import logging
import os
import socket
import threading
import uuid
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from neuropetrix.dicom_uids import check_uid

log = logging.getLogger("neuropetrix.store")

# what open(2) answers where the file system cannot make a nameless file
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT}
CHECKSUM_XATTR = "user.neuropetrix.crc32"   # "<crc32 hex> <size>" of a sealed file (`FileStore.seal`)
_FLUSHERS = 8                               # flushes in flight at once (two per busy association)


def relative_path(study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"{check_uid(study_uid, 'StudyInstanceUID')}/{check_uid(series_uid, 'SeriesInstanceUID')}/" \
           f"{check_uid(sop_uid, 'SOPInstanceUID')}.dcm"


@functools.cache
def _any_dir_fd() -> int:
    """A directory descriptor, one per process: passed to os.link it makes it call linkat(2) with
    AT_SYMLINK_FOLLOW, which is what names a nameless file reached through /proc/self/fd (plain
    link(2) refuses with EXDEV). The paths given are absolute, so which directory does not matter."""
    return os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class TempFile:
    """A file being received: its open descriptor and, only where it has one, its name."""

    fd: int
    name: Path | None = None
    sealed: bool = False      # its checksum is attached: it may be named before its data is flushed

    @property
    def path(self) -> Path:
        """A path that opens this file (for pydicom), named or not."""
        return self.name if self.name is not None else Path(f"/proc/self/fd/{self.fd}")

    def size(self) -> int:
        return os.fstat(self.fd).st_size


class FileStore:
    """The storage folder. Thread-safe: each association's thread writes its own temporary files."""

    SIDE_NAMES = ".*.dcm.*.part"          # a swap's second name for the new copy (`_link`), until renamed

    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = Path(root)
        # per host: a node cleaning up after itself never touches files another node (sharing this
        # storage) is still receiving
        self.incoming = self.root / ".incoming" / socket.gethostname()
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.nameless = True                 # O_TMPFILE works here (until open says otherwise)
        self.sealing = fsync                 # extended attributes work here (until setxattr says otherwise)
        self._flusher: ThreadPoolExecutor | None = None
        self._known_dirs: set[Path] = set()
        self._lock = threading.Lock()

    def path_of(self, relative: str) -> Path:
        return self.root / relative

    def new_temp(self) -> TempFile:
        """An empty file to receive into, open for reading and writing."""
        if self.nameless:
            try:
                return TempFile(os.open(self.incoming, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o666))
            except OSError as exc:
                if exc.errno not in _NO_TMPFILE:
                    raise
                log.info("%s has no nameless files (%s): receiving into named .part files", self.incoming,
                         exc.strerror)
                self.nameless = False
        name = self.incoming / f"{uuid.uuid4().hex}.part"
        return TempFile(os.open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o666), name)

    def spare_temp(self) -> TempFile | None:
        """An empty temporary file opened ahead of need, so that making it (an inode on the file
        system's orphan list: a journal operation, ~1 ms under load) is not on an instance's way to
        its answer; None when it cannot be opened now (the instance then opens its own and says why)."""
        try:
            return self.new_temp()
        except OSError:
            return None

    def place(self, temp: TempFile, relative: str, replace: bool = False) -> bool:
        """Give a finished temporary file its name (it stays open: `discard` closes it). False when a
        file is already there (the first copy of an instance is kept) unless `replace` is set. The
        new name is durable only after `sync_dir` (or `sync_placed`)."""
        final = self.root / relative
        try:
            placed = self._link(temp, final, replace)
        except FileNotFoundError:          # its folder was removed behind our back: make it again
            with self._lock:
                self._known_dirs.discard(final.parent)
            self._ensure_dir(final.parent)
            placed = self._link(temp, final, replace)
        return placed

    def seal(self, temp: TempFile, crc: int, size: int) -> None:
        """Attach the file's CRC-32 and size (what `intact` checks), so that it may be named before
        its data is flushed: a copy a crash cut short is then told from a whole one. Left unsealed
        where the file system keeps no extended attributes (its data is then flushed before its name)."""
        if not self.sealing:
            return
        try:
            os.setxattr(temp.fd, CHECKSUM_XATTR, f"{crc:08x} {size}".encode())
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            log.info("%s keeps no extended attributes (%s): flushing each instance's data before naming it",
                     self.root, exc.strerror)
            self.sealing = False
            return
        temp.sealed = True

    def sync_file(self, temp: TempFile) -> None:
        """Make a temporary file's data (and size; a sealed one's seal too) durable."""
        if self.fsync:
            (os.fsync if temp.sealed else os.fdatasync)(temp.fd)

    def sync_dir(self, relative: str) -> None:
        """Make a placed file's name durable (after `place`, before acknowledging the instance)."""
        if self.fsync:
            fsync_dir((self.root / relative).parent)

    def sync_placed(self, temp: TempFile, relative: str, meanwhile: Callable[[], None] | None = None) -> None:
        """Make a sealed file placed at `relative` durable, data and name: both flushes at once on
        helper threads (each waits for the disk; side by side they wait about once), while this
        thread runs `meanwhile` (work that needs no disk: the index rows of earlier instances)."""
        if not self.fsync:
            if meanwhile is not None:
                meanwhile()
            return
        if self._flusher is None:
            with self._lock:
                if self._flusher is None:
                    self._flusher = ThreadPoolExecutor(_FLUSHERS, thread_name_prefix="fsync")
        flushes = [self._flusher.submit(self.sync_dir, relative), self._flusher.submit(self.sync_file, temp)]
        try:
            if meanwhile is not None:
                meanwhile()
        finally:
            for flush in flushes:
                flush.result()

    def _link(self, temp: TempFile, final: Path, replace: bool) -> bool:
        if final.parent not in self._known_dirs:
            self._ensure_dir(final.parent)
        source = os.path.abspath(temp.path)
        if replace:    # a file with no index row (an interrupted run's, or one whose row failed): swapped atomically
            side = final.with_name(f".{final.name}.{uuid.uuid4().hex}.part")      # SIDE_NAMES
            os.link(source, side, src_dir_fd=_any_dir_fd())
            os.replace(side, final)
            return True
        try:
            os.link(source, final, src_dir_fd=_any_dir_fd())   # atomic, and fails rather than overwrite
        except FileExistsError:
            return False
        return True

    def _ensure_dir(self, folder: Path) -> None:
        """Make `folder` exist with a durable name before a file in it can be acknowledged. Checking,
        creating, flushing its parents and remembering it are one step under the lock (once per
        folder): a second association never takes a folder another has made but not yet flushed."""
        with self._lock:
            if folder in self._known_dirs:
                return
            new = not folder.exists()
            folder.mkdir(parents=True, exist_ok=True)
            if new and self.fsync:
                fsync_dir(folder.parent)
                fsync_dir(folder.parent.parent)
            self._known_dirs.add(folder)

    def discard(self, temp: TempFile) -> None:
        """Close a temporary file and drop its name if it has one (a placed file keeps its new one)."""
        if temp.fd >= 0:
            try:
                os.close(temp.fd)
            except OSError:
                pass
            temp.fd = -1
        if temp.name is not None:
            temp.name.unlink(missing_ok=True)
            temp.name = None

    @staticmethod
    def intact(path: Path) -> bool:
        """False for a sealed file whose content does not match its seal: one named before its data
        was flushed and cut short by a crash, so never acknowledged. An unsealed file had its data
        flushed before it got its name."""
        try:
            seal = os.getxattr(path, CHECKSUM_XATTR).decode()
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                return True
            raise
        crc, size = 0, 0
        with open(path, "rb", buffering=0) as fp:
            while chunk := fp.read(1 << 20):
                crc, size = zlib.crc32(chunk, crc), size + len(chunk)
        return seal == f"{crc:08x} {size}"

    def clean_incoming(self) -> int:
        """Remove named temporary files left by a crash: they were never acknowledged."""
        count = 0
        for stale in self.incoming.glob("*.part"):
            stale.unlink(missing_ok=True)
            count += 1
        return count
