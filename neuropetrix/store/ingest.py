"""Taking in one received instance: check it, put its file in place, index it, say how it went.

The SCP streams what arrived into a temporary file (file meta + the dataset bytes exactly as sent) and
hands it here. The answer is a DIMSE status: success only once the file's data and its name are
fsync'd (store/files.py says in which order), so a scanner that got 0x0000 never loses that image; its
index row is written after the answer went out (a row lost to a crash is rebuilt from the file:
store/recovery.py).
"""
from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from sqlalchemy.exc import OperationalError

from neuropetrix import metrics
from neuropetrix.dicom_uids import InvalidUID, check_uid
from neuropetrix.node.scp.status import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    SUCCESS,
)
from neuropetrix.store.files import FileStore, TempFile, relative_path
from neuropetrix.store.header import LAST_TAG, InstanceKeys, int_value, keys_of, scan_keys
from neuropetrix.store.index import InstanceRecord, StudyIndex

log = logging.getLogger("neuropetrix.store")

HEAD_BYTES = 64 * 1024             # how much of each dataset the SCP keeps in memory for the header
ROW_GROUP = 8                      # an association's rows written in one commit (a third of the CPU each)
_LOCK_STRIPES = 64                 # instances placed at once never need more; collisions only wait


@dataclass(frozen=True)
class StoreRequest:
    """What the C-STORE request says about the instance whose dataset follows."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    calling_ae: str
    calling_host: str


@dataclass(frozen=True)
class Outcome:
    status: int
    message: str = ""
    duplicate: bool = False
    study_uid: str = ""


def _text(ds, keyword: str, limit: int = 64) -> str:
    value = ds.get(keyword, "")
    return str(value if value is not None else "")[:limit]


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _header_from(head: bytes, transfer_syntax: UID) -> Dataset | None:
    """The top-level elements up to group 0020 read from `head`, or None when `head` may not hold
    them all (an element runs past its end, or the syntax is deflated)."""
    if transfer_syntax.is_deflated or not head:
        return None
    fp = BytesIO(head)
    stopped_at: list[int] = []

    def stop(tag, _vr, _length) -> bool:
        if tag > LAST_TAG:          # every attribute the index keeps is in groups 0008-0020
            stopped_at.append(fp.tell())
            return True
        return False
    try:
        ds = read_dataset(fp, transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian, stop_when=stop)
    except Exception:
        return None
    # a read that ran past the end of `head` leaves the position at its end: then trust the file
    return ds if stopped_at and stopped_at[0] < len(head) else None


def read_header(temp: Path, head: bytes, transfer_syntax: str) -> Dataset:
    """The header of a received instance: from memory when possible, else from its file."""
    ds = _header_from(head, UID(transfer_syntax))
    return ds if ds is not None else dcmread(temp, stop_before_pixels=True)


def described(ds: Dataset) -> dict[str, object]:
    """Patient, study and series attributes for the index's rows."""
    return dict(
        patient_id=_text(ds, "PatientID"), issuer=_text(ds, "IssuerOfPatientID"),
        patient_name=_text(ds, "PatientName", 324), birth_date=_text(ds, "PatientBirthDate", 8),
        sex=_text(ds, "PatientSex", 16), study_date=_text(ds, "StudyDate", 8), study_time=_text(ds, "StudyTime", 16),
        accession_number=_text(ds, "AccessionNumber"), study_description=_text(ds, "StudyDescription", 256),
        modality=_text(ds, "Modality", 16), series_number=int_value(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription", 256), body_part=_text(ds, "BodyPartExamined"),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"))


def instance_record(keys: InstanceKeys, rel: str, size: int, transfer_syntax: str, calling_ae: str,
                    calling_host: str, attributes: dict[str, object]) -> InstanceRecord:
    """The index row of an instance with these keys, file `rel`, and (for a new series) the patient,
    study and series `attributes` (see `described`)."""
    return InstanceRecord(
        sop_class_uid=keys.sop_class_uid, sop_instance_uid=keys.sop_instance_uid, study_uid=keys.study_uid,
        series_uid=keys.series_uid, transfer_syntax_uid=transfer_syntax, path=rel, size_bytes=size,
        instance_number=keys.instance_number, calling_ae=calling_ae, calling_host=calling_host, **attributes)


