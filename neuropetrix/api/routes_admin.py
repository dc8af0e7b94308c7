"""Administration: users (admin), routes and peers as configured (read-only), the job queue with retry."""
from __future__ import annotations

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from neuropetrix.api import users
from neuropetrix.api.auth import requires
from neuropetrix.api.context import CTX
from neuropetrix.api.params import bad_request, json_body, page, paged, path_id
from neuropetrix.api.permissions import CONFIG_READ, JOBS_READ, JOBS_RETRY, USERS_MANAGE
from neuropetrix.engine.jobs import JobQueue, job_json
from neuropetrix.store.jobs_models import DONE, FAILED, QUEUED, RUNNING, Job

routes = web.RouteTableDef()


@routes.get("/api/users")
@requires(USERS_MANAGE)
async def list_users(request: web.Request) -> web.Response:
    items = await request.app[CTX].db(users.list_users)
    return web.json_response({"items": [u.to_json() for u in items]})


@routes.post("/api/users")
@requires(USERS_MANAGE)
async def add_user(request: web.Request) -> web.Response:
    body = await json_body(request, ("username", "password", "role"))
    try:
        info = await request.app[CTX].db(users.add_user, body["username"], body["password"], body["role"])
    except users.AccountError as exc:
        raise bad_request(str(exc)) from None
    return web.json_response(info.to_json(), status=201)


@routes.patch("/api/users/{username}")
@requires(USERS_MANAGE)
async def update_user(request: web.Request) -> web.Response:
    body = await json_body(request)
    role, disabled = body.get("role"), body.get("disabled")
    if role is not None and not isinstance(role, str) or disabled is not None and not isinstance(disabled, bool):
        raise bad_request("role: a string; disabled: true or false")
    ctx = request.app[CTX]
    try:
        info = await ctx.db(users.update_user, request.match_info["username"], role, disabled)
    except users.AccountError as exc:
        raise (web.HTTPNotFound(text=str(exc)) if str(exc).startswith("no user") else bad_request(str(exc))) \
            from None
    ctx.auth.forget_user(info.id)
    return web.json_response(info.to_json())


@routes.get("/api/routes")
@requires(CONFIG_READ)
async def list_routes(request: web.Request) -> web.Response:
    return web.json_response({"items": [r.model_dump(mode="json") for r in request.app[CTX].settings.routes]})


@routes.get("/api/peers")
@requires(CONFIG_READ)
async def list_peers(request: web.Request) -> web.Response:
    return web.json_response({"items": [p.model_dump(mode="json") for p in request.app[CTX].settings.peers]})


@routes.get("/api/jobs")
@requires(JOBS_READ)
async def list_jobs(request: web.Request) -> web.Response:
    limit, offset = page(request)
    q = request.query
    if q.get("state") not in (None, QUEUED, RUNNING, DONE, FAILED):
        raise bad_request(f"state: one of {QUEUED}, {RUNNING}, {DONE}, {FAILED}")
    where = [col == q[name] for name, col in (("state", Job.state), ("kind", Job.kind),
                                                ("study_uid", Job.study_uid)) if q.get(name)]

    def query(s: Session) -> dict:
        rows = s.scalars(select(Job).where(*where).order_by(Job.id.desc()).limit(limit).offset(offset)).all()
        total = s.scalar(select(func.count(Job.id)).where(*where)) or 0
        return paged([job_json(j) for j in rows], total, limit, offset)

    return web.json_response(await request.app[CTX].db(query))


@routes.post("/api/jobs/{job_id:\\d+}/retry")
@requires(JOBS_RETRY)
async def retry_job(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    job_id = path_id(request, "job_id", "job")

    queue = JobQueue(ctx.db.sessions, ctx.settings.engine.retry, ctx.settings.engine.lease_seconds)
    try:
        return web.json_response(job_json(await ctx.db.run(queue.requeue, job_id)))
    except KeyError:
        raise web.HTTPNotFound(text=f"no job {job_id}") from None
    except ValueError as exc:
        raise web.HTTPConflict(text=str(exc)) from None
