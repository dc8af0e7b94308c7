"""Physician review: from a preliminary result to signed versions, each delivered like the first.

The engine's `ReviewWatcher` reads `analysis.done` events: an automatic analysis opens (or reopens) the
study's review with the regions it found, as version 1 (preliminary unless the route signs
automatically) and announces `review.ready`; a version the review ordered is archived under
`data_dir/versions/<study>/<n>/` and recorded, and `review.version` announced. The API calls
`change`, `sign` and `reanalyse`: a signature (or a re-analysis) becomes a new analyze job whose
params carry the `VersionOrder`, followed by the same deliveries (same destinations and objects) as
the study's last analysis, so a new version goes through the same durable jobs as the first delivery.
Every act is added to the append-only audit (`review_actions`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.config.settings import RetrySettings
from neuropetrix.engine.jobs import job_json, new_job
from neuropetrix.engine.result_store import ANALYSIS_FILE, HL7_FILE, OBJECT_FILES, ResultStore
from neuropetrix.engine.review_result import (
    DECISIONS,
    LESION,
    PHYSIOLOGICAL,
    VersionOrder,
    order_of,
)
from neuropetrix.engine.routes.rules import RESULT_OBJECTS
from neuropetrix.reports.version import ResultVersion, Signer
from neuropetrix.store import eventlog as events
from neuropetrix.store.accounts import User
from neuropetrix.store.db import utcnow
from neuropetrix.store.eventlog import EventKind
from neuropetrix.store.files import check_uid
from neuropetrix.store.jobs_models import Job
from neuropetrix.store.models import Event
from neuropetrix.store.reviews import Review, ReviewAction, ReviewVersion

log = logging.getLogger("neuropetrix.review")
CONSUMER = "review"
DELIVERY_KINDS = ("forward", "hl7", "fhir")
PHYSIOLOGICAL_LABELS = 1000      # physiological regions are numbered from here in a review


class ReviewError(Exception):
    """A review request that cannot be done; `status` is the HTTP answer (404 none, 409 conflict, 400)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Actor:
    """Who acts: a signed-in user, or the node itself (username "")."""

    username: str
    role: str


NODE = Actor("", "")


class VersionStore:
    """Every version's result files, kept: `<root>/<study>/<n>/`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, study_uid: str, version: int) -> Path:
        return self.root / check_uid(study_uid, "StudyInstanceUID") / str(int(version))

    def keep(self, results: Path, study_uid: str, version: int) -> Path:
        """Copy the current results of a study as version `version` (a retried analysis replaces it)."""
        target = self.folder(study_uid, version)
        temp = target.with_name(f".{version}.tmp")
        shutil.rmtree(temp, ignore_errors=True)
        shutil.copytree(results, temp)
        shutil.rmtree(target, ignore_errors=True)
        temp.rename(target)
        return target


def candidates(analysis: dict[str, Any]) -> dict[str, list[dict]]:
    """The regions a review decides on, from analysis.json: lesions, and the physiological regions the
    analysis excluded (`physiological`, when the analysis reports them), each with a review `label`
    (physiological regions from PHYSIOLOGICAL_LABELS on, so they never share one with a lesion)."""
    regions = []
    for i, region in enumerate(analysis.get("physiological") or []):
        own = {"analysis_label": region["label"]} if "label" in region else {}
        regions.append({**region, **own, "label": PHYSIOLOGICAL_LABELS + i})
    return {"lesions": list(analysis.get("lesions") or []), "physiological": regions}


def decision_of(review: Review, label: int, kind: str) -> str:
    return review.decisions.get(str(label), LESION if kind == "lesions" else PHYSIOLOGICAL)


def totals(review: Review) -> dict[str, Any]:
    """The study's measures over what the physician kept (TMTV is the sum of the kept lesions)."""
    kept = [les for les in review.candidates.get("lesions", [])
            if decision_of(review, les["label"], "lesions") == LESION]
    return {"lesion_count": len(kept), "tmtv_ml": sum(les["volume_ml"] for les in kept),
            "tlg_total": sum(les["tlg"] for les in kept),
            "suv_max": max((les["suv_max"] for les in kept), default=None)}


