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
from pynetdicom import AE

from neuropetrix.config.settings import Peer

log = logging.getLogger("neuropetrix.scu")
MAX_CONTEXTS = 128


class SendError(Exception):
    """The peer could not be reached or refused the association."""


@dataclass
class SendReport:
    sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)   # (file, why)

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


def send_files(peer: Peer, files: list[Path], calling_ae: str, timeout: float = 30.0,
               transform: Callable[[Dataset], None] | None = None) -> SendReport:
    """C-STORE each file to `peer`: as stored (no re-encoding), or read and changed by `transform` on
    the way out (coercion, de-identification). Unreadable files are reported and skipped."""
    report = SendReport()
    readable = []
    for f in files:
        try:
            ds = dcmread(f, stop_before_pixels=True)
            readable.append((f, str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
        except (InvalidDicomError, AttributeError, OSError) as exc:
            report.failed.append((str(f), f"not a DICOM file: {exc}"))
    contexts = sorted({(sop, ts) for _, sop, ts in readable})
    if len(contexts) > MAX_CONTEXTS:
        raise SendError(f"{len(contexts)} SOP class/transfer syntax pairs exceed {MAX_CONTEXTS} contexts")
    if not readable:
        return report
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop, ts in contexts:
        syntaxes = [ts] + [t for t in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if t != ts]
        ae.add_requested_context(sop, syntaxes)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    if not assoc.is_established:
        raise SendError(f"{peer.name} ({peer.ae_title}@{peer.host}:{peer.port}) refused or unreachable")
    try:
        for f, _, _ in readable:
            status = assoc.send_c_store(f if transform is None else _transformed(f, transform))
            code = getattr(status, "Status", None)
            if code is None:
                report.failed.append((str(f), "no response (timeout or association lost)"))
                if not assoc.is_established:
                    break
            elif code == 0x0000 or 0xB000 <= code <= 0xBFFF:
                report.sent += 1
            else:
                report.failed.append((str(f), f"status 0x{code:04X} {status.get('ErrorComment', '')}".strip()))
    finally:
        if assoc.is_established:
            assoc.release()
    log.info("sent %d file(s) to %s, %d failed", report.sent, peer.name, len(report.failed))
    return report