class Ingest:
    def __init__(self, files: FileStore, index: StudyIndex,
                 inbound: Mapping[str, Callable[[Dataset], None]] | None = None) -> None:
        self.files = files
        self.index = index
        self.inbound = dict(inbound or {})   # calling AE title → transform applied before storing
        # One SOP Instance UID is placed and indexed by one association at a time: otherwise a second
        # copy arriving between the first one's link and its index row would look like a leftover.
        self._placing = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self.unindexed = 0          # stored and acknowledged instances whose row could not be written
        self._unindexed_lock = threading.Lock()
        self._unwritten: set[str] = set()    # SOP Instance UIDs whose rows associations hold (`write_rows`)

    def _read(self, temp: TempFile, head: bytes, transfer_syntax: str) -> tuple[InstanceKeys, dict[str, object]]:
        """The instance's keys, from its first bytes when they suffice; and, for a series the index
        does not know yet, its patient, study and series attributes (pydicom reads those)."""
        keys = scan_keys(head, transfer_syntax, whole=len(head) < HEAD_BYTES)
        ds = None
        if keys is None:
            ds = read_header(temp.path, head, transfer_syntax)
            keys = keys_of(ds)
        if self.index.knows_series(keys.series_uid):
            return keys, {}
        return keys, described(ds if ds is not None else read_header(temp.path, head, transfer_syntax))

    def _transform(self, temp: TempFile, transform: Callable[[Dataset], None],
                   transfer_syntax: str) -> tuple[TempFile, InstanceKeys, dict[str, object], str]:
        """Apply a peer's inbound transform to the received file, re-encoded in the same transfer
        syntax into a new temporary file (unsealed: `_place` flushes its data before naming it);
        returns that file and the keys, attributes and place of what is now to be stored."""
        ds = dcmread(temp.path)
        transform(ds)
        rewritten = self.files.new_temp()
        try:
            with open(rewritten.fd, "wb", closefd=False) as fp:
                ds.save_as(fp, enforce_file_format=True)
            keys, attributes = self._read(rewritten, b"", transfer_syntax)
            rel = relative_path(keys.study_uid, keys.series_uid, check_uid(keys.sop_instance_uid, "SOPInstanceUID"))
        except BaseException:
            self.files.discard(rewritten)
            raise
        self.files.discard(temp)
        return rewritten, keys, attributes, rel

    def accept(self, temp: TempFile, request: StoreRequest, head: bytes = b"",
               acknowledge: Callable[[Outcome], None] | None = None,
               rows: list[InstanceRecord] | None = None) -> Outcome:
        """Check, place and index the instance in `temp` (fdatasync'd by the caller), which is
        closed when this returns; never raises for bad input.

        `acknowledge` is called once with the status to answer, as soon as the answer is known: for
        a stored instance, once its data and name are durable and before its index row is written
        (the file alone is enough to rebuild the row: store/recovery.py), so the row's write overlaps
        the peer sending its next instance. What `acknowledge` raises is raised after indexing.
        `head` is the start of the dataset as received, when the caller kept it: the header is then
        read from memory instead of from the file. `rows`, an association's unwritten index rows:
        this instance's row joins them instead of being written at once; once `ROW_GROUP` wait
        there, they are written in one commit while an instance's flushes wait for the disk, and
        the caller writes what is left (`write_rows`) before it waits for its peer, answers another
        request or a release."""
        answered: list[Outcome] = []

        def answer(outcome: Outcome) -> None:
            answered.append(outcome)
            if acknowledge is not None:
                acknowledge(outcome)
        try:
            outcome = self._accept(temp, request, head, answer, rows)
        except Exception as exc:
            self.files.discard(temp)
            if answered:       # acknowledge failed (the peer went away): the instance is stored anyway
                raise
            outcome = self._failure(request, exc)
        if not answered:
            answer(outcome)
        return outcome

    def _failure(self, request: StoreRequest, exc: Exception) -> Outcome:
        r = request
        if is_disk_full(exc) or isinstance(exc, OperationalError) and "full" in str(exc).lower():
            log.error("out of storage space, refusing %s from %s: %s", r.sop_instance_uid, r.calling_ae, exc)
            return Outcome(OUT_OF_RESOURCES, "out of storage space")
        log.exception("storing %s from %s failed", r.sop_instance_uid, r.calling_ae)
        return Outcome(OUT_OF_RESOURCES, f"cannot store: {type(exc).__name__}")

    def _accept(self, temp: TempFile, request: StoreRequest, head: bytes,
                acknowledge: Callable[[Outcome], None], rows: list[InstanceRecord] | None) -> Outcome:
        sop_instance_uid, calling_ae, calling_host = request.sop_instance_uid, request.calling_ae, request.calling_host
        transfer_syntax = request.transfer_syntax
        try:
            keys, attributes = self._read(temp, head, transfer_syntax)
        except Exception as exc:
            self.files.discard(temp)
            log.warning("rejected %s from %s (%s): cannot parse the dataset: %s",
                        sop_instance_uid, calling_ae, calling_host, exc)
            return Outcome(CANNOT_UNDERSTAND, f"cannot parse dataset: {exc}"[:64])
        try:
            sop = check_uid(keys.sop_instance_uid, "SOPInstanceUID")
            if sop != sop_instance_uid:
                raise InvalidUID(f"SOPInstanceUID {sop} differs from the request's {sop_instance_uid}")
            if keys.sop_class_uid != request.sop_class_uid:
                raise InvalidUID(f"SOPClassUID {keys.sop_class_uid} differs from the request's")
            rel = relative_path(keys.study_uid, keys.series_uid, sop)
        except InvalidUID as exc:
            self.files.discard(temp)
            log.warning("rejected %s from %s (%s): %s", sop_instance_uid, calling_ae, calling_host, exc)
            return Outcome(DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc)[:64])
        transform = self.inbound.get(calling_ae)
        if transform is not None:
            temp, keys, attributes, rel = self._transform(temp, transform, transfer_syntax)
            sop = keys.sop_instance_uid

        try:
            size = temp.size()
            rec = instance_record(keys, rel, size, transfer_syntax, calling_ae, calling_host, attributes)
            with self._placing[hash(sop) % _LOCK_STRIPES]:
                group = rows is not None and len(rows) >= ROW_GROUP
                if not self._place(temp, rec, (lambda: self.write_rows(rows)) if group else None):
                    log.info("duplicate %s from %s: already stored, kept the first", sop, calling_ae)
                    return Outcome(SUCCESS, duplicate=True, study_uid=keys.study_uid)
                try:
                    acknowledge(Outcome(SUCCESS, study_uid=keys.study_uid))
                finally:
                    if rows is None:
                        added = self._index([rec]) == 1
                    else:     # written with a later instance's flushes, or when the association waits
                        with self._unindexed_lock:
                            self._unwritten.add(sop)
                        rows.append(rec)
                        added = True
                        if attributes:   # a new series: made known now, its next instances then need no pydicom
                            self.write_rows(rows)
        finally:
            self.files.discard(temp)     # closes it (a named one keeps only its new name)
        metrics.INSTANCES_RECEIVED.inc()
        metrics.BYTES_RECEIVED.inc(size)
        return Outcome(SUCCESS, duplicate=not added, study_uid=keys.study_uid)

    def _place(self, temp: TempFile, rec: InstanceRecord, meanwhile: Callable[[], None] | None = None) -> bool:
        """Give the file its name and make its data and name durable; False (and `temp` discarded)
        for a duplicate. Called with the instance's lock held, which is kept until its row is
        written, so a file without a row is never another association's copy in flight: it is one an
        interrupted run placed and never indexed (or whose row failed), and it is replaced.

        A sealed file is named first and then flushed, data and folder at once (a crash in between
        leaves a copy recovery can tell is cut short: `FileStore.intact`); an unsealed one, and any
        copy that replaces a file already there (which may be an acknowledged instance), has its
        data flushed before it takes the name. From then on the file alone is enough to rebuild its
        index row (store/recovery.py), so the instance may be acknowledged, and the index commit
        need not wait for the disk. `meanwhile` runs while the flushes wait (or right away)."""
        if meanwhile is not None and not temp.sealed:
            meanwhile()
        if not temp.sealed:
            self.files.sync_file(temp)
        if self.files.place(temp, rec.path):
            if temp.sealed:
                self.files.sync_placed(temp, rec.path, meanwhile)
            else:
                self.files.sync_dir(rec.path)
            return True
        if meanwhile is not None and temp.sealed:
            meanwhile()
        if self._indexed(rec.sop_instance_uid):
            self.files.discard(temp)
            return False
        if temp.sealed:
            self.files.sync_file(temp)
        self.files.place(temp, rec.path, replace=True)
        self.files.sync_dir(rec.path)
        return True

    def _indexed(self, sop_instance_uid: str) -> bool:
        """Whether the instance has its row, or an association holds it to write (a file there is
        then not a leftover to replace but the first copy)."""
        with self._unindexed_lock:
            if sop_instance_uid in self._unwritten:
                return True
        return self.index.contains(sop_instance_uid)

    def write_rows(self, rows: list[InstanceRecord]) -> None:
        """Write an association's unwritten rows (`accept`'s `rows`) in one commit and empty the list."""
        if not rows:
            return
        batch = list(rows)
        rows.clear()
        try:
            self._index(batch)
        finally:
            with self._unindexed_lock:
                self._unwritten.difference_update(rec.sop_instance_uid for rec in batch)

    def _index(self, records: list[InstanceRecord]) -> int:
        """Write the rows of instances already stored and acknowledged; how many were new (the
        others another node sharing the database indexed first). Rows that cannot be written now
        are left to recovery: the run is marked for them (`unindexed`) and the files stay."""
        try:
            return self.index.add_many(records)
        except Exception:
            with self._unindexed_lock:
                self.unindexed += len(records)
            log.exception("indexing %s failed; %s stored and the next start re-indexes %s",
                          ", ".join(rec.sop_instance_uid for rec in records),
                          "its file is" if len(records) == 1 else "their files are",
                          "it" if len(records) == 1 else "them")
            return len(records)
