"""C-FIND on a large index: our Query/Retrieve SCP beside Orthanc, the same queries on the same data.

    .venv/bin/python benchmarks/cfind.py [--instances 100000] [--rounds 7] [--keep DIR]

The data: `--instances` instances in studies of two series (CT and PT) of `--per-series` instances
each, two studies per patient, study dates spread over two years. Orthanc gets every instance as a
small DICOM file (no pixel data) through its REST API (`POST /instances`, four clients at once, its
files not fsync'd one by one: that is loading, not what is measured); our
node gets the same rows inserted straight into its database (the rows C-STOREs would have made; its
storage is not read by C-FIND). Both then run as their own processes on loopback: Orthanc 1.10 with
its default SQLite index, our node as `neuropetrix serve` on SQLite.

The queries, each asked by the same pynetdicom SCU (one association per query, as viewers do), Study
Root:
- study by patient: STUDY level, PatientID, with StudyDate, AccessionNumber, ModalitiesInStudy,
  NumberOfStudyRelatedInstances asked for (2 matches);
- studies of a month: STUDY level, a StudyDate range, PatientID and PatientName asked for (~1/24 of
  the studies);
- series of a study: SERIES level, StudyInstanceUID, with Modality, SeriesNumber,
  NumberOfSeriesRelatedInstances asked for (2 matches);
- images of a series: IMAGE level, StudyInstanceUID + SeriesInstanceUID (`--per-series` matches).
Every answer's match count is checked to be the same from both. Printed per query: the median wall
time over `--rounds` rounds (each round asks for other patients / studies), ours, Orthanc's and the
ratio ours / Orthanc. The load generator shares the machine's cores with both servers.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.filewriter import dcmwrite  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402
from pynetdicom import AE  # noqa: E402
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from neuropetrix.store.db import open_database, utcnow  # noqa: E402
from neuropetrix.store.models import Instance, Patient, Series, Study  # noqa: E402
from tests.support.nodeproc import running_node  # noqa: E402
from tests.support.peers import orthanc  # noqa: E402

CLIENT_AE = "BENCH"
CT, PT = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.128"
FIRST_DAY = date(2025, 1, 1)


@dataclass(frozen=True)
class StudyRow:
    patient: int
    index: int
    study_date: str

    @property
    def uid(self) -> str:
        return f"1.2.826.0.1.3680043.10.1138.{self.index + 1}"

    def series_uid(self, k: int) -> str:
        return f"{self.uid}.{k + 1}"

    def sop_uid(self, k: int, n: int) -> str:
        return f"{self.uid}.{k + 1}.{n + 1}"


def patient_id(p: int) -> str:
    return f"P{p:06d}"


def layout(instances: int, per_series: int) -> list[StudyRow]:
    studies = max(1, instances // (2 * per_series))
    return [StudyRow(i // 2, i, (FIRST_DAY + timedelta(days=(i * 7919) % 730)).strftime("%Y%m%d"))
            for i in range(studies)]


def instance_bytes(study: StudyRow, k: int, n: int) -> bytes:
    """One small instance (no pixel data) with the keys both servers index."""
    sop_class = (CT, PT)[k]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, study.sop_uid(k, n)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, study.sop_uid(k, n)
    ds.PatientName, ds.PatientID = f"HASTA^{study.patient:06d}", patient_id(study.patient)
    ds.PatientBirthDate, ds.PatientSex = "19600101", "F"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study.uid, study.study_date, "093000"
    ds.AccessionNumber, ds.StudyDescription, ds.StudyID = f"A{study.index:07d}", "PET/CT", "1"
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesNumber = study.series_uid(k), ("CT", "PT")[k], k + 1
    ds.InstanceNumber = n + 1
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def load_orthanc(pacs, studies: list[StudyRow], per_series: int) -> float:
    """POST every instance to Orthanc, four at a time; returns the seconds it took."""
    def post(job: tuple[StudyRow, int]) -> None:
        study, k = job
        for n in range(per_series):
            pacs.request("POST", "/instances", instance_bytes(study, k, n), "application/dicom")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(post, [(s, k) for s in studies for k in (0, 1)]))
    return time.perf_counter() - t0


def load_node(db_url: str, studies: list[StudyRow], per_series: int) -> float:
    """Insert the same patients, studies, series and instances into the node's index."""
    t0 = time.perf_counter()
    engine, _ = open_database(db_url)
    now = utcnow()
    with engine.begin() as conn:
        patients = sorted({s.patient for s in studies})
        conn.execute(insert(Patient), [{"id": p + 1, "patient_id": patient_id(p), "issuer": "",
                                        "name": f"HASTA^{p:06d}", "birth_date": "19600101", "sex": "F"}
                                       for p in patients])
        conn.execute(insert(Study), [{"id": s.index + 1, "study_uid": s.uid, "patient_pk": s.patient + 1,
                                      "study_date": s.study_date, "study_time": "093000",
                                      "accession_number": f"A{s.index:07d}", "description": "PET/CT",
                                      "state": "complete", "first_received_at": now, "last_received_at": now,
                                      "completed_at": now, "completion_count": 1} for s in studies])
        conn.execute(insert(Series), [{"id": 2 * s.index + k + 1, "series_uid": s.series_uid(k),
                                       "study_pk": s.index + 1, "modality": ("CT", "PT")[k], "series_number": k + 1,
                                       "description": "", "body_part": "", "frame_of_reference_uid": "",
                                       "calling_ae": "STORESCU"} for s in studies for k in (0, 1)])
        rows = [{"sop_instance_uid": s.sop_uid(k, n), "sop_class_uid": (CT, PT)[k], "series_pk": 2 * s.index + k + 1,
                 "instance_number": n + 1, "transfer_syntax_uid": ExplicitVRLittleEndian,
                 "path": f"{s.uid}/{s.series_uid(k)}/{s.sop_uid(k, n)}.dcm", "size_bytes": 600,
                 "received_at": now, "calling_ae": "STORESCU", "calling_host": "127.0.0.1"}
                for s in studies for k in (0, 1) for n in range(per_series)]
        for start in range(0, len(rows), 20000):
            conn.execute(insert(Instance), rows[start:start + 20000])
    engine.dispose()
    return time.perf_counter() - t0


