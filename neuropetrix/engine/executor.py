"""What each kind of job does: analyse a study, forward DICOM, send the ORU, post the FHIR bundle,
notify. Failures come back as JobFailure (permanent or not); the queue decides when to try again."""
from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.config.settings import Settings
from neuropetrix.dicom_uids import check_uid
from neuropetrix.engine import notifications, priors, push_jobs, retention
from neuropetrix.engine.analysis_runner import AnalysisFailed, AnalysisProcess
from neuropetrix.engine.jobs import Claimed, JobFailure
from neuropetrix.engine.orders import order_facts
from neuropetrix.engine.result_store import (
    ANALYSIS_FILE,
    FHIR_FILE,
    HL7_FILE,
    OBJECT_FILES,
    ResultStore,
)
from neuropetrix.engine.routes.facts import study_files
from neuropetrix.engine.transforms import build
from neuropetrix.engine.transforms.deidentify import pseudonym_key
from neuropetrix.node.scu import fhir, mllp
from neuropetrix.node.scu.commitment import transaction_uid
from neuropetrix.node.scu.dicom import SendError, send_files
from neuropetrix.node.scu.errors import DeliveryError
from neuropetrix.node.scu.push import FcmSender
from neuropetrix.node.tls import client_context
from neuropetrix.reports.hl7 import CODECS
from neuropetrix.store.audit import FAILURE, SUCCESS, Access, audit_trail
from neuropetrix.store.db import utcnow
from neuropetrix.store.eventlog import EventKind, record
from neuropetrix.store.files import FileStore

log = logging.getLogger("neuropetrix.engine")
AWAITING_COMMITMENT = "commitment_transaction"    # in a result: stored, the PACS's answer still to come
_REFUSABLE = {"oru": HL7_FILE, "fhir_bundle": FHIR_FILE}   # analysis.json deliveries_refused kind → file


def done_event(kind: str) -> EventKind | None:
    """Pushes record no event: their outcome is the job's, and a push about a push would follow."""
    if kind in (push_jobs.KIND, *notifications.JOB_KINDS):
        return None
    return {"analyze": EventKind.ANALYSIS_DONE, "notify": None, priors.KIND: None,
            retention.KIND: None}.get(kind, EventKind.DELIVERY_DONE)   # a prune records study.pruned itself


def failed_event(kind: str) -> EventKind | None:
    if kind in (push_jobs.KIND, *notifications.JOB_KINDS):
        return None
    if kind == retention.KIND:
        return EventKind.PRUNE_FAILED
    return EventKind.ANALYSIS_FAILED if kind == "analyze" else EventKind.DELIVERY_FAILED


def _failure(exc: DeliveryError) -> JobFailure:
    retry_at = None if exc.retry_after is None else utcnow() + timedelta(seconds=exc.retry_after)
    return JobFailure(str(exc), permanent=exc.permanent, retry_at=retry_at)


