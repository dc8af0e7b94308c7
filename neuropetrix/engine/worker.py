"""The engine's threads: route completed studies, run jobs, keep leases of jobs in hand alive.

Delivery lanes (threads) take forward/HL7/FHIR/notify jobs: a slow or dead destination ties up at
most the lane talking to it, while its back-off keeps the others from calling it. Analysis lanes each
own a child process (analysis_runner). On stop, jobs in hand are either finished (deliveries, bounded
by their timeouts) or handed back to the queue (analyses) so a restart takes them at once.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.config.loader import ConfigError
from neuropetrix.config.settings import EngineSettings, Settings
from neuropetrix.engine import notifications, priors, push_jobs, retention
from neuropetrix.engine.analysis_runner import AnalysisProcess
from neuropetrix.engine.dispatch import Dispatcher, Gate
from neuropetrix.engine.executor import AWAITING_COMMITMENT, JobRunner, done_event, failed_event
from neuropetrix.engine.jobs import Claimed, JobFailure, JobQueue
from neuropetrix.engine.result_store import ResultStore
from neuropetrix.engine.retention import RetentionSweep
from neuropetrix.engine.review import ReviewWatcher, VersionStore
from neuropetrix.engine.routes.rules import compile_routes
from neuropetrix.node.scp.commitment_listener import CommitmentListener
from neuropetrix.node.scu.commitment import CommitmentReport, job_of
from neuropetrix.node.scu.push import FcmSender
from neuropetrix.node.tls import server_context
from neuropetrix.store.files import FileStore

log = logging.getLogger("neuropetrix.engine")
DELIVERY_KINDS = ("forward", "hl7", "fhir", "notify", "order_status", priors.KIND, push_jobs.KIND,
                  *notifications.JOB_KINDS, retention.KIND)
IDLE_POLLS = 4      # an idle lane reads the queue every IDLE_POLLS × engine.poll_seconds
ANALYSIS_KINDS = ("analyze",)


class Worker:
    def __init__(self, queue: JobQueue, runner: JobRunner, dispatcher: Dispatcher,
                 settings: EngineSettings, log_level: str = "INFO", warm_analysis: bool = True) -> None:
        self.queue = queue
        self.runner = runner
        self.dispatcher = dispatcher
        self.settings = settings
        self.log_level = log_level
        self.warm_analysis = warm_analysis      # start the analysis process now, not at the first study
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()
        # set when this process made work claimable (jobs created, a job finished that others wait
        # for), so idle lanes need not poll the database often: they look every IDLE_POLLS × poll
        self._work = threading.Event()
        self._threads: list[threading.Thread] = []
        self._in_hand: dict[str, int] = {}            # lane name → job id
        self._lock = threading.Lock()
        self._analyzers: list[AnalysisProcess] = []
        self.commitments: CommitmentListener | None = None
        self.push: push_jobs.PushPlanner | None = None
        self.notifications: notifications.NotificationPlanner | None = None   # route notify → channels
        self.reviews: ReviewWatcher | None = None      # analyses → review state (engine/review.py)
        self.retention: RetentionSweep | None = None   # storage.retention's prune jobs

    def on_commitment(self, report: CommitmentReport) -> bool:
        """A PACS's storage commitment answer: settle the job it names."""
        named = job_of(report.transaction_uid)
        if named is None or not self.queue.settle_commitment(*named, report.failed):
            log.warning("storage commitment answer %s matches no job waiting for one", report.transaction_uid)
            return named is not None          # an answer to an older attempt: taken note of, no error
        return True

    def start(self) -> None:
        lanes = [("routes", self._route_loop, ()), ("leases", self._lease_loop, ())]
        lanes += [(f"delivery-{i}", self._job_loop, (DELIVERY_KINDS, None, self.settings.lanes_per_destination))
                  for i in range(self.settings.workers)]
        for i in range(self.settings.analysis_workers):
            analyzer = AnalysisProcess(self.log_level)
            if self.warm_analysis:
                analyzer.warm()
            self._analyzers.append(analyzer)
            lanes.append((f"analysis-{i}", self._job_loop, (ANALYSIS_KINDS, analyzer, None)))
        if self.commitments is not None:
            self.commitments.start()
        for name, target, args in lanes:
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("engine started as %s: %d delivery lane(s), %d analysis lane(s)", self.node_id,
                 self.settings.workers, self.settings.analysis_workers)

    def _route_loop(self) -> None:
        """Each planner in turn: events → jobs and state. One that fails is logged and tried again at
        the next poll; the others go on. New work wakes the idle lanes."""
        while not self._stop.wait(self.settings.poll_seconds):
            planners = [(self.dispatcher, "routing completed studies"),
                        (self.reviews, "recording analysed results for review"),
                        (self.push, "making push notifications"),
                        (self.notifications, "making or escalating notifications"),
                        (self.retention, "the retention sweep")]
            for planner, what in planners:
                try:
                    if planner is not None and planner.run_once():
                        self._work.set()
                except Exception:
                    log.exception("%s failed; will try again", what)

    def _lease_loop(self) -> None:
        while not self._stop.wait(self.settings.lease_seconds / 3):
            with self._lock:
                ids = list(self._in_hand.values())
            try:
                self.queue.renew(self.node_id, ids)
            except Exception:
                log.exception("renewing job leases failed; will try again")

    def _job_loop(self, kinds: tuple[str, ...], analyzer: AnalysisProcess | None,
                  per_destination: int | None) -> None:
        lane = threading.current_thread().name
        while not self._stop.is_set():
            try:
                job = self.queue.claim(self.node_id, kinds, per_destination)
            except Exception:
                log.exception("claiming a job failed; will try again")
                job = None
            if job is None:
                # woken at once for this process's new work; jobs of other nodes and back-offs that
                # end are found by the slower poll
                if self._work.wait(self.settings.poll_seconds * IDLE_POLLS):
                    self._work.clear()
                continue
            with self._lock:
                self._in_hand[lane] = job.id
            try:
                self._run(job, analyzer)
            except Exception:                  # e.g. the database went away: the lease brings it back
                log.exception("job %d: recording its outcome failed; it runs again when its lease ends", job.id)
            finally:
                with self._lock:
                    self._in_hand.pop(lane, None)

    def _run(self, job: Claimed, analyzer: AnalysisProcess | None) -> None:
        log.info("job %d: %s of study %s → %s (attempt %d)", job.id, job.kind, job.study_uid,
                 job.destination, job.attempts)
        try:
            result = self.runner.run(job, self._stop, analyzer, lambda partial: self.queue.await_commitment(
                job, self.node_id, partial, self.settings.commitment_timeout))
        except JobFailure as failure:
            if self._stop.is_set() and job.kind == "analyze":       # interrupted, not failed
                self.queue.hand_back(job, self.node_id)
                log.info("job %d handed back to the queue: the node is stopping", job.id)
                return
            self.queue.fail(job, self.node_id, failure, failed_event(job.kind))
            return
        except Exception as exc:               # a bug or an unexpected peer: recorded, the lane goes on
            log.exception("job %d failed unexpectedly", job.id)
            self.queue.fail(job, self.node_id, JobFailure(f"{type(exc).__name__}: {exc}"), failed_event(job.kind))
            return
        if AWAITING_COMMITMENT in result:          # recorded before the request went out
            log.info("job %d: %d object(s) stored on %s; waiting for its storage commitment answer", job.id,
                     result["sent"], job.destination)
            return
        if self.queue.finish(job, self.node_id, result, done_event(job.kind)):
            log.info("job %d done: %s → %s %s", job.id, job.kind, job.destination, result)
            self._work.set()                   # jobs waiting for this one may go
        else:
            log.warning("job %d finished here but was taken by another worker meanwhile", job.id)

    def stop(self, grace: float = 30.0) -> None:
        self._stop.set()
        self._work.set()
        if self.commitments is not None:
            self.commitments.stop()
        for thread in self._threads:
            thread.join(timeout=grace if thread.name.startswith("delivery") else 10)
        for analyzer in self._analyzers:
            analyzer.close()


