"""/api/studies: the study list (paginated, filterable), one study with its series, analysis and
delivery states (jobs, push included), and its result files (MIP, analysis.json, SEG, SR, PDF) from
data_dir/results/<uid>/."""
from __future__ import annotations

import json
import time
from typing import Literal

from aiohttp import web
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from neuropetrix.api.auth import PRINCIPAL
from neuropetrix.api.database import DATABASE
from neuropetrix.api.endpoint import endpoint
from neuropetrix.api.etags import json_with_etag
from neuropetrix.api.event_feed import FEED
from neuropetrix.api.node_config import SETTINGS, results_dir
from neuropetrix.api.params import Page, PageQuery, bad_request, paged
from neuropetrix.api.permissions import DELIVERIES_READ, RESULTS_DOWNLOAD, RESULTS_READ, STUDIES_READ, event_permission
from neuropetrix.api.singleflight import SingleFlight
from neuropetrix.dicom_uids import is_uid
from neuropetrix.engine.jobs import job_json
from neuropetrix.store.jobs_models import Job
from neuropetrix.store.models import Event, Instance, Series, Study
from neuropetrix.store.queries import StudyFilter, count_studies, list_studies

routes = web.RouteTableDef()

PAGE_TTL = 1.0       # seconds a study-list page is reused while no event arrives
Date = Field(None, pattern=r"^\d{8}$", description="YYYYMMDD")
# name in the URL → (file in results/<uid>/, content type, permission)
RESULT_FILES = {
    "mip.png": ("mip.png", "image/png", RESULTS_READ),
    "analysis.json": ("analysis.json", "application/json", RESULTS_READ),
    "seg.dcm": ("seg.dcm", "application/dicom", RESULTS_DOWNLOAD),
    "sr.dcm": ("sr.dcm", "application/dicom", RESULTS_DOWNLOAD),
    "report.pdf": ("report.pdf", "application/pdf", RESULTS_DOWNLOAD),
}


class StudyQuery(PageQuery):
    state: Literal["receiving", "complete"] | None = None
    modality: str | None = Field(None, max_length=16)
    patient_id: str | None = Field(None, max_length=64)
    accession_number: str | None = Field(None, max_length=16)
    date_from: str | None = Date
    date_to: str | None = Date
    q: str | None = Field(None, max_length=200, description="in the patient name or the study description")

    def filter(self) -> StudyFilter:
        return StudyFilter(state=self.state, modality=self.modality, patient_id=self.patient_id,
                           accession_number=self.accession_number, date_from=self.date_from,
                           date_to=self.date_to, text=self.q)


class StudyPages:
    """Study-list pages by (limit, offset, filter): (event id, time, JSON body), and the reads under
    way (one per question and event position); see `studies`."""

    def __init__(self) -> None:
        self.pages: dict[tuple, tuple[int, float, bytes]] = {}
        self.reads: SingleFlight[bytes] = SingleFlight()


STUDY_PAGES = web.AppKey("study_pages", StudyPages)


def study_uid_of(request: web.Request) -> str:
    """The URL's {study_uid}, or 400 when it is not a UID (it names a folder under results/)."""
    uid = request.match_info["study_uid"]
    if not is_uid(uid):
        raise bad_request("study_uid: not a DICOM UID")
    return uid


def _iso(t) -> str | None:
    return t.isoformat() + "Z" if t else None


@routes.get("/api/studies")
@endpoint(STUDIES_READ, query=StudyQuery, response=Page)
async def studies(request: web.Request, query: StudyQuery) -> web.Response:
    """The study list, newest first.

    Pages are shared by every client asking the same question until the event log moves or a second
    passes (instance counts may lag by that much), since every dashboard asks it; the clients that
    ask while the page is being read wait for that read (one read, not one each)."""
    where = query.filter()
    pages, feed = request.app[STUDY_PAGES], request.app[FEED]
    cache = pages.pages
    key = (query.limit, query.offset, where)
    cached = cache.get(key)
    if cached is not None and cached[0] == feed.last_id and time.monotonic() - cached[1] < PAGE_TTL:
        return json_with_etag(request, cached[2])

    def read(s: Session) -> bytes:
        rows = list_studies(s, query.limit, query.offset, where)
        return json.dumps(paged([r.to_json() for r in rows], count_studies(s, where), query),
                          ensure_ascii=False).encode()

    async def load() -> bytes:
        position, started = feed.last_id, time.monotonic()
        body = await request.app[DATABASE](read)
        if len(cache) > 256:
            cache.clear()
        cache[key] = (position, started, body)
        return body

    return json_with_etag(request, await pages.reads((key, feed.last_id), load))


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
@endpoint(STUDIES_READ)
async def study(request: web.Request) -> web.Response:
    """One study: series and events; analysis and file links, deliveries, by the caller's role."""
    uid = study_uid_of(request)
    who = request[PRINCIPAL]
    detail = await request.app[DATABASE](_study_detail, uid, who.permissions)
    if detail is None:
        raise web.HTTPNotFound(text=f"no study {uid}")
    if RESULTS_READ in who.permissions:
        folder = results_dir(request.app[SETTINGS]) / uid
        analysis = folder / "analysis.json"
        detail["analysis"] = json.loads(analysis.read_text(encoding="utf-8")) if analysis.is_file() else None
        detail["files"] = {name: f"/api/studies/{uid}/{name}" for name, (fname, _, perm) in RESULT_FILES.items()
                           if perm in who.permissions and (folder / fname).is_file()}
    return json_with_etag(request, json.dumps(detail, ensure_ascii=False).encode())


def _send_result(request: web.Request) -> web.FileResponse:
    fname, content_type, _ = RESULT_FILES[request.match_info["name"]]
    path = results_dir(request.app[SETTINGS]) / study_uid_of(request) / fname
    if not path.is_file():
        raise web.HTTPNotFound(text=f"no {fname} for this study (not analysed yet?)")
    return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


@routes.get(r"/api/studies/{study_uid}/{name:mip\.png|analysis\.json}")
@endpoint(RESULTS_READ)
async def result_view(request: web.Request) -> web.StreamResponse:
    """The study's MIP picture or analysis (lesion table)."""
    return _send_result(request)


@routes.get(r"/api/studies/{study_uid}/{name:seg\.dcm|sr\.dcm|report\.pdf}")
@endpoint(RESULTS_DOWNLOAD)
async def result_download(request: web.Request) -> web.StreamResponse:
    """The study's DICOM SEG, SR or PDF report."""
    return _send_result(request)
