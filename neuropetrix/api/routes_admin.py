"""Administration: users (admin), routes and peers as configured (read-only), the job queue with retry."""
from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field, StrictBool
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from neuropetrix.api import users
from neuropetrix.api.auth import AUTH
from neuropetrix.api.database import DATABASE
from neuropetrix.api.endpoint import endpoint
from neuropetrix.api.node_config import SETTINGS
from neuropetrix.api.params import Body, Page, PageQuery, Text, bad_request, paged, path_id
from neuropetrix.api.permissions import CONFIG_READ, JOBS_READ, JOBS_RETRY, USERS_MANAGE
from neuropetrix.engine.jobs import JobQueue, job_json
from neuropetrix.store.accounts import ROLES
from neuropetrix.store.jobs_models import DONE, FAILED, QUEUED, RUNNING, Job

routes = web.RouteTableDef()
Role = Literal[ROLES]  # type: ignore[valid-type]


class UserOut(BaseModel):
    id: int
    username: str
    role: str
    disabled: bool
    display_name: str
    organisation: str
    created_at: str
    last_login_at: str | None


class Users(BaseModel):
    items: list[UserOut]


Label = Field(None, max_length=200, description="what a signed report names (review)")


class NewUser(Body):
    username: Text
    password: Text
    role: Text            # checked by users.add_user, whose message lists the roles
    display_name: str | None = Label
    organisation: str | None = Label


class UserChange(Body):
    role: Role | None = None
    disabled: StrictBool | None = None
    display_name: str | None = Label
    organisation: str | None = Label


class Configured(BaseModel):
    items: list[dict]


class JobQuery(PageQuery):
    state: Literal[QUEUED, RUNNING, DONE, FAILED] | None = None  # type: ignore[valid-type]
    kind: str | None = None
    study_uid: str | None = Field(None, max_length=64)


@routes.get("/api/users")
@endpoint(USERS_MANAGE, response=Users)
async def list_users(request: web.Request) -> web.Response:
    """Every account with its role and state."""
    items = await request.app[DATABASE](users.list_users)
    return web.json_response({"items": [u.to_json() for u in items]})


@routes.post("/api/users")
@endpoint(USERS_MANAGE, body=NewUser, response=UserOut, status=201)
async def add_user(request: web.Request, body: NewUser) -> web.Response:
    """Add an account."""
    try:
        info = await request.app[DATABASE](users.add_user, body.username, body.password, body.role,
                                           body.display_name or "", body.organisation or "")
    except users.AccountError as exc:
        raise bad_request(str(exc)) from None
    return web.json_response(info.to_json(), status=201)


@routes.patch("/api/users/{username}")
@endpoint(USERS_MANAGE, body=UserChange, response=UserOut)
async def update_user(request: web.Request, body: UserChange) -> web.Response:
    """Change an account's role or disable it (either logs it out everywhere)."""
    try:
        info = await request.app[DATABASE](users.update_user, request.match_info["username"], body.role,
                                           body.disabled, body.display_name, body.organisation)
    except users.AccountError as exc:
        raise (web.HTTPNotFound(text=str(exc)) if str(exc).startswith("no user") else bad_request(str(exc))) \
            from None
    request.app[AUTH].forget_user(info.id)
    return web.json_response(info.to_json())


@routes.get("/api/routes")
@endpoint(CONFIG_READ, response=Configured)
async def list_routes(request: web.Request) -> web.Response:
    """The routing rules as configured."""
    return web.json_response({"items": [r.model_dump(mode="json") for r in request.app[SETTINGS].routes]})


@routes.get("/api/peers")
@endpoint(CONFIG_READ, response=Configured)
async def list_peers(request: web.Request) -> web.Response:
    """The DICOM peers as configured."""
    return web.json_response({"items": [p.model_dump(mode="json") for p in request.app[SETTINGS].peers]})


@routes.get("/api/jobs")
@endpoint(JOBS_READ, query=JobQuery, response=Page)
async def list_jobs(request: web.Request, query: JobQuery) -> web.Response:
    """The job queue, newest first."""
    where = [col == value for col, value in ((Job.state, query.state), (Job.kind, query.kind),
                                             (Job.study_uid, query.study_uid)) if value]

    def read(s: Session) -> dict:
        rows = s.scalars(select(Job).where(*where).order_by(Job.id.desc()).limit(query.limit)
                         .offset(query.offset)).all()
        total = s.scalar(select(func.count(Job.id)).where(*where)) or 0
        return paged([job_json(j) for j in rows], total, query)

    return web.json_response(await request.app[DATABASE](read))


@routes.post("/api/jobs/{job_id:\\d+}/retry")
@endpoint(JOBS_RETRY)
async def retry_job(request: web.Request) -> web.Response:
    """Queue a parked or failed job again, its attempts reset."""
    job_id = path_id(request, "job_id", "job")
    engine = request.app[SETTINGS].engine
    db = request.app[DATABASE]
    queue = JobQueue(db.sessions, engine.retry, engine.lease_seconds)
    try:
        return web.json_response(job_json(await db.run(queue.requeue, job_id)))
    except KeyError:
        raise web.HTTPNotFound(text=f"no job {job_id}") from None
    except ValueError as exc:
        raise web.HTTPConflict(text=str(exc)) from None
