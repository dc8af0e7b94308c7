"""Operations endpoints outside /api: /healthz (the process answers), /readyz (database and storage
reachable, DICOM SCP listening) and /metrics (Prometheus text)."""
from __future__ import annotations

import os
from datetime import datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from neuropetrix.api.context import CTX
from neuropetrix.api.events import FeedItem
from neuropetrix.metrics import ANALYSES, ANALYSIS_SECONDS, DELIVERIES_FAILED, DICOM_ASSOCIATIONS, JOBS
from neuropetrix.store.eventlog import EventKind
from neuropetrix.store.jobs_models import DONE, FAILED, QUEUED, RUNNING, Job


class EventMetrics:
    """Metrics that follow from events, whichever process wrote them (the worker may run elsewhere):
    analyses by result, their duration (analysis.started → done/failed of the same job), failed
    deliveries by destination type."""

    def __init__(self) -> None:
        self._started: dict[int, datetime] = {}

    def __call__(self, items: list[FeedItem]) -> None:
        for item in items:
            job = item.payload.get("job")
            if item.kind == EventKind.ANALYSIS_STARTED and isinstance(job, int):
                self._started[job] = item.created_at
            elif item.kind in (EventKind.ANALYSIS_DONE, EventKind.ANALYSIS_FAILED):
                ANALYSES.labels(item.kind.split(".")[1]).inc()
                started = self._started.pop(job, None) if isinstance(job, int) else None
                if started is not None:
                    ANALYSIS_SECONDS.observe((item.created_at - started).total_seconds())
            elif item.kind == EventKind.DELIVERY_FAILED:
                DELIVERIES_FAILED.labels(str(item.payload.get("destination", "unknown")).split(":")[0]).inc()


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


def _database_ok(s: Session) -> bool:
    return s.execute(text("SELECT 1")).scalar() == 1


async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    checks: dict[str, str] = {}
    try:
        await ctx.db(_database_ok)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}: {exc}"[:200]
    storage = ctx.readiness.storage_dir
    checks["storage"] = "ok" if storage.is_dir() and os.access(storage, os.W_OK | os.X_OK) \
        else f"{storage} missing or not writable"
    checks["dicom"] = "ok" if ctx.readiness.dicom_listening() else "DICOM SCP not listening"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


def _job_counts(s: Session) -> dict[str, int]:
    return dict(s.execute(select(Job.state, func.count(Job.id)).group_by(Job.state)).all())


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    counts = await ctx.db(_job_counts)
    for state in {QUEUED, RUNNING, DONE, FAILED} | set(counts):
        JOBS.labels(state).set(counts.get(state, 0))
    DICOM_ASSOCIATIONS.set(ctx.readiness.dicom_associations())
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
