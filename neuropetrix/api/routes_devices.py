"""/api/devices: the caller's push devices (FCM registration tokens), per platform."""
from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from neuropetrix.api.auth import PRINCIPAL
from neuropetrix.api.database import DATABASE
from neuropetrix.api.endpoint import endpoint
from neuropetrix.api.params import Body, path_id
from neuropetrix.api.permissions import DEVICES_OWN
from neuropetrix.api.tokens import token_hash
from neuropetrix.store.accounts import Device
from neuropetrix.store.db import utcnow

routes = web.RouteTableDef()


class NewDevice(Body):
    token: str = Field(min_length=1, max_length=4096, description="the FCM registration token")
    platform: Literal["android", "ios", "web"]


class DeviceOut(BaseModel):
    id: int
    platform: str
    token_tail: str
    created_at: str
    last_seen_at: str


class Devices(BaseModel):
    items: list[DeviceOut]


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
@endpoint(DEVICES_OWN, body=NewDevice, response=DeviceOut, status=201)
async def register(request: web.Request, body: NewDevice) -> web.Response:
    """Register a push device of the caller's (201), or move a known token to the caller (200)."""
    device, created = await request.app[DATABASE](_register, request[PRINCIPAL].user_id, body.platform,
                                                  body.token)
    return web.json_response(device, status=201 if created else 200)


@routes.get("/api/devices")
@endpoint(DEVICES_OWN, response=Devices)
async def mine(request: web.Request) -> web.Response:
    """The caller's push devices."""
    user_id = request[PRINCIPAL].user_id

    def read(s: Session) -> list[dict]:
        return [_json(d) for d in s.scalars(select(Device).where(Device.user_id == user_id).order_by(Device.id))]
    return web.json_response({"items": await request.app[DATABASE](read)})


@routes.delete("/api/devices/{device_id:\\d+}")
@endpoint(DEVICES_OWN, status=204)
async def remove(request: web.Request) -> web.Response:
    """Remove one of the caller's push devices."""
    device_id = path_id(request, "device_id", "device")
    user_id = request[PRINCIPAL].user_id

    def drop(s: Session) -> bool:
        d = s.get(Device, device_id)
        if d is None or d.user_id != user_id:
            return False
        s.delete(d)
        return True

    if not await request.app[DATABASE](drop):
        raise web.HTTPNotFound(text=f"no device {device_id} of yours")
    return web.Response(status=204)
