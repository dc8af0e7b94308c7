"""/api/notifications (list, acknowledge), /api/me/contact (how the caller is reached), /api/sync (every
change the caller may see since a cursor, paged) and /api/stats (the department dashboard's numbers).

The sync cursor is an event id, the same the WebSocket resumes from (`/api/ws?after=CURSOR`): an app
that was offline pages through `/api/sync` until `more` is false, then opens the stream at `next`.
"""
from __future__ import annotations

import json

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from neuropetrix.api.auth import requires
from neuropetrix.api.contacts import contact_json, set_contact
from neuropetrix.api.context import CTX
from neuropetrix.api.events import last_event_id, read_after
from neuropetrix.api.params import bad_request, json_body, query_int
from neuropetrix.api.permissions import JOBS_READ, USERS_MANAGE
from neuropetrix.api.stats import department_stats
from neuropetrix.api.users import AccountError
from neuropetrix.engine.notifications import acknowledge, oncall_list, set_oncall
from neuropetrix.store.accounts import User
from neuropetrix.store.db import utcnow
from neuropetrix.store.notify_models import Contact, Notification

routes = web.RouteTableDef()
SYNC_PAGE, SYNC_MAX = 200, 1000


def _iso(t) -> str | None:
    return t.isoformat() + "Z" if t else None


def notification_json(n: Notification, username: str) -> dict:
    return {"id": n.id, "event_id": n.event_id, "study_uid": n.study_uid, "route": n.route, "user": username,
            "priority": n.priority, "channels": n.channels, "state": n.state,
            "escalate_at": _iso(n.escalate_at), "escalated_from": n.escalated_from,
            "created_at": _iso(n.created_at), "acked_at": _iso(n.acked_at), "acked_by": n.acked_by}


@routes.get("/api/notifications")
@requires(None)
async def notifications(request: web.Request) -> web.Response:
    """The caller's notifications, newest first; `?all=1` everyone's (users.manage: the dashboard)."""
    who = request["principal"]
    everyone = request.query.get("all") == "1"
    if everyone and USERS_MANAGE not in who.permissions:
        raise web.HTTPForbidden(text=f"role {who.role} may not see others' notifications ({USERS_MANAGE})")
    limit = query_int(request, "limit", 50, 1, 500)

    def query(s: Session) -> list[dict]:
        q = select(Notification, User.username).join(User).order_by(Notification.id.desc()).limit(limit)
        if not everyone:
            q = q.where(Notification.user_id == who.user_id)
        return [notification_json(n, name) for n, name in s.execute(q)]
    return web.json_response({"items": await request.app[CTX].db(query)})


@routes.post(r"/api/notifications/{notification_id:\d+}/ack")
@requires(None)
async def ack(request: web.Request) -> web.Response:
    """The recipient (or an administrator, from the dashboard) has it: escalation stops."""
    who = request["principal"]
    notification_id = int(request.match_info["notification_id"])

    def do(s: Session) -> dict | None:
        n = s.get(Notification, notification_id)
        if n is None or (n.user_id != who.user_id and USERS_MANAGE not in who.permissions):
            return None
        n = acknowledge(s, notification_id, who.username, utcnow())
        return notification_json(n, s.get(User, n.user_id).username)

    shown = await request.app[CTX].db(do)
    if shown is None:
        raise web.HTTPNotFound(text=f"no notification {notification_id} of yours")
    return web.json_response(shown)


@routes.get("/api/oncall")
@requires(None)
async def oncall(request: web.Request) -> web.Response:
    cfg = request.app[CTX].settings.notify
    return web.json_response({"users": await request.app[CTX].db(oncall_list, cfg), "configured": cfg.oncall})


@routes.put("/api/oncall")
@requires(USERS_MANAGE)
async def set_oncall_list(request: web.Request) -> web.Response:
    """The on-call list in escalation order, set from the dashboard; `{"users": []}` returns to notify.oncall."""
    body = await json_body(request)
    names = body.get("users")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise bad_request("users: a list of usernames in escalation order")
    cfg = request.app[CTX].settings.notify

    def save(s: Session) -> list[str]:
        set_oncall(s, names)
        return oncall_list(s, cfg)
    try:
        return web.json_response({"users": await request.app[CTX].db(save), "configured": cfg.oncall})
    except ValueError as exc:
        raise bad_request(str(exc)) from None


@routes.get("/api/me/contact")
@requires(None)
async def my_contact(request: web.Request) -> web.Response:
    user_id = request["principal"].user_id
    return web.json_response(await request.app[CTX].db(lambda s: contact_json(s.get(Contact, user_id))))


@routes.put("/api/me/contact")
@requires(None)
async def set_my_contact(request: web.Request) -> web.Response:
    body = await json_body(request)
    user_id = request["principal"].user_id
    try:
        return web.json_response(await request.app[CTX].db(lambda s: set_contact(s, s.get(User, user_id), **body)))
    except AccountError as exc:
        raise bad_request(str(exc)) from None


@routes.get("/api/sync")
@requires(None)
async def sync(request: web.Request) -> web.Response:
    """Events after `since` that the caller's role may see, oldest first; `next` is the cursor for the
    following page (and the WebSocket's `after`), `more` whether the log goes on past it."""
    since = query_int(request, "since", 0, 0, 2**62)
    limit = query_int(request, "limit", SYNC_PAGE, 1, SYNC_MAX)
    allowed = request["principal"].permissions

    def read(s: Session) -> dict:
        items = read_after(s, since, limit)
        cursor = items[-1].id if items else since
        return {"items": [json.loads(i.text) for i in items if i.permission in allowed], "next": cursor,
                "more": cursor < last_event_id(s)}
    return web.json_response(await request.app[CTX].db(read))


@routes.get("/api/stats")
@requires(JOBS_READ)
async def stats(request: web.Request) -> web.Response:
    days = query_int(request, "days", 14, 1, 366)
    return web.json_response(await request.app[CTX].db(department_stats, days, utcnow()))
