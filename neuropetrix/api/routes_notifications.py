"""/api/notifications (list, acknowledge), /api/oncall (the escalation list), /api/me/contact (how the
caller is reached), /api/sync (every change the caller may see since a cursor, paged) and /api/stats
(the department page's numbers).

The sync cursor is an event id, the same the WebSocket resumes from (`/api/ws?after=CURSOR`): an app
that was offline pages through `/api/sync` until `more` is false, then opens the stream at `next`.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from neuropetrix.api.auth import PRINCIPAL
from neuropetrix.api.contacts import contact_json, set_contact
from neuropetrix.api.database import DATABASE
from neuropetrix.api.endpoint import endpoint
from neuropetrix.api.event_feed import last_event_id, read_after
from neuropetrix.api.node_config import SETTINGS
from neuropetrix.api.params import Body, bad_request, path_id
from neuropetrix.api.permissions import JOBS_READ, USERS_MANAGE
from neuropetrix.api.stats import department_stats
from neuropetrix.api.users import AccountError
from neuropetrix.engine.notifications import acknowledge, oncall_list, set_oncall
from neuropetrix.store.accounts import User
from neuropetrix.store.db import utcnow
from neuropetrix.store.notify_models import Contact, Notification

routes = web.RouteTableDef()


class NotificationQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    all: bool = Field(False, description="everyone's notifications (users.manage), not only the caller's")
    limit: int = Field(50, ge=1, le=500)


class SyncQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    since: int = Field(0, ge=0, le=2**62, description="the cursor: the last event id the client has")
    limit: int = Field(200, ge=1, le=1000, description="events read per page (fewer come back when the "
                                                       "role may not see some)")


class StatsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    days: int = Field(14, ge=1, le=366)


class ContactChange(Body):
    email: str | None = None
    phone: str | None = None
    quiet_from: str | None = Field(None, description="HH:MM in notify.timezone; '' for none")
    quiet_until: str | None = None
    channels: list[Literal["push", "email", "sms"]] | None = None


class OncallChange(Body):
    users: list[str] = Field(description="usernames in escalation order; [] = back to notify.oncall")


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() + "Z" if t else None


def notification_json(n: Notification, username: str) -> dict:
    return {"id": n.id, "event_id": n.event_id, "study_uid": n.study_uid, "route": n.route, "user": username,
            "priority": n.priority, "channels": n.channels, "state": n.state,
            "escalate_at": _iso(n.escalate_at), "escalated_from": n.escalated_from,
            "created_at": _iso(n.created_at), "acked_at": _iso(n.acked_at), "acked_by": n.acked_by}


@routes.get("/api/notifications")
@endpoint(None, query=NotificationQuery)
async def notifications(request: web.Request, query: NotificationQuery) -> web.Response:
    """The caller's notifications, newest first; ?all=1 everyone's (users.manage: the department page)."""
    who = request[PRINCIPAL]
    if query.all and USERS_MANAGE not in who.permissions:
        raise web.HTTPForbidden(text=f"role {who.role} may not see others' notifications ({USERS_MANAGE})")

    def read(s: Session) -> list[dict]:
        q = select(Notification, User.username).join(User).order_by(Notification.id.desc()).limit(query.limit)
        if not query.all:
            q = q.where(Notification.user_id == who.user_id)
        return [notification_json(n, name) for n, name in s.execute(q)]
    return web.json_response({"items": await request.app[DATABASE](read)})


@routes.post(r"/api/notifications/{notification_id:\d+}/ack")
@endpoint(None)
async def ack(request: web.Request) -> web.Response:
    """Acknowledge a notification (its recipient, or an administrator): its escalation stops."""
    who = request[PRINCIPAL]
    notification_id = path_id(request, "notification_id", "notification")

    def do(s: Session) -> dict | None:
        n = s.get(Notification, notification_id)
        if n is None or (n.user_id != who.user_id and USERS_MANAGE not in who.permissions):
            return None
        acknowledge(s, n.id, who.username, utcnow())
        return notification_json(n, s.get(User, n.user_id).username)

    shown = await request.app[DATABASE](do)
    if shown is None:
        raise web.HTTPNotFound(text=f"no notification {notification_id} of yours")
    return web.json_response(shown)


@routes.get("/api/oncall")
@endpoint(None)
async def oncall(request: web.Request) -> web.Response:
    """Who is on call, in escalation order, and the configured list (notify.oncall)."""
    cfg = request.app[SETTINGS].notify
    return web.json_response({"users": await request.app[DATABASE](oncall_list, cfg), "configured": cfg.oncall})


@routes.put("/api/oncall")
@endpoint(USERS_MANAGE, body=OncallChange)
async def set_oncall_list(request: web.Request, body: OncallChange) -> web.Response:
    """Set the on-call list in escalation order; [] returns to notify.oncall."""
    cfg = request.app[SETTINGS].notify

    def save(s: Session) -> list[str]:
        set_oncall(s, body.users)
        return oncall_list(s, cfg)
    try:
        return web.json_response({"users": await request.app[DATABASE](save), "configured": cfg.oncall})
    except ValueError as exc:
        raise bad_request(str(exc)) from None


@routes.get("/api/me/contact")
@endpoint(None)
async def my_contact(request: web.Request) -> web.Response:
    """How the caller is reached: e-mail, phone, quiet hours, channels, and addresses refused for good."""
    user_id = request[PRINCIPAL].user_id
    return web.json_response(await request.app[DATABASE](lambda s: contact_json(s.get(Contact, user_id))))


@routes.put("/api/me/contact")
@endpoint(None, body=ContactChange)
async def set_my_contact(request: web.Request, body: ContactChange) -> web.Response:
    """Change the caller's contact fields that the body names."""
    user_id = request[PRINCIPAL].user_id
    fields = body.model_dump(exclude_none=True)
    try:
        return web.json_response(await request.app[DATABASE](lambda s: set_contact(s, s.get(User, user_id),
                                                                                     **fields)))
    except AccountError as exc:
        raise bad_request(str(exc)) from None


@routes.get("/api/sync")
@endpoint(None, query=SyncQuery)
async def sync(request: web.Request, query: SyncQuery) -> web.Response:
    """Events after ?since= that the caller's role may see, oldest first; `next` is the cursor for the
    following page (and the WebSocket's `after`), `more` whether the log goes on past it."""
    allowed = request[PRINCIPAL].permissions

    def read(s: Session) -> dict:
        items = read_after(s, query.since, query.limit)
        cursor = items[-1].id if items else query.since
        return {"items": [json.loads(i.text) for i in items if i.permission in allowed], "next": cursor,
                "more": cursor < last_event_id(s)}
    return web.json_response(await request.app[DATABASE](read))


@routes.get("/api/stats")
@endpoint(JOBS_READ, query=StatsQuery)
async def stats(request: web.Request, query: StatsQuery) -> web.Response:
    """Studies per day, turnaround medians and 90th percentiles, per-destination counts, queue depth."""
    return web.json_response(await request.app[DATABASE](department_stats, query.days, utcnow()))
