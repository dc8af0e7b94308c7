"""The department dashboard's numbers (`GET /api/stats`), from the index, the event log and the queue.

Turnaround of a study, in seconds: last image received → first `analysis.done` → first `review.signed`
→ first `delivery.done` after signing, each span with its median and 90th percentile (linear
interpolation between ranks, as numpy's default) over the studies whose last image arrived in the
window. Per destination, the way Mirth shows channels: jobs received (made), queued (waiting or
running), sent (done) and failed (parked); queue depth is the jobs not yet done, per kind.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from neuropetrix.store.eventlog import EventKind
from neuropetrix.store.jobs_models import DONE, FAILED, Job
from neuropetrix.store.models import Event, Study

SPANS = ("image_to_analysis", "analysis_to_signed", "signed_to_delivered", "image_to_delivered")


def summary(values: list[float]) -> dict:
    """count, median and 90th percentile (linear between ranks); None where there is nothing."""
    if not values:
        return {"count": 0, "median": None, "p90": None}
    ordered = sorted(values)
    p90 = ordered[0] if len(ordered) == 1 else statistics.quantiles(ordered, n=10, method="inclusive")[8]
    return {"count": len(ordered), "median": round(statistics.median(ordered), 3), "p90": round(p90, 3)}


def _firsts(s: Session, uids: list[str]) -> dict[tuple[str, str], list[datetime]]:
    """(study, kind) → the times of its analysis/signing/delivery events, in order."""
    kinds = [str(EventKind.ANALYSIS_DONE), str(EventKind.REVIEW_SIGNED), str(EventKind.DELIVERY_DONE)]
    times: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for uid, kind, at in s.execute(select(Event.study_uid, Event.kind, Event.created_at)
                                   .where(Event.study_uid.in_(uids), Event.kind.in_(kinds)).order_by(Event.id)):
        times[(uid, kind)].append(at)
    return times


def turnaround(s: Session, since: datetime) -> dict:
    studies = s.execute(select(Study.study_uid, Study.last_received_at).where(Study.last_received_at >= since)).all()
    times = _firsts(s, [uid for uid, _ in studies])
    spans: dict[str, list[float]] = {name: [] for name in SPANS}
    for uid, last_image in studies:
        analysed = next(iter(times[(uid, EventKind.ANALYSIS_DONE)]), None)
        signed = next(iter(times[(uid, EventKind.REVIEW_SIGNED)]), None)
        delivered = next((t for t in times[(uid, EventKind.DELIVERY_DONE)] if signed and t >= signed), None)
        for name, start, end in (("image_to_analysis", last_image, analysed), ("analysis_to_signed", analysed, signed),
                                 ("signed_to_delivered", signed, delivered), ("image_to_delivered", last_image,
                                                                               delivered)):
            if start is not None and end is not None and end >= start:
                spans[name].append((end - start).total_seconds())
    return {name: summary(values) for name, values in spans.items()}


def department_stats(s: Session, days: int, now: datetime) -> dict:
    since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    per_day = {(since + timedelta(days=i)).date().isoformat(): 0 for i in range(days)}
    for (first,) in s.execute(select(Study.first_received_at).where(Study.first_received_at >= since)):
        per_day[first.date().isoformat()] = per_day.get(first.date().isoformat(), 0) + 1
    destinations: dict[str, dict[str, int]] = {}
    depth: dict[str, int] = defaultdict(int)
    for destination, kind, state, count in s.execute(
            select(Job.destination, Job.kind, Job.state, func.count()).group_by(Job.destination, Job.kind, Job.state)):
        d = destinations.setdefault(destination, {"received": 0, "queued": 0, "sent": 0, "failed": 0})
        d["received"] += count
        if state not in (DONE, FAILED):          # queued, running, waiting for a commitment
            d["queued"] += count
            depth[kind] += count
        elif state == DONE:
            d["sent"] += count
        else:
            d["failed"] += count
    analyses = [(f - c).total_seconds() for c, f in s.execute(
        select(Job.created_at, Job.finished_at).where(Job.kind == "analyze", Job.state == DONE,
                                                      Job.finished_at >= since))]
    return {"since": since.isoformat() + "Z", "days": days,
            "studies_per_day": [{"date": d, "studies": n} for d, n in sorted(per_day.items())],
            "turnaround_seconds": turnaround(s, since), "destinations": dict(sorted(destinations.items())),
            "queue_depth": dict(sorted(depth.items())), "analysis_seconds": summary(analyses)}
