"""Analysis results on disk: `data_dir/results/<study>/`, made whole or not at all.

An analysis writes into a temporary folder beside it and the folder is renamed into place only when
every file is there, with `job.json` naming the job that made it. Deliveries read these files and never
rebuild them, so a retried delivery sends the very same objects (same UIDs, same control ids); a
re-run analysis of the same study gets the same UIDs from reports/uids.py.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from pathlib import Path

from neuropetrix.dicom_uids import check_uid

# Route object names → result files (reports/writer.py FILES).
OBJECT_FILES = {"seg": "seg.dcm", "sr": "sr.dcm", "pdf": "report.dcm"}
HL7_FILE, FHIR_FILE, ANALYSIS_FILE, STAMP_FILE = "oru.hl7", "fhir_bundle.json", "analysis.json", "job.json"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ResultStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # per host: nodes sharing storage must not clean up each other's analyses in progress
        self.incoming = self.root / ".incoming" / socket.gethostname()

    def folder(self, study_uid: str) -> Path:
        return self.root / check_uid(study_uid, "StudyInstanceUID")

    def made_by(self, study_uid: str) -> tuple[int, int] | None:
        """(job, attempt) that wrote the current results of a study, or None when there are none."""
        try:
            stamp = json.loads((self.folder(study_uid) / STAMP_FILE).read_text())
            return int(stamp["job"]), int(stamp["attempt"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def new_temp(self, study_uid: str) -> Path:
        temp = self.incoming / f"{check_uid(study_uid, 'StudyInstanceUID')}-{uuid.uuid4().hex}"
        temp.mkdir(parents=True)
        return temp

    def publish(self, temp: Path, study_uid: str, job_id: int, attempt: int) -> Path:
        """Stamp `temp` with the job, make it durable and rename it into place, replacing earlier
        results: once the job is recorded done, its files survive a power cut."""
        (temp / STAMP_FILE).write_text(json.dumps({"job": job_id, "attempt": attempt}))
        for path in temp.iterdir():
            _fsync(path)
        _fsync(temp)
        final = self.folder(study_uid)
        old = None
        if final.exists():
            old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex}")
            os.replace(final, old)
        os.replace(temp, final)
        _fsync(self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def clean_incoming(self) -> None:
        """Remove half-written results of this host's analyses that were interrupted."""
        shutil.rmtree(self.incoming, ignore_errors=True)
        for old in self.root.glob(".old-*"):
            shutil.rmtree(old, ignore_errors=True)

    def file(self, study_uid: str, name: str) -> Path:
        return self.folder(study_uid) / name
