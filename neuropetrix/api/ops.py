"""Operations endpoints outside /api: /healthz (the process answers), /readyz (the database takes
writes, the storage folder is writable with room left, the DICOM SCP listens) and /metrics
(Prometheus text)."""
from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import false, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from neuropetrix.api.database import DATABASE
from neuropetrix.api.event_feed import FeedItem
from neuropetrix.api.node_config import SETTINGS
from neuropetrix.metrics import (
    ANALYSES,
    ANALYSIS_SECONDS,
    DELIVERIES_FAILED,
    DESTINATION_FAILURES,
    DICOM_ASSOCIATIONS,
    JOBS,
    STORAGE_CAPACITY,
    STORAGE_FREE,
)
from neuropetrix.store.eventlog import EventKind
from neuropetrix.store.jobs_models import DONE, FAILED, QUEUED, RUNNING, Destination, EngineCursor, Job


@dataclass
class Readiness:
    """What /readyz checks besides the database: supplied by the node that serves the API."""

    storage_dir: Path
    dicom_listening: Callable[[], bool] = lambda: False
    dicom_associations: Callable[[], int] = lambda: 0


READINESS = web.AppKey("readiness", Readiness)


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
    """The process answers."""
    return web.json_response({"status": "alive"})


READYZ_DB_SECONDS = 5.0


def _database_check(s: Session) -> str:
    """'ok' when the database answers and would take a write: an UPDATE that matches no row needs
    the write lock (SQLite) or a writable transaction (PostgreSQL) and changes nothing."""
    s.execute(text("SELECT 1"))
    try:
        s.execute(update(EngineCursor).where(false()).values(event_id=EngineCursor.event_id))
    except DBAPIError as exc:
        reason = str(exc.orig)          # SQLite: "… readonly database"; PostgreSQL: "… read-only transaction"
        if "readonly" in reason or "read-only" in reason:
            return f"read-only: {reason}"[:200]
        raise
    return "ok"


def _storage_check(storage: Path, min_free_mb: int) -> str:
    if not storage.is_dir() or not os.access(storage, os.W_OK | os.X_OK):
        return f"{storage} missing or not writable"
    free_mb = shutil.disk_usage(storage).free // 2**20
    if free_mb < min_free_mb:
        return f"disk full: {free_mb} MiB free in {storage}, below api.readyz_min_free_mb ({min_free_mb})"
    return "ok"


async def readyz(request: web.Request) -> web.Response:
    """Whether this node can take studies now; 503 with the failing checks otherwise."""
    readiness = request.app[READINESS]
    checks: dict[str, str] = {}
    try:
        checks["database"] = await asyncio.wait_for(request.app[DATABASE](_database_check), READYZ_DB_SECONDS)
    except TimeoutError:
        checks["database"] = f"no answer within {READYZ_DB_SECONDS:g} s"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}: {exc}"[:200]
    checks["storage"] = _storage_check(readiness.storage_dir, request.app[SETTINGS].api.readyz_min_free_mb)
    checks["dicom"] = "ok" if readiness.dicom_listening() else "DICOM SCP not listening"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


def _queue_state(s: Session) -> tuple[dict[str, int], dict[str, int]]:
    """Jobs by state, and each destination's consecutive failures."""
    return (dict(s.execute(select(Job.state, func.count(Job.id)).group_by(Job.state)).all()),
            dict(s.execute(select(Destination.name, Destination.failures)).all()))


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics of the node."""
    counts, failures = await request.app[DATABASE](_queue_state)
    for state in {QUEUED, RUNNING, DONE, FAILED} | set(counts):
        JOBS.labels(state).set(counts.get(state, 0))
    for name, n in failures.items():
        DESTINATION_FAILURES.labels(name).set(n)
    readiness = request.app[READINESS]
    DICOM_ASSOCIATIONS.set(readiness.dicom_associations())
    try:
        disk = shutil.disk_usage(readiness.storage_dir)
        STORAGE_FREE.set(disk.free)
        STORAGE_CAPACITY.set(disk.total)
    except OSError:        # storage gone: /readyz says so; the gauges keep their last value
        pass
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