class JobRunner:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], files: FileStore,
                 results: ResultStore, push: FcmSender | None = None) -> None:
        self.settings = settings
        self.sessions = sessions
        self.files = files
        self.results = results
        self.push = push
        self.channels = notifications.Channels(settings.notify, sessions, results)
        self.priors = priors.PriorFetcher(settings, sessions)
        self.audit = audit_trail(settings, sessions)

    def run(self, job: Claimed, stop: threading.Event, analyzer: AnalysisProcess | None = None,
            waiting: Callable[[dict], bool] | None = None) -> dict:
        """Do `job`; returns what to record as its result, or raises JobFailure. `waiting(result)`
        records that a forward now waits for a storage commitment answer (False: the job was lost)."""
        try:
            if job.kind == "analyze":
                assert analyzer is not None, "analysis jobs run on an analysis lane"
                return self._analyze(job, analyzer, stop)
            if job.kind == "forward":
                return self._forward(job, waiting)
            if job.kind == "hl7":
                return self._hl7(job)
            if job.kind == "fhir":
                return self._fhir(job)
            if job.kind == "notify":
                return self._notify(job)
            if job.kind == push_jobs.KIND:
                if self.push is None:
                    raise JobFailure("push is off on this node (push.credentials_file is not set)", permanent=True)
                result = push_jobs.send(job, self.push, self.sessions)
                with self.sessions.begin() as s:
                    notifications.mark_sent(s, job, utcnow())
                return result
            if job.kind in notifications.JOB_KINDS:
                return self.channels.run(job)
            if job.kind == "order_status":
                return self._order_status(job)
            if job.kind == priors.KIND:
                return self.priors.run(job)
            if job.kind == retention.KIND:
                return self._prune(job)
        except DeliveryError as exc:
            raise _failure(exc) from None
        raise JobFailure(f"unknown job kind {job.kind!r}", permanent=True)

    def _analyze(self, job: Claimed, analyzer: AnalysisProcess, stop: threading.Event) -> dict:
        if self.results.made_by(job.study_uid) == (job.id, job.attempts - 1):
            # the previous attempt published its results and the node stopped before recording it
            log.info("job %d: results of study %s already written by its previous attempt", job.id, job.study_uid)
            return {"resumed": True}
        with self.sessions.begin() as s:
            record(s, EventKind.ANALYSIS_STARTED, job.study_uid, {"job": job.id, "attempt": job.attempts})
            order = order_facts(s, job.study_uid)
            prior = priors.held_prior(s, job.study_uid)
        study_dir = self.files.path_of(check_uid(job.study_uid, "StudyInstanceUID"))
        prior_dir = None if prior is None else self.files.path_of(check_uid(prior, "StudyInstanceUID"))
        if prior is not None:
            log.info("job %d: study %s is compared with its prior study %s", job.id, job.study_uid, prior)
        temp = self.results.new_temp(job.study_uid)
        try:
            summary = analyzer.run(study_dir, temp, self.settings, stop, job.params, order, prior_dir)
            self.results.publish(temp, job.study_uid, job.id, job.attempts)
        except AnalysisFailed as exc:
            raise JobFailure(str(exc), permanent=exc.permanent) from None
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        log.info("study %s analysed: %s", job.study_uid, summary)
        return summary

    def _result_file(self, job: Claimed, name: str) -> Path:
        path = self.results.file(job.study_uid, name)
        if not path.is_file():
            refused = self._refusal(job, name)
            if refused:          # the analysis could not make it (no accession): retrying cannot help
                raise JobFailure(f"no {name} for study {job.study_uid}: {refused}", permanent=True)
            raise JobFailure(f"no {name} in the results of study {job.study_uid} (analysis not run?)")
        return path

    def _refusal(self, job: Claimed, name: str) -> str | None:
        """Why the analysis did not make `name`, as it wrote in analysis.json's deliveries_refused."""
        try:
            document = json.loads(self.results.file(job.study_uid, ANALYSIS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        refused = document.get("deliveries_refused") or {}
        return next((reason for kind, reason in refused.items() if _REFUSABLE.get(kind) == name), None)

    def _forward(self, job: Claimed, waiting: Callable[[dict], bool] | None) -> dict:
        try:
            peer = self.settings.peer(job.params["peer"])
        except KeyError as exc:                 # the configuration changed since the job was made
            raise JobFailure(exc.args[0], permanent=True) from None
        files: list[Path] = []
        skipped = []
        if "study" in job.objects:
            with self.sessions() as s:
                files += study_files(s, self.files, job.study_uid)
        for obj in (o for o in job.objects if o in OBJECT_FILES):
            path = self.results.file(job.study_uid, OBJECT_FILES[obj])
            if path.is_file():
                files.append(path)
            elif obj == "seg" and self.results.file(job.study_uid, ANALYSIS_FILE).is_file():
                skipped.append("seg (no lesions: no segmentation)")
            else:
                raise JobFailure(f"no {OBJECT_FILES[obj]} in the results of study {job.study_uid}")
        steps = [*job.params.get("route_transforms", []), *job.params.get("transforms", []), *peer.transforms]
        transform = build(steps, pseudonym_key(self.settings))

        def begin_commitment(stored: list[tuple[str, str]]) -> str | None:
            transaction = transaction_uid(job.id, job.attempts)
            result = {"sent": len(stored), "objects": job.objects, AWAITING_COMMITMENT: transaction}
            return transaction if waiting is not None and waiting(result) else None

        asks = self.settings.engine.commitment_port is not None and waiting is not None
        where = f"{peer.host}:{peer.port}"
        try:
            report = send_files(peer, files, self.settings.node.ae_title, transform=transform,
                                commitment=begin_commitment if asks else None, tls=self.settings.node.tls)
        except SendError as exc:
            self.audit.record(Access(peer.ae_title, "ae", "forward", FAILURE, where, job.study_uid, detail=str(exc)))
            raise JobFailure(str(exc)) from None
        self.audit.record(Access(peer.ae_title, "ae", "forward", SUCCESS if report.ok else FAILURE, where,
                                 job.study_uid, detail=f"{report.sent} of {len(files)} object(s) to {peer.name}"))
        if not report.ok:
            first = report.failed[0]
            raise JobFailure(f"{len(report.failed)} of {len(files)} object(s) not stored by {peer.name}, "
                             f"e.g. {Path(first[0]).name}: {first[1]}")
        return {"sent": report.sent, "objects": job.objects, **({"skipped": skipped} if skipped else {}),
                **({AWAITING_COMMITMENT: report.commitment} if report.commitment else {})}

    def _prune(self, job: Claimed) -> dict:
        """Retention: delete the study's images or results if nothing holds them any more."""
        result = retention.prune(self.sessions, self.files, self.results, self.settings.storage.retention,
                                 job.study_uid, job.objects[0], utcnow())
        if result["pruned"]:
            self.audit.record(Access(self.settings.node.ae_title, "node", "prune", SUCCESS, study_uid=job.study_uid,
                                     detail=f"{job.objects[0]} deleted by retention (job {job.id})"))
        return result

    def _send_hl7(self, message: bytes) -> dict:
        """One HL7 v2 message to hbys.mllp (over TLS when hbys.mllp.tls), acknowledged."""
        out = self.settings.hbys.mllp
        context = client_context(self.settings.node.tls) if out.tls else None
        ack = mllp.send_message(out.host, out.port, message, out.timeout, ssl_context=context)
        return {"ack": ack.code, "control_id": ack.control_id}

    def _hl7(self, job: Claimed) -> dict:
        return self._send_hl7(self._result_file(job, HL7_FILE).read_bytes())

    def _order_status(self, job: Claimed) -> dict:
        """The order status message built when the order changed (engine/order_status.py), as it was."""
        return self._send_hl7(job.params["message"].encode(CODECS[job.params["charset"]]))

    def _fhir(self, job: Claimed) -> dict:
        cfg = self.settings.hbys.fhir
        answer = fhir.post_bundle(cfg.base_url, self._result_file(job, FHIR_FILE).read_bytes(), cfg.token,
                                  cfg.timeout)
        return {"entries": len(answer.get("entry", []))}

    def _notify(self, job: Claimed) -> dict:
        summary_path = self.results.file(job.study_uid, ANALYSIS_FILE)
        analysis = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else None
        if (reason := notifications.unmet(job.params.get("when") or {}, analysis)) is not None:
            log.info("job %d: route %s does not notify for study %s: %s", job.id, job.route, job.study_uid, reason)
            return {"recipients": [], "not_notified": reason}
        category = ((analysis or {}).get("response") or {}).get("category")
        with self.sessions.begin() as s:
            record(s, EventKind.NOTIFICATION, job.study_uid, {
                **job.params, "job": job.id, "route": job.route, "recipients": job.params["recipients"],
                "analysed": analysis is not None, **({"response": category} if category else {})})
        return {"recipients": job.params["recipients"]}
