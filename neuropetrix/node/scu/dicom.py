"""C-STORE SCU: send DICOM files to a configured peer over one association (pynetdicom)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.sop_class import StorageCommitmentPushModel

from neuropetrix.config.settings import Peer, TlsSettings
from neuropetrix.node.entity import node_ae
from neuropetrix.node.scp.status import done
from neuropetrix.node.scu import commitment as storage_commitment
from neuropetrix.node.tls import peer_tls_args

log = logging.getLogger("neuropetrix.scu")
MAX_CONTEXTS = 128


class SendError(Exception):
    """The peer could not be reached or refused the association."""


@dataclass
class SendReport:
    sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)   # (file, why)
    stored: list[tuple[str, str]] = field(default_factory=list)   # (SOP Class UID, SOP Instance UID)
    commitment: str | None = None       # the transaction UID, when the peer took a commitment request

    @property
    def ok(self) -> bool:
        return not self.failed


def dicom_files(paths: Iterable[Path]) -> list[Path]:
    """Files given, and every file under folders given, in a stable order."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise SendError(f"{p}: no such file or folder")
    return out


def _transformed(path: Path, transform: Callable[[Dataset], None]) -> Dataset:
    ds = dcmread(path)
    transform(ds)
    return ds


def send_files(peer: Peer, files: list[Path], calling_ae: str, timeout: float | None = None,
               transform: Callable[[Dataset], None] | None = None,
               commitment: Callable[[list[tuple[str, str]]], str | None] | None = None,
               originator: tuple[str, int] | None = None,
               progress: Callable[[str, int | None], bool] | None = None,
               tls: TlsSettings | None = None) -> SendReport:
    """C-STORE each file to `peer`: as stored (no re-encoding), or read and changed by `transform` on
    the way out (coercion, de-identification). Unreadable files are reported and skipped.

    A C-MOVE's sub-operations name their `originator` (AE title, Message ID of the C-MOVE-RQ) and
    are followed by `progress(SOP Instance UID, status or None)` after each file ("" for a file that
    could not be read), which returns False to send no more (a C-CANCEL).

    When everything was stored and the peer accepts the Storage Commitment Push Model, `commitment`
    is called with what was stored and returns the transaction UID to request commitment under (None:
    do not ask); `report.commitment` then holds it. The caller records that it waits for the answer
    before the request goes out, because a PACS may answer at once.

    A peer with `tls: true` is called over TLS with `tls` (node.tls): its certificate checked
    against the trust list, ours offered.
    """
    report = SendReport()
    readable = []
    for f in files:
        try:
            ds = dcmread(f, stop_before_pixels=True)
            readable.append((f, str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID), str(ds.SOPInstanceUID)))
        except (InvalidDicomError, AttributeError, OSError) as exc:
            report.failed.append((str(f), f"not a DICOM file: {exc}"))
            if progress is not None:
                progress("", None)
    contexts = sorted({(sop, ts) for _, sop, ts, _ in readable})
    if len(contexts) + (commitment is not None) > MAX_CONTEXTS:
        raise SendError(f"{len(contexts)} SOP class/transfer syntax pairs exceed {MAX_CONTEXTS} contexts")
    if not readable:
        return report
    ae = node_ae(calling_ae)
    # every step has a deadline (the peer's own unless given): the TCP connect, the association, each
    # DIMSE answer, a silent socket
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout or peer.timeout
    for sop, ts in contexts:
        syntaxes = [ts] + [t for t in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if t != ts]
        ae.add_requested_context(sop, syntaxes)
    if commitment is not None:
        ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=peer_tls_args(peer, tls))
    if not assoc.is_established:
        raise SendError(f"{peer.name} ({peer.ae_title}@{peer.host}:{peer.port}{' TLS' if peer.tls else ''}) "
                        "refused or unreachable")
    try:
        for f, sop_class, _, sop_instance in readable:
            origin = {} if originator is None else {"originator_aet": originator[0], "originator_id": originator[1]}
            if transform is None:
                status = assoc.send_c_store(f, **origin)
            else:
                ds = _transformed(f, transform)
                sop_instance = str(ds.SOPInstanceUID)
                status = assoc.send_c_store(ds, **origin)
            code = getattr(status, "Status", None)
            if code is None:
                report.failed.append((str(f), "no response (timeout or association lost)"))
                if not assoc.is_established:
                    break
            elif done(code):
                report.sent += 1
                report.stored.append((sop_class, sop_instance))
            else:
                report.failed.append((str(f), f"status 0x{code:04X} {status.get('ErrorComment', '')}".strip()))
            if (progress is not None and not progress(sop_instance, code)) or not assoc.is_established:
                break
        if commitment is not None and report.ok and storage_commitment.offered(assoc):
            transaction = commitment(report.stored)
            if transaction:
                storage_commitment.request(assoc, transaction, report.stored)
                report.commitment = transaction
    finally:
        if assoc.is_established:
            assoc.release()
    log.info("sent %d file(s) to %s, %d failed", report.sent, peer.name, len(report.failed))
    return report
