"""Push notifications as engine jobs: events → one durable job of kind "push" per device → FCM.

Which events notify whom (docs/api.md): a finished analysis goes to the roles with push.results, an
analysis parked as failed to those with push.failures (high priority); a route's `notify` action
(the `notification` event) is engine/notifications.py's, which makes its push jobs with
`device_job`. The jobs are made and the engine cursor "push" moved in one transaction, so an event
turns into messages once, crash or not. They run on the engine's delivery lanes like every other
delivery (destination "fcm", lease renewed, handed back on stop): a 5xx or an unreachable FCM is
retried with the queue's back-off up to push.max_attempts, then parked for an operator's retry; a
token FCM calls unregistered is dropped and its job done. Messages carry no patient data: it would
cross Google.
"""
from __future__ import annotations

import logging

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.api.permissions import PUSH_FAILURES, PUSH_RESULTS, RESULTS_SIGN, roles_with
from neuropetrix.engine.jobs import Claimed, JobFailure, new_job
from neuropetrix.metrics import PUSH_MESSAGES
from neuropetrix.node.scu.push import REJECTED, RETRY, SENT, FcmSender, PushMessageSpec
from neuropetrix.store.accounts import ROLES, Device, User
from neuropetrix.store.eventlog import EventKind, advance, take_pending
from neuropetrix.store.jobs_models import Job
from neuropetrix.store.models import Event

log = logging.getLogger("neuropetrix.push")

KIND, DESTINATION, CONSUMER = "push", "fcm", "push"
KINDS = (EventKind.ANALYSIS_DONE, EventKind.ANALYSIS_FAILED, EventKind.REVIEW_READY, EventKind.REVIEW_VERSION)


def plan(e: Event) -> tuple[list[str], str, str, str] | None:
    """(roles, priority, title, body) of the notification an event calls for, or None."""
    p = e.payload or {}
    if e.kind == EventKind.ANALYSIS_DONE and "status" in p:
        return None                  # a versioned result: announced by its review.ready / review.version
    if e.kind == EventKind.REVIEW_READY:
        lesions = p.get("lesions")
        return ([r for r in roles_with(PUSH_RESULTS) if r in roles_with(RESULTS_SIGN)], "normal",
                "PET/CT result to review", f"Preliminary result ready for review: {lesions} lesion(s)")
    if e.kind == EventKind.REVIEW_VERSION:
        roles = [r for r in p.get("recipients", []) if r in ROLES]
        return roles, "normal", f"PET/CT result {p.get('status', '')}", \
            f"Version {p.get('version')} is {p.get('status')}" + (" (signed)" if p.get("signer") else "")
    if e.kind == EventKind.ANALYSIS_DONE:
        lesions = p.get("lesions")
        body = "Results are ready" if lesions is None else f"Results are ready: {lesions} lesion(s)"
        return roles_with(PUSH_RESULTS), "normal", "PET/CT analysis done", body
    if e.kind == EventKind.ANALYSIS_FAILED and p.get("parked"):
        return roles_with(PUSH_FAILURES), "high", "PET/CT analysis failed", "The analysis needs attention"
    return None


def device_job(e: Event, route: str, device_id: int, token: str, user_id: int, message: tuple[str, str, str],
               max_attempts: int, **extra: object) -> Job:
    """The push job telling one device of `e`: (priority, title, body); one per (event, route, device),
    the queue's unique (source_event_id, route, action_index)."""
    priority, title, body = message
    return new_job(KIND, e.study_uid or "", route, device_id, DESTINATION, max_attempts, source_event_id=e.id,
                   params={"token": token, "user_id": user_id, "priority": priority, "title": title, "body": body,
                           "data": {"kind": e.kind, "event_id": str(e.id), "study_uid": e.study_uid or ""},
                           **extra})


def enqueue(s: Session, max_attempts: int) -> int:
    """Turn new events into push jobs; returns how many jobs were made."""
    events = take_pending(s, CONSUMER, KINDS, 200, from_now=True)   # first start: none about the past
    made = 0
    for e in events:
        what = plan(e)
        if what is None or not what[0]:
            continue
        roles, priority, title, body = what
        devices = s.execute(select(Device.id, Device.token, Device.user_id).join(User)
                            .where(User.role.in_(roles), User.disabled.is_(False))).all()
        for device_id, token, user_id in devices:
            s.add(device_job(e, CONSUMER, device_id, token, user_id, (priority, title, body), max_attempts))
            made += 1
    if events:
        advance(s, CONSUMER, events[-1].id)
    return made


class PushPlanner:
    """The engine's consumer of notifying events (run by the worker's routing thread)."""

    def __init__(self, sessions: sessionmaker[Session], max_attempts: int) -> None:
        self.sessions = sessions
        self.max_attempts = max_attempts

    def run_once(self) -> int:
        with self.sessions.begin() as s:
            return enqueue(s, self.max_attempts)


def send(job: Claimed, sender: FcmSender, sessions: sessionmaker[Session]) -> dict:
    """Run one push job: its result, or JobFailure (permanent when FCM rejects the message)."""
    p = job.params
    outcome = sender.send(PushMessageSpec(p["token"], p["title"], p["body"], p["data"], p["priority"]))
    PUSH_MESSAGES.labels(outcome.result).inc()
    if outcome.result == SENT:
        return {"outcome": SENT, "message": outcome.detail}
    if outcome.result in (RETRY, REJECTED):
        log.warning("push job %d: %s (%s)", job.id, outcome.result, outcome.detail)
        raise JobFailure(outcome.detail, permanent=outcome.result == REJECTED)
    log.info("push job %d: device token unregistered; device dropped", job.id)    # nothing to retry
    with sessions.begin() as s:
        s.execute(delete(Device).where(Device.token == p["token"]))
    return {"outcome": outcome.result, "device": "dropped"}
