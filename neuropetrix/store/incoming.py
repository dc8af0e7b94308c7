"""One instance being received, from its first byte to `commit` (stored, answered, indexed) or
`abort` (nothing kept).

The writer owns the temporary file (store/files.py: nameless where the file system allows), opened
when the C-STORE request arrives or handed over ready by the association: it writes the bytes as they
come off the wire (memory does not grow with the instance; the first `HEAD_BYTES` are also kept so
the header is parsed without re-reading the file) and their CRC-32, seals the file with it at commit
(store/files.py: the data is then flushed together with its name) and discards the file on abort or
failure. A write error does not raise: the caller still reads the
rest of the dataset off the wire, and `commit` answers Out of Resources.
"""
from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from neuropetrix.node.scp.status import CANNOT_UNDERSTAND, OUT_OF_RESOURCES
from neuropetrix.store.header import truncation
from neuropetrix.store.ingest import HEAD_BYTES, Outcome, StoreRequest, is_disk_full

if TYPE_CHECKING:
    from neuropetrix.store.files import TempFile
    from neuropetrix.store.index import InstanceRecord
    from neuropetrix.store.ingest import Ingest

log = logging.getLogger("neuropetrix.store")


class IncomingInstance:
    def __init__(self, ingest: Ingest, request: StoreRequest, preamble: bytes, temp: TempFile | None = None) -> None:
        """Begin: open the temporary file (or take `temp`, an empty one opened beforehand) and write
        `preamble` (the file meta) in front of the data."""
        self.ingest = ingest
        self.request = request
        self.temp: TempFile | None = None
        self.size = 0
        self.head = bytearray()
        self.failure: Outcome | None = None
        self._fp: BinaryIO | None = None
        self._offset = len(preamble)
        self._checksum = ingest.files.sealing    # what the seal needs; nothing to check without flushes
        self._crc = zlib.crc32(preamble) if self._checksum else 0
        try:
            self.temp = temp if temp is not None else ingest.files.new_temp()
            # read back (pread) only where a dataset outgrows `head`
            self._fp = open(self.temp.fd, "wb", closefd=False)
            self._fp.write(preamble)
        except OSError as exc:
            self._fail(exc)

    def write(self, chunk: memoryview) -> None:
        self.size += len(chunk)
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[:HEAD_BYTES - len(self.head)]
        if self._fp is None:
            return   # failed earlier: the rest of the dataset is dropped
        if self._checksum:
            self._crc = zlib.crc32(chunk, self._crc)
        try:
            self._fp.write(chunk)
        except OSError as exc:
            self._fail(exc)

    def commit(self, acknowledge: Callable[[Outcome], None], rows: list[InstanceRecord] | None = None) -> Outcome:
        """The dataset's last fragment arrived: check it is whole, make it durable, place it, call
        `acknowledge` with the status to answer (once, as soon as the file alone keeps the instance),
        then index it (or add its row to `rows`: `Ingest.accept`). Returns how it went; raises only
        what `acknowledge` raised."""
        if self._fp is not None and self.temp is not None:
            try:
                self._fp.flush()
                cut = truncation(bytes(self.head), self.size, self._read_at, self.request.transfer_syntax)
                if cut is not None:
                    outcome = self._refuse(cut)
                    acknowledge(outcome)
                    return outcome
                self._close()
                # flushed when it has its name (Ingest._place), the seal with it
                self.ingest.files.seal(self.temp, self._crc, self._offset + self.size)
            except OSError as exc:
                self._fail(exc)
        if self.failure is not None:
            acknowledge(self.failure)
            return self.failure
        assert self.temp is not None
        return self.ingest.accept(self.temp, self.request, bytes(self.head), acknowledge, rows)

    def _read_at(self, pos: int, n: int) -> bytes:
        assert self.temp is not None
        return os.pread(self.temp.fd, n, self._offset + pos)

    def _refuse(self, why: str) -> Outcome:
        self.abort()
        r = self.request
        log.warning("rejected %s from %s (%s): cannot parse the dataset: it is incomplete: %s",
                    r.sop_instance_uid, r.calling_ae, r.calling_host, why)
        return Outcome(CANNOT_UNDERSTAND, f"incomplete dataset: {why}"[:64])

    def abort(self) -> None:
        """The association ended mid-dataset: nothing was acknowledged, nothing is kept."""
        self._close()
        if self.temp is not None:
            self.ingest.files.discard(self.temp)

    def _close(self) -> None:
        if self._fp is not None:
            try:
                self._fp.close()
            except OSError:
                pass
            self._fp = None

    def _fail(self, exc: OSError) -> None:
        self.abort()
        why = "out of storage space" if is_disk_full(exc) else f"cannot write: {exc.strerror}"
        r = self.request
        log.error("refusing %s from %s (%s): %s", r.sop_instance_uid, r.calling_ae, r.calling_host, why)
        self.failure = Outcome(OUT_OF_RESOURCES, why)