def _audit(s: Session, study_uid: str, who: Actor, action: str, version: int, detail: dict) -> None:
    s.add(ReviewAction(study_uid=study_uid, at=utcnow(), username=who.username, role=who.role, action=action,
                       version=version, detail=detail))


def _iso(t) -> str | None:
    return t.isoformat() + "Z" if t else None


def _review(s: Session, study_uid: str) -> Review:
    review = s.scalars(select(Review).where(Review.study_uid == study_uid)).first()
    if review is None:
        raise ReviewError(f"study {study_uid} has no result to review (not analysed yet?)", 404)
    return review


def review_json(s: Session, study_uid: str) -> dict[str, Any]:
    """GET /api/studies/{uid}/review: status, version, every region with its decision, the totals of
    what is kept, the versions with their delivery states, and the audit."""
    review = _review(s, study_uid)
    regions = {kind: [{**r, "decision": decision_of(review, r["label"], kind)} for r in items]
               for kind, items in review.candidates.items()}
    return {"study_uid": study_uid, "status": review.status, "version": review.version,
            "pending_version": review.pending_version, "impression": review.impression, **regions,
            "candidates_version": review.candidates_version, "totals": totals(review),
            "versions": versions_json(s, study_uid), "audit": audit_json(s, study_uid)}


def versions_json(s: Session, study_uid: str) -> list[dict[str, Any]]:
    rows = s.scalars(select(ReviewVersion).where(ReviewVersion.study_uid == study_uid)
                     .order_by(ReviewVersion.version)).all()
    out = []
    for v in rows:
        jobs = [] if v.analysis_job_id is None else s.scalars(
            select(Job).where(Job.after_id == v.analysis_job_id, Job.kind.in_(DELIVERY_KINDS)).order_by(Job.id)).all()
        out.append({"version": v.version, "status": v.status, "created_at": _iso(v.created_at),
                    "signer": None if not v.signer_username else {
                        "username": v.signer_username, "display_name": v.signer_name,
                        "organisation": v.signer_organisation},
                    "decisions": v.decisions, "impression": v.impression, "sr_uid": v.sr_uid,
                    "seg_uid": v.seg_uid or None, "control_id": v.control_id, "summary": v.summary,
                    "deliveries": [job_json(j) for j in jobs]})
    return out


def audit_json(s: Session, study_uid: str) -> list[dict[str, Any]]:
    rows = s.scalars(select(ReviewAction).where(ReviewAction.study_uid == study_uid).order_by(ReviewAction.id))
    return [{"id": a.id, "at": _iso(a.at), "username": a.username or None, "role": a.role or None,
             "action": a.action, "version": a.version, "detail": a.detail} for a in rows]


def change(s: Session, study_uid: str, who: Actor, decisions: list[dict] | None, impression: str | None) -> None:
    """Record decisions (`[{"label": 2, "decision": "rejected"}]`) and the impression; ReviewError
    names what is wrong."""
    review = _review(s, study_uid)
    if review.pending_version is not None:
        raise ReviewError(f"version {review.pending_version} is being made; wait for it before changing the review")
    kinds = {r["label"]: kind for kind, items in review.candidates.items() for r in items}
    new = dict(review.decisions)
    for item in decisions or []:
        label, decision = item.get("label") if isinstance(item, dict) else None, \
            item.get("decision") if isinstance(item, dict) else None
        if not isinstance(label, int) or label not in kinds:
            raise ReviewError(f"decisions: no region labelled {label!r} in this result (labels: "
                              f"{', '.join(map(str, sorted(kinds))) or 'none'})", 400)
        if decision not in DECISIONS:
            raise ReviewError(f"decisions: label {label}: decision is one of {', '.join(DECISIONS)}", 400)
        if kinds[label] == "physiological" and decision != PHYSIOLOGICAL:
            raise ReviewError(f"decisions: label {label} is physiological uptake the analysis excluded; it has "
                              "no lesion segmentation to report, so it stays physiological", 400)
        new[str(label)] = decision
    changed = {k: v for k, v in new.items() if review.decisions.get(k) != v}
    detail: dict[str, Any] = {}
    if changed:
        detail["decisions"] = changed
    if impression is not None and impression != review.impression:
        detail["impression"] = impression
    if not detail:
        return
    review.decisions = new
    review.impression = impression if impression is not None else review.impression
    review.updated_at = utcnow()
    _audit(s, study_uid, who, "reviewed", review.version, detail)
    events.record(s, EventKind.REVIEW_CHANGED, study_uid, {"version": review.version, "by": who.username,
                                                        "totals": totals(review)})


