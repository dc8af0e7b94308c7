"""/api/devices: the caller's push devices (FCM registration tokens), per platform."""
from __future__ import annotations

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from neuropetrix.api.auth import requires
from neuropetrix.api.context import CTX
from neuropetrix.api.params import bad_request, json_body, path_id
from neuropetrix.api.permissions import DEVICES_OWN
from neuropetrix.api.tokens import token_hash
from neuropetrix.store.accounts import Device
from neuropetrix.store.db import utcnow

routes = web.RouteTableDef()
PLATFORMS = ("android", "ios", "web")


def _json(d: Device) -> dict:
    return {"id": d.id, "platform": d.platform, "token_tail": d.token[-8:],
            "created_at": d.created_at.isoformat() + "Z", "last_seen_at": d.last_seen_at.isoformat() + "Z"}


def _register(s: Session, user_id: int, platform: str, token: str) -> tuple[dict, bool]:
    """A token belongs to one device and so to its latest user: re-registering moves it."""
    now = utcnow()
    d = s.scalars(select(Device).where(Device.token_hash == token_hash(token))).first()
    created = d is None
    if d is None:
        d = Device(token=token, token_hash=token_hash(token), created_at=now)
        s.add(d)
    d.user_id, d.platform, d.last_seen_at = user_id, platform, now
    s.flush()
    return _json(d), created


@routes.post("/api/devices")
@requires(DEVICES_OWN)
async def register(request: web.Request) -> web.Response:
    body = await json_body(request, ("token", "platform"))
    if body["platform"] not in PLATFORMS:
        raise bad_request(f"platform: one of {', '.join(PLATFORMS)}")
    if len(body["token"]) > 4096:
        raise bad_request("token: at most 4096 characters")
    device, created = await request.app[CTX].db(_register, request["principal"].user_id, body["platform"],
                                                body["token"])
    return web.json_response(device, status=201 if created else 200)


@routes.get("/api/devices")
@requires(DEVICES_OWN)
async def mine(request: web.Request) -> web.Response:
    def query(s: Session) -> list[dict]:
        return [_json(d) for d in s.scalars(select(Device).where(Device.user_id == request["principal"].user_id)
                                            .order_by(Device.id))]
    return web.json_response({"items": await request.app[CTX].db(query)})


@routes.delete("/api/devices/{device_id:\\d+}")
@requires(DEVICES_OWN)
async def remove(request: web.Request) -> web.Response:
    device_id = path_id(request, "device_id", "device")

    def drop(s: Session) -> bool:
        d = s.get(Device, device_id)
        if d is None or d.user_id != request["principal"].user_id:
            return False
        s.delete(d)
        return True

    if not await request.app[CTX].db(drop):
        raise web.HTTPNotFound(text=f"no device {device_id} of yours")
    return web.Response(status=204)
