"""From `study.complete` events to jobs: the engine alone decides what happens to a study.

Each completion event is matched against the rules once (the cursor moves in the transaction that
creates the jobs). Every action of a rule that fires becomes a job; deliveries of analysis results wait
for the rule's analysis job.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.config.settings import RetrySettings
from neuropetrix.engine import priors
from neuropetrix.engine.jobs import new_job
from neuropetrix.engine.routes.facts import facts_from_store
from neuropetrix.engine.routes.rules import Rule, evaluate
from neuropetrix.store import eventlog
from neuropetrix.store.db import utcnow
from neuropetrix.store.eventlog import EventKind
from neuropetrix.store.files import FileStore
from neuropetrix.store.jobs_models import Job

log = logging.getLogger("neuropetrix.engine")
CONSUMER = "routes"
# (session, study UID) → may this completed study be routed now? (engine/orders.py: held until reconciled)
Gate = Callable[[Session, str], bool]


def create_jobs(s: Session, rule: Rule, study_uid: str, event_id: int | None, retry: RetrySettings,
                priors_peer: str | None = None) -> list[Job]:
    """The jobs for one rule that fired; result deliveries get `after_id` = the analysis job, and the
    analysis waits for the fetch of its priors from `priors_peer` when one is configured."""
    now = utcnow()
    jobs: list[Job] = []
    analysis: Job | None = None
    fetch: Job | None = None
    if priors_peer is not None and any(action.kind == "analyze" for action in rule.actions):
        fetch = new_job(priors.KIND, study_uid, rule.name, -1, f"dicom:{priors_peer}", retry.max_attempts,
                        source_event_id=event_id, params={"peer": priors_peer}, now=now)
        s.add(fetch)
    for index, action in enumerate(rule.actions):
        job = new_job(action.kind, study_uid, rule.name, index, action.destination, retry.max_attempts,
                      source_event_id=event_id, objects=action.objects, now=now,
                      params={**action.params, "route_transforms": list(rule.transforms)})
        s.add(job)
        jobs.append(job)
        if action.kind == "analyze":
            analysis = job
    s.flush()
    for action, job in zip(rule.actions, jobs):
        if analysis is not None and (action.needs_results or action.kind == "notify"):   # tell after analysing
            job.after_id = analysis.id
        if fetch is not None and action.kind == "analyze":
            job.after_id = fetch.id
    return ([fetch] if fetch is not None else []) + jobs


class Dispatcher:
    def __init__(self, sessions: sessionmaker[Session], files: FileStore, rules: Sequence[Rule],
                 retry: RetrySettings, gate: Gate | None = None, priors_peer: str | None = None) -> None:
        self.sessions = sessions
        self.files = files
        self.rules = list(rules)
        self.retry = retry
        self.gate = gate
        self.priors_peer = priors_peer

    def run_once(self) -> int:
        """Handle pending completion events; returns how many jobs were created."""
        created = 0
        with self.sessions.begin() as s:
            pending = eventlog.take_pending(s, CONSUMER, (EventKind.STUDY_COMPLETE,))
            for event in pending:
                if priors.retrieved_as_prior(s, event.study_uid or ""):
                    log.info("study %s complete: fetched as a prior, not routed", event.study_uid)
                elif self.gate is None or self.gate(s, event.study_uid or ""):
                    created += self._route(s, event.id, event.study_uid or "")
                eventlog.advance(s, CONSUMER, event.id)
        return created

    def _route(self, s: Session, event_id: int, study_uid: str) -> int:
        facts = facts_from_store(s, self.files, study_uid)
        created = 0
        for rule in self.rules:
            verdict = evaluate(rule, facts)
            if not verdict.fired:
                log.debug("study %s: rule %s does not fire: %s", study_uid, rule.name, "; ".join(verdict.reasons))
                continue
            jobs = create_jobs(s, rule, study_uid, event_id, self.retry, self.priors_peer)
            created += len(jobs)
            # the reasons quote header values, which may identify the patient: DEBUG only
            log.debug("study %s: rule %s fires: %s", study_uid, rule.name, "; ".join(verdict.reasons))
            log.info("study %s: rule %s fires → jobs %s", study_uid, rule.name,
                     ", ".join(f"{j.id} {j.kind}→{j.destination}" for j in jobs))
        if not created:
            log.info("study %s complete: no rule fires", study_uid)
        return created