def _job(kind: str, like: Job, event_id: int, destination: str, objects: list, params: dict,
         retry: RetrySettings) -> Job:
    return new_job(kind, like.study_uid, like.route, like.action_index, destination, retry.max_attempts,
                   source_event_id=event_id, objects=objects, params=params)


def _order_jobs(s: Session, study_uid: str, event_id: int, order: VersionOrder, retry: RetrySettings) -> Job:
    """The analyze job that writes `order`'s version, and after it the deliveries of the study's last
    analysis (result objects only: the images are already there); returns the analyze job."""
    last = s.scalars(select(Job).where(Job.study_uid == study_uid, Job.kind == "analyze")
                     .order_by(Job.id.desc())).first()
    if last is None:
        raise ReviewError(f"study {study_uid} has no analysis job to follow", 409)
    if not order.analysis:           # a signature keeps the settings the current version was made with
        order = dataclasses.replace(order, analysis=dict((last.params.get("review") or {}).get("analysis") or {}))
    analyze = _job("analyze", last, event_id, last.destination, [],
                   {**{k: v for k, v in last.params.items() if k != "review"}, "review": order.to_json()}, retry)
    s.add(analyze)
    s.flush()
    for old in s.scalars(select(Job).where(Job.after_id == last.id, Job.kind.in_(DELIVERY_KINDS)).order_by(Job.id)):
        objects = [o for o in old.objects if o in RESULT_OBJECTS] if old.kind == "forward" else list(old.objects)
        if old.kind == "forward" and not objects:
            continue
        job = _job(old.kind, old, event_id, old.destination, objects, dict(old.params), retry)
        job.after_id = analyze.id
        s.add(job)
    s.flush()
    return analyze


def _start(s: Session, review: Review, who: Actor, kind: str, order: VersionOrder, retry: RetrySettings,
           payload: dict) -> Job:
    """Claim the next version for `order` (at most one in the making: a second request loses the
    conditional UPDATE) and create its jobs."""
    n = order.version.version
    claimed = s.execute(update(Review).where(Review.id == review.id, Review.version == review.version,
                                             Review.pending_version.is_(None))
                        .values(pending_version=n, updated_at=utcnow())).rowcount
    if not claimed:
        raise ReviewError("another version of this study is being made; wait for it")
    event = Event(kind=kind, study_uid=review.study_uid, created_at=utcnow(), payload={
        **payload, "version": n, "status": order.version.status, "by": who.username})
    s.add(event)
    s.flush()
    analyze = _order_jobs(s, review.study_uid, event.id, order, retry)
    s.execute(update(Review).where(Review.id == review.id).values(pending_job_id=analyze.id))
    _audit(s, review.study_uid, who, "signed" if kind == EventKind.REVIEW_SIGNED else "reanalysis", n,
           {**payload, "status": order.version.status, "job": analyze.id})
    return analyze


