"""`neuropetrix demo`: show the whole path of one study on the running node, without a scanner.

It plays both ends the configuration's `demo` peer stands for: the scanner (a whole-body PET/CT phantom
with a Turkish patient, sent with the node's own C-STORE SCU as AE DEMO, and the MPPS a scanner sends
so the study completes at once) and the PACS (a DICOM receiver at the demo peer's address that takes
what the `demo` route forwards). It follows the study through the node's database — received,
complete, analysed, delivered — and prints where to look. The default config/node.yaml has the
`demo` peer and route; a site removes both when it goes live.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Self

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep
from sqlalchemy import select

from neuropetrix.cli import CommandError, add_config_option, settings_from
from neuropetrix.config.settings import Peer, Settings
from neuropetrix.engine.jobs import job_json
from neuropetrix.node.scu.dicom import SendError, dicom_files, send_files
from neuropetrix.store.db import open_current
from neuropetrix.store.jobs_models import DONE, FAILED, Job
from neuropetrix.store.models import Study

DEMO_PEER = "demo"
PATIENT_NAME = "DEMİR^ŞÜKRÜ"          # Turkish letters that Latin-1 cannot hold: the charset path is shown
PATIENT_ID = "10000000146"            # a valid T.C. Kimlik No (checksum), not a real person's
SUCCESS = 0x0000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="send a whole-body PET/CT phantom through the running node and follow it")
    add_config_option(p)
    p.add_argument("--study", type=Path, metavar="DIR", help="send this folder of DICOM files instead of the phantom")
    p.add_argument("--seed", type=int, default=0, help="phantom noise seed (each run is a new study either way)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for analysis and delivery")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    peer = demo_peer(settings)
    if args.study is not None:
        return Demo(settings, peer).run(dicom_files([args.study]), args.timeout)
    from neuropetrix.phantoms.wholebody import write_study  # numpy-heavy: only when it is needed

    with tempfile.TemporaryDirectory(prefix="neuropetrix-demo-") as tmp:
        write_study(Path(tmp), patient_name=PATIENT_NAME, patient_id=PATIENT_ID,
                    accession=datetime.now().strftime("DEMO%y%m%d%H%M%S"), seed=args.seed)
        return Demo(settings, peer).run(dicom_files([Path(tmp)]), args.timeout)


def demo_peer(settings: Settings) -> Peer:
    """The `demo` peer, checked to be the destination of a route that matches it as the caller."""
    try:
        peer = settings.peer(DEMO_PEER)
    except KeyError:
        raise CommandError("the configuration has no `demo` peer: copy the demo peer and route from "
                           "config/node.yaml") from None
    forwards = [r for r in settings.routes
                if r.match.get("calling_ae") == peer.ae_title
                and any(isinstance(a, dict) and a.get("forward") == DEMO_PEER for a in r.actions)]
    if not forwards:
        raise CommandError(f"no route matches calling_ae {peer.ae_title} and forwards to {DEMO_PEER}: "
                           "copy the demo route from config/node.yaml")
    return peer


class Receiver:
    """A DICOM storage SCP at the demo peer's address, keeping what the node delivers."""

    def __init__(self, peer: Peer, folder: Path) -> None:
        self.peer, self.folder = peer, folder
        self.received: list[str] = []         # SOP Class UIDs, in arrival order

    def _store(self, event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        ds.save_as(self.folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        self.received.append(str(ds.SOPClassUID))
        return SUCCESS

    def __enter__(self) -> Self:
        self.folder.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.peer.ae_title)
        ae.supported_contexts = StoragePresentationContexts
        try:
            self.server = ae.start_server((self.peer.host, self.peer.port), block=False,
                                          evt_handlers=[(evt.EVT_C_STORE, self._store)])
        except OSError as exc:
            raise CommandError(f"the demo receiver cannot listen on {self.peer.host}:{self.peer.port} "
                               f"(peers: demo): {exc.strerror or exc}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


def _node_address(settings: Settings) -> Peer:
    node = settings.node
    host = "127.0.0.1" if node.dicom_host in ("0.0.0.0", "", "::") else node.dicom_host
    return Peer(name="node", ae_title=node.ae_title, host=host, port=node.dicom_port)


def _procedure_step(calling_ae: str, files: list[Path]) -> tuple[Dataset, Dataset]:
    """MPPS N-CREATE (in progress) and N-SET (completed, listing every image) of the demo study."""
    headers = [dcmread(f, stop_before_pixels=True) for f in files]
    first = headers[0]
    create = Dataset()
    step = Dataset()
    step.StudyInstanceUID, step.AccessionNumber = first.StudyInstanceUID, first.get("AccessionNumber", "")
    create.ScheduledStepAttributesSequence = Sequence([step])
    create.SpecificCharacterSet = first.get("SpecificCharacterSet", "ISO_IR 192")
    create.PatientName, create.PatientID = first.PatientName, first.PatientID
    create.PerformedProcedureStepID = "DEMO"
    create.PerformedStationAETitle = calling_ae
    now = datetime.now()
    create.PerformedProcedureStepStartDate, create.PerformedProcedureStepStartTime = (
        now.strftime("%Y%m%d"), now.strftime("%H%M%S"))
    create.PerformedProcedureStepStatus = "IN PROGRESS"
    create.Modality = "PT"
    create.PerformedSeriesSequence = Sequence([])
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    done.PerformedProcedureStepEndDate, done.PerformedProcedureStepEndTime = (
        now.strftime("%Y%m%d"), now.strftime("%H%M%S"))
    series: dict[str, Dataset] = {}
    for h in headers:
        item = series.get(h.SeriesInstanceUID)
        if item is None:
            item = series[h.SeriesInstanceUID] = Dataset()
            item.SeriesInstanceUID, item.ReferencedImageSequence = h.SeriesInstanceUID, Sequence([])
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = h.SOPClassUID, h.SOPInstanceUID
        item.ReferencedImageSequence.append(ref)
    done.PerformedSeriesSequence = Sequence(list(series.values()))
    return create, done


def _mpps(node: Peer, calling_ae: str, send: Callable[[object], tuple[object, object]]) -> None:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title)
    if not assoc.is_established:
        raise CommandError(f"the node ({node.ae_title}@{node.host}:{node.port}) refused the MPPS association")
    try:
        status, _ = send(assoc)
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    if code != SUCCESS:
        raise CommandError(f"the node answered the MPPS with status {code if code is None else hex(code)}")


class Demo:
    def __init__(self, settings: Settings, peer: Peer, out: Callable[[str], None] = print) -> None:
        self.settings, self.peer, self.out = settings, peer, out
        self.node = _node_address(settings)

    def run(self, files: list[Path], timeout: float) -> int:
        if not files:
            raise CommandError("no DICOM files to send")
        first = dcmread(files[0], stop_before_pixels=True)
        study_uid = str(first.StudyInstanceUID)
        _, sessions = open_current(self.settings.node.db_url)
        folder = self.settings.node.data_dir / "demo-receiver" / study_uid
        with Receiver(self.peer, folder) as receiver:
            self.out(f"demo: receiver {self.peer.ae_title} listening on {self.peer.host}:{self.peer.port} "
                     f"(peer {DEMO_PEER}) keeps what the node forwards in {folder}")
            create, done = _procedure_step(self.peer.ae_title, files)
            step_uid = generate_uid()
            _mpps(self.node, self.peer.ae_title,
                  lambda a: a.send_n_create(create, ModalityPerformedProcedureStep, step_uid))
            try:
                report = send_files(self.node, files, self.peer.ae_title)
            except SendError as exc:
                raise CommandError(f"{exc}: is the node running (`make run`)?") from None
            if not report.ok:
                raise CommandError(f"the node refused {len(report.failed)} of {len(files)} file(s): "
                                   f"{report.failed[0][1]}")
            _mpps(self.node, self.peer.ae_title,
                  lambda a: a.send_n_set(done, ModalityPerformedProcedureStep, step_uid))
            self.out(f"demo: sent {report.sent} image(s) of {first.PatientName} (study {study_uid}) to "
                     f"{self.node.ae_title}@{self.node.host}:{self.node.port} as {self.peer.ae_title}, "
                     "and the completed procedure step")
            ok = self._follow(sessions, study_uid, timeout)
            if receiver.received:
                self.out(f"demo: the receiver got {len(receiver.received)} object(s) from the node")
        self._where_to_look(study_uid)
        return 0 if ok else 1

    def _follow(self, sessions, study_uid: str, timeout: float) -> bool:
        """Print each change of the study and its jobs until every job is done (True), one is parked as
        failed, or the timeout passes (False)."""
        seen: dict[object, str] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with sessions() as s:
                state = s.scalar(select(Study.state).where(Study.study_uid == study_uid))
                jobs = [job_json(j) for j in s.scalars(select(Job).where(Job.study_uid == study_uid)
                                                      .order_by(Job.id))]
            if state and seen.get("study") != state:
                seen["study"] = state
                self.out(f"demo: study {state}")
            for j in jobs:
                if seen.get(j["id"]) != j["state"]:
                    seen[j["id"]] = j["state"]
                    error = f" ({j['last_error']})" if j["state"] == FAILED and j["last_error"] else ""
                    self.out(f"demo: job {j['id']} {j['kind']} → {j['destination']}: {j['state']}{error}")
            if any(j["state"] == FAILED for j in jobs):
                return False
            if jobs and all(j["state"] == DONE for j in jobs):
                return True
            time.sleep(0.5)
        self.out(f"demo: not finished after {timeout:.0f} s; `neuropetrix jobs` shows what is pending")
        return False

    def _where_to_look(self, study_uid: str) -> None:
        node = self.settings.node
        host = "127.0.0.1" if node.api_host in ("0.0.0.0", "", "::") else node.api_host
        results = node.data_dir / "results" / study_uid
        analysis = results / "analysis.json"
        if analysis.is_file():
            summary = json.loads(analysis.read_text(encoding="utf-8"))

            def shown(key: str) -> str:
                value = summary.get(key)
                return f"{value:.2f}" if isinstance(value, int | float) else "?"
            self.out(f"demo: analysis: {summary.get('lesion_count', '?')} lesion(s), "
                     f"SUVmax {shown('suv_max')}, TMTV {shown('tmtv_ml')} ml")
        self.out("look at:")
        self.out(f"  the study     http://{host}:{node.api_port}/#/study/{study_uid}")
        self.out(f"  its results   {results}")
        self.out("  the jobs      neuropetrix jobs   (or the dashboard's jobs page as admin)")