def build_worker(settings: Settings, sessions: sessionmaker[Session], files: FileStore,
                 gate: Gate | None = None) -> Worker:
    """The engine of a node, its rules checked first (RouteError names the rule at fault); `gate`
    holds completed studies back from routing (engine/orders.py)."""
    rules = compile_routes(settings)
    engine = settings.engine
    results = ResultStore(settings.node.data_dir / "results")
    results.clean_incoming()
    queue = JobQueue(sessions, engine.retry, engine.lease_seconds)
    sender = None
    if settings.push.credentials_file is not None:
        try:
            sender = FcmSender(settings.push.credentials_file, settings.push.fcm_endpoint)
        except (OSError, ValueError) as exc:     # missing file, not a service-account key
            raise ConfigError(f"push.credentials_file: cannot use {settings.push.credentials_file}: {exc}") from None
    worker = Worker(queue, JobRunner(settings, sessions, files, results, sender),
                    Dispatcher(sessions, files, rules, engine.retry, gate, settings.priors.peer), engine,
                    settings.node.log_level,
                    warm_analysis=any(a.kind == "analyze" for rule in rules for a in rule.actions))
    if sender is not None:
        worker.push = push_jobs.PushPlanner(sessions, settings.push.max_attempts)
    worker.notifications = notifications.NotificationPlanner(sessions, settings, push_on=sender is not None)
    worker.reviews = ReviewWatcher(sessions, results, VersionStore(settings.node.data_dir / "versions"))
    kept = settings.storage.retention
    if kept.images_days is not None or kept.results_days is not None:
        worker.retention = RetentionSweep(settings, sessions, results)
    if engine.commitment_port is not None:
        tls = settings.node.tls if engine.commitment_tls else None
        worker.commitments = CommitmentListener(settings.node.ae_title, settings.node.dicom_host,
                                                engine.commitment_port,
                                                frozenset(p.ae_title for p in settings.peers), worker.on_commitment,
                                                ssl_context=server_context(tls) if tls is not None else None)
    return worker