def _signed_versions(s: Session, study_uid: str) -> list[ReviewVersion]:
    return list(s.scalars(select(ReviewVersion).where(ReviewVersion.study_uid == study_uid,
                                                      ReviewVersion.signer_username != "")
                          .order_by(ReviewVersion.version)))


def _current_sr(s: Session, review: Review) -> str | None:
    current = s.scalars(select(ReviewVersion).where(ReviewVersion.study_uid == review.study_uid,
                                                    ReviewVersion.version == review.version)).first()
    return current.sr_uid if current is not None and current.sr_uid else None


def sign(s: Session, study_uid: str, who: Actor, retry: RetrySettings) -> dict[str, Any]:
    """Sign the review as it stands: the next version, final (or amended after an earlier signature),
    is made and delivered. Signing again without a change makes nothing (ReviewError 409)."""
    review = _review(s, study_uid)
    if review.pending_version is not None:
        raise ReviewError(f"version {review.pending_version} is being made; it is signed once")
    signed = _signed_versions(s, study_uid)
    if signed and signed[-1].version == review.version and signed[-1].decisions == review.decisions \
            and signed[-1].impression == review.impression:
        raise ReviewError(f"version {review.version} is already signed ({review.status}) and nothing changed "
                          "since: change a decision or the impression to correct it")
    user = s.scalars(select(User).where(User.username == who.username)).first()
    if user is None or not (user.display_name and user.organisation):
        raise ReviewError("the signer needs a display name and an organisation for the signed report: set them "
                          "with `neuropetrix users add … --display-name … --organisation …` or PATCH "
                          "/api/users/{username}", 400)
    status = "amended" if signed else "final"
    version = ResultVersion(status=status, version=review.version + 1,
                            signer=Signer(user.username, user.display_name, user.organisation),
                            predecessor_sr_uid=_current_sr(s, review), impression=review.impression or None,
                            signed_at=utcnow().replace(microsecond=0).isoformat() + "Z")
    lesions = {les["label"] for les in review.candidates.get("lesions", [])}   # physiological ones stay out anyway
    dropped = {int(k): d for k, d in review.decisions.items() if d != LESION and int(k) in lesions}
    analyze = _start(s, review, who, EventKind.REVIEW_SIGNED, VersionOrder(version, dropped), retry,
                     {"decisions": dict(review.decisions), "impression": review.impression})
    log.info("study %s: version %d (%s) signed by %s; job %d makes it", study_uid, version.version, status,
             who.username, analyze.id)
    return {"version": version.version, "status": status, "job": analyze.id, "state": "pending"}


def reanalyse(s: Session, study_uid: str, who: Actor, settings: dict[str, Any], retry: RetrySettings) -> dict:
    """Run the analysis again with changed settings (REANALYSIS_KEYS, checked by the caller): a new
    preliminary version whose regions replace the review's, decisions cleared."""
    review = _review(s, study_uid)
    if review.pending_version is not None:
        raise ReviewError(f"version {review.pending_version} is being made; wait for it")
    # a new analysis (new settings, new object UIDs and SR series) is a new report, not a revision
    # of the old SR document: no predecessor
    order = VersionOrder(ResultVersion(status="preliminary", version=review.version + 1), {}, dict(settings),
                         fresh=True)
    analyze = _start(s, review, who, EventKind.REVIEW_REANALYSIS, order, retry, {"analysis": dict(settings)})
    return {"version": order.version.version, "status": "preliminary", "job": analyze.id, "state": "pending"}