def c_find(port: int, aet: str, identifier: Dataset) -> int:
    """One association, one Study Root C-FIND; the number of matches (a failure raises)."""
    ae = AE(ae_title=CLIENT_AE)
    ae.add_requested_context(STUDY_ROOT)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        raise RuntimeError(f"{aet} refused the association")
    matches = 0
    try:
        for status, _ in assoc.send_c_find(identifier, STUDY_ROOT):
            code = getattr(status, "Status", None)
            if code in (0xFF00, 0xFF01):
                matches += 1
            elif code != 0x0000:
                raise RuntimeError(f"{aet} answered 0x{code:04X}" if code is not None else f"{aet}: no answer")
    finally:
        assoc.release()
    return matches


def _ds(**keys: object) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def queries(studies: list[StudyRow], round_: int) -> dict[str, Dataset]:
    """This round's four queries; each round picks other patients, months and studies."""
    study = studies[(round_ * 104729) % len(studies)]
    month = (FIRST_DAY + timedelta(days=31 * (round_ % 23))).strftime("%Y%m")
    return {
        "study by patient": _ds(QueryRetrieveLevel="STUDY", PatientID=patient_id(study.patient), StudyInstanceUID="",
                                StudyDate="", AccessionNumber="", ModalitiesInStudy="",
                                NumberOfStudyRelatedInstances=""),
        "studies of a month": _ds(QueryRetrieveLevel="STUDY", StudyDate=f"{month}01-{month}31", StudyInstanceUID="",
                                  PatientID="", PatientName=""),
        "series of a study": _ds(QueryRetrieveLevel="SERIES", StudyInstanceUID=study.uid, SeriesInstanceUID="",
                                 Modality="", SeriesNumber="", NumberOfSeriesRelatedInstances=""),
        "images of a series": _ds(QueryRetrieveLevel="IMAGE", StudyInstanceUID=study.uid,
                                  SeriesInstanceUID=study.series_uid(1), SOPInstanceUID="", InstanceNumber=""),
    }


def timed(ask: Callable[[], int]) -> tuple[float, int]:
    t0 = time.perf_counter()
    matches = ask()
    return time.perf_counter() - t0, matches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--per-series", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--keep", type=Path, default=None,
                        help="work folder to keep, and to use again when it holds the same data (default: a "
                             "temporary one, removed)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="cfind-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    studies = layout(args.instances, args.per_series)
    total = len(studies) * 2 * args.per_series
    print(f"{total} instances: {len(studies)} studies of 2 series × {args.per_series}, "
          f"{len({s.patient for s in studies})} patients")
    overrides = {"peers": [{"name": "bench", "ae_title": CLIENT_AE, "host": "127.0.0.1", "port": 1}],
                 "node": {"log_level": "WARNING"}}
    # loading only: no fsync per stored file (the queries read the index, which Orthanc keeps as usual)
    with orthanc(work / "orthanc", timeout=60, modalities={"bench": (CLIENT_AE, "127.0.0.1", 1)},
                 settings={"SyncStorageArea": False}) as pacs:
        if pacs.get("/statistics")["CountInstances"] == 0:
            seconds = load_orthanc(pacs, studies, args.per_series)
            print(f"Orthanc loaded in {seconds:.0f} s ({total / seconds:.0f} instances/s)")
        stats = pacs.get("/statistics")
        if stats["CountInstances"] != total:
            raise SystemExit(f"Orthanc holds {stats['CountInstances']} instances, not {total}")
        data_dir = work / "node" / "var"
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        data_dir.chmod(0o700)
        database = (data_dir / "neuropetrix.db").resolve()
        if not database.exists():      # a kept folder is used again as it is
            seconds = load_node(f"sqlite:///{database}", studies, args.per_series)
            print(f"node index filled in {seconds:.1f} s")
        with running_node(work / "node", overrides) as node:
            times: dict[str, tuple[list[float], list[float]]] = {}
            for round_ in range(args.rounds):
                for name, identifier in queries(studies, round_).items():
                    ours, n_ours = timed(lambda: c_find(node.dicom_port, node.ae_title, identifier))
                    theirs, n_theirs = timed(lambda: c_find(pacs.dicom_port, pacs.aet, identifier))
                    if n_ours != n_theirs:
                        raise SystemExit(f"{name}: we found {n_ours} matches, Orthanc {n_theirs}")
                    times.setdefault(name, ([], []))[0].append(ours)
                    times[name][1].append(theirs)
    print(f"\nmedian of {args.rounds} rounds, one association per query")
    print(f"{'query':<22}{'ours ms':>10}{'Orthanc ms':>12}{'ratio':>8}")
    report = {}
    for name, (ours, theirs) in times.items():
        a, b = statistics.median(ours), statistics.median(theirs)
        report[name] = {"ours_ms": round(a * 1000, 1), "orthanc_ms": round(b * 1000, 1), "ratio": round(a / b, 2)}
        print(f"{name:<22}{a * 1000:>10.1f}{b * 1000:>12.1f}{a / b:>8.2f}")
    print(json.dumps({"instances": total, "studies": len(studies), "rounds": args.rounds, "queries": report}))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
