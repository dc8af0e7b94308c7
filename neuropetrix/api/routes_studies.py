"""/api/studies: the study list (paginated, filterable), one study with its series, analysis and
delivery states (jobs, push included), and its result files (MIP, analysis.json, SEG, SR, PDF) from
data_dir/results/<uid>/."""
from __future__ import annotations

import json
import re
import time

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from neuropetrix.api.auth import requires
from neuropetrix.api.context import CTX
from neuropetrix.api.params import bad_request, page, paged
from neuropetrix.api.permissions import (DELIVERIES_READ, RESULTS_DOWNLOAD, RESULTS_READ, STUDIES_READ,
                                         event_permission)
from neuropetrix.engine.jobs import job_json
from neuropetrix.store.jobs_models import Job
from neuropetrix.store.models import Event, Instance, Series, Study
from neuropetrix.store.queries import StudyFilter, count_studies, list_studies

routes = web.RouteTableDef()

PAGE_TTL = 1.0       # seconds a study-list page is reused while no event arrives
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE = re.compile(r"^\d{8}$")
# name in the URL → (file in results/<uid>/, content type, permission)
RESULT_FILES = {
    "mip.png": ("mip.png", "image/png", RESULTS_READ),
    "analysis.json": ("analysis.json", "application/json", RESULTS_READ),
    "seg.dcm": ("seg.dcm", "application/dicom", RESULTS_DOWNLOAD),
    "sr.dcm": ("sr.dcm", "application/dicom", RESULTS_DOWNLOAD),
    "report.pdf": ("report.pdf", "application/pdf", RESULTS_DOWNLOAD),
}


def _uid(request: web.Request) -> str:
    uid = request.match_info["study_uid"]
    if len(uid) > 64 or not _UID.match(uid):
        raise bad_request("study_uid: not a DICOM UID")
    return uid


def _filter(request: web.Request) -> StudyFilter:
    q = request.query
    for name in ("date_from", "date_to"):
        if q.get(name) and not _DATE.match(q[name]):
            raise bad_request(f"{name}: a date as YYYYMMDD")
    if q.get("state") not in (None, "receiving", "complete"):
        raise bad_request("state: receiving or complete")
    return StudyFilter(state=q.get("state"), modality=q.get("modality"), patient_id=q.get("patient_id"),
                       accession_number=q.get("accession_number"), date_from=q.get("date_from"),
                       date_to=q.get("date_to"), text=q.get("q"))


def _iso(t) -> str | None:
    return t.isoformat() + "Z" if t else None


@routes.get("/api/studies")
@requires(STUDIES_READ)
async def studies(request: web.Request) -> web.Response:
    """The study list; pages are shared by every client asking the same question until the event log
    moves or a second passes (instance counts may lag by that much), since every dashboard asks it."""
    limit, offset = page(request)
    where = _filter(request)
    ctx = request.app[CTX]
    key = (limit, offset, where)
    cached = ctx.study_pages.get(key)
    if cached is not None and cached[0] == ctx.feed.last_id and time.monotonic() - cached[1] < PAGE_TTL:
        return web.Response(body=cached[2], content_type="application/json")

    def query(s: Session) -> bytes:
        rows = list_studies(s, limit, offset, where)
        return json.dumps(paged([r.to_json() for r in rows], count_studies(s, where), limit, offset),
                          ensure_ascii=False).encode()

    position, started = ctx.feed.last_id, time.monotonic()
    body = await ctx.db(query)
    if len(ctx.study_pages) > 256:
        ctx.study_pages.clear()
    ctx.study_pages[key] = (position, started, body)
    return web.Response(body=body, content_type="application/json")


def _study_detail(s: Session, uid: str, permissions: frozenset[str]) -> dict | None:
    study = s.scalars(select(Study).where(Study.study_uid == uid)).first()
    if study is None:
        return None
    series = s.execute(select(Series, func.count(Instance.id)).outerjoin(Instance)
                       .where(Series.study_pk == study.id).group_by(Series.id)
                       .order_by(Series.series_number, Series.id)).all()
    events = s.scalars(select(Event).where(Event.study_uid == uid).order_by(Event.id)).all()
    out = {
        "study_uid": uid, "patient_id": study.patient.patient_id, "patient_name": study.patient.name,
        "accession_number": study.accession_number, "study_date": study.study_date,
        "description": study.description, "state": study.state,
        "first_received_at": _iso(study.first_received_at), "last_received_at": _iso(study.last_received_at),
        "completed_at": _iso(study.completed_at),
        "series": [{"series_uid": se.series_uid, "modality": se.modality, "series_number": se.series_number,
                    "description": se.description, "calling_ae": se.calling_ae, "instances": n}
                   for se, n in series],
        "events": [{"id": e.id, "kind": e.kind, "created_at": _iso(e.created_at), "payload": e.payload}
                   for e in events if event_permission(e.kind) in permissions],
    }
    if DELIVERIES_READ in permissions:
        jobs = s.scalars(select(Job).where(Job.study_uid == uid).order_by(Job.id)).all()
        out["deliveries"] = [job_json(j) for j in jobs]
    return out


@routes.get("/api/studies/{study_uid}")
@requires(STUDIES_READ)
async def study(request: web.Request) -> web.Response:
    uid = _uid(request)
    ctx = request.app[CTX]
    who = request["principal"]
    detail = await ctx.db(_study_detail, uid, who.permissions)
    if detail is None:
        raise web.HTTPNotFound(text=f"no study {uid}")
    if RESULTS_READ in who.permissions:
        folder = ctx.results_dir / uid
        analysis = folder / "analysis.json"
        detail["analysis"] = json.loads(analysis.read_text(encoding="utf-8")) if analysis.is_file() else None
        detail["files"] = {name: f"/api/studies/{uid}/{name}" for name, (fname, _, perm) in RESULT_FILES.items()
                           if perm in who.permissions and (folder / fname).is_file()}
    return web.json_response(detail)


def _send_result(request: web.Request) -> web.FileResponse:
    fname, content_type, _ = RESULT_FILES[request.match_info["name"]]
    path = request.app[CTX].results_dir / _uid(request) / fname
    if not path.is_file():
        raise web.HTTPNotFound(text=f"no {fname} for this study (not analysed yet?)")
    return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


@routes.get(r"/api/studies/{study_uid}/{name:mip\.png|analysis\.json}")
@requires(RESULTS_READ)
async def result_view(request: web.Request) -> web.StreamResponse:
    return _send_result(request)


@routes.get(r"/api/studies/{study_uid}/{name:seg\.dcm|sr\.dcm|report\.pdf}")
@requires(RESULTS_DOWNLOAD)
async def result_download(request: web.Request) -> web.StreamResponse:
    return _send_result(request)