def _file_uids(folder: Path) -> dict[str, str]:
    """SR and SEG SOP Instance UIDs and the ORU's MSH-10 of a version's files."""
    out = {"sr_uid": "", "seg_uid": "", "control_id": ""}
    for key, name in (("sr_uid", OBJECT_FILES["sr"]), ("seg_uid", OBJECT_FILES["seg"])):
        if (folder / name).is_file():
            out[key] = str(pydicom.dcmread(folder / name, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
    if (folder / HL7_FILE).is_file():
        msh = (folder / HL7_FILE).read_bytes().split(b"\r", 1)[0].decode("latin-1").split("|")
        out["control_id"] = msh[9] if len(msh) > 9 else ""
    return out


class ReviewWatcher:
    """Turns `analysis.done` events into review state, exactly once (cursor "review")."""

    def __init__(self, sessions: sessionmaker[Session], results: ResultStore, versions: VersionStore) -> None:
        self.sessions = sessions
        self.results = results
        self.versions = versions

    def run_once(self) -> int:
        handled = 0
        with self.sessions.begin() as s:
            for event in events.take_pending(s, CONSUMER, (EventKind.ANALYSIS_DONE,)):
                self._handle(s, event)
                events.advance(s, CONSUMER, event.id)
                handled += 1
        return handled

    def _handle(self, s: Session, event: Event) -> None:
        job = s.get(Job, (event.payload or {}).get("job"))
        study_uid = event.study_uid or ""
        folder = self.results.folder(study_uid)
        if job is None or not (folder / ANALYSIS_FILE).is_file():
            log.warning("study %s: analysis.done event %d without its job or results; no review", study_uid, event.id)
            return
        if self.results.made_by(study_uid) is None or self.results.made_by(study_uid)[0] != job.id:
            log.info("study %s: results of job %d were replaced since; not recorded as a version", study_uid, job.id)
            return
        order = order_of(job.params)
        n, status = order.version.version, order.version.status
        analysis = json.loads((folder / ANALYSIS_FILE).read_text(encoding="utf-8"))
        kept = self.versions.keep(folder, study_uid, n)
        signer = order.version.signer
        row = s.scalars(select(ReviewVersion).where(ReviewVersion.study_uid == study_uid,
                                                    ReviewVersion.version == n)).first()
        if row is None:
            row = ReviewVersion(study_uid=study_uid, version=n, created_at=utcnow())
            s.add(row)
        row.status, row.analysis_job_id = status, job.id
        row.signer_username = signer.username if signer else ""
        row.signer_name = signer.display_name if signer else ""
        row.signer_organisation = signer.organisation if signer else ""
        row.decisions = {str(k): d for k, d in order.decisions.items()}
        row.impression = order.version.impression or ""
        row.summary = {k: analysis.get(k) for k in ("lesion_count", "tmtv_ml", "tlg_total", "suv_max")}
        for key, value in _file_uids(kept).items():
            setattr(row, key, value)
        review = s.scalars(select(Review).where(Review.study_uid == study_uid)).first()
        if review is None:
            review = Review(study_uid=study_uid, route=job.route, candidates_version=n)
            s.add(review)
        if "review" not in job.params or order.fresh:          # new findings: the review starts over
            review.candidates, review.candidates_version = candidates(analysis), n
            review.decisions, review.impression = {}, ""
        review.status, review.version = status, n
        review.pending_version = review.pending_job_id = None
        review.updated_at = utcnow()
        s.flush()
        _audit(s, study_uid, NODE, "version made", n, {"status": status, "job": job.id, "sr_uid": row.sr_uid})
        payload = {"version": n, "status": status, "job": job.id, "lesions": analysis.get("lesion_count"),
                   "recipients": self._recipients(s, study_uid), "signer": row.signer_name or None}
        events.record(s, EventKind.REVIEW_READY if status == "preliminary" else EventKind.REVIEW_VERSION, study_uid,
                      payload)
        log.info("study %s: version %d (%s) made by job %d", study_uid, n, status, job.id)

    @staticmethod
    def _recipients(s: Session, study_uid: str) -> list[str]:
        """The roles the study's route notifies (its `notify` action), told when a version is signed."""
        notify = s.scalars(select(Job).where(Job.study_uid == study_uid, Job.kind == "notify")
                           .order_by(Job.id.desc())).first()
        return list(notify.params.get("recipients", [])) if notify is not None else ["physician"]
