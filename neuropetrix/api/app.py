"""The aiohttp application, wired as aiohttp's examples wire theirs: each service under its own
`web.AppKey` (defined beside the service), the route modules' tables added, the background tasks (event
feed) in `cleanup_ctx`. Nothing heavy is built here: the signing key and the database pool come from
the caller (api/server.py for the node, the tests' fixtures). Push messages are engine jobs.

A route module plugs in by defining `routes = web.RouteTableDef()`, its handlers declared with
`api.endpoint` (permission and pydantic models), and being listed in ROUTE_MODULES.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import WSCloseCode, web

from neuropetrix.api import (
    routes_admin,
    routes_audit,
    routes_auth,
    routes_devices,
    routes_notifications,
    routes_orders,
    routes_patients,
    routes_review,
    routes_studies,
)
from neuropetrix.api.audit_middleware import AUDIT, audit_middleware
from neuropetrix.api.auth import AUTH, Auth
from neuropetrix.api.database import DATABASE, Database
from neuropetrix.api.errors import errors_and_timing
from neuropetrix.api.event_feed import FEED, EventFeed
from neuropetrix.api.headers import add_security_headers
from neuropetrix.api.node_config import SETTINGS
from neuropetrix.api.openapi import openapi
from neuropetrix.api.ops import READINESS, EventMetrics, Readiness, healthz, metrics, readyz
from neuropetrix.api.routes_studies import STUDY_PAGES, StudyPages
from neuropetrix.api.tokens import TokenSigner
from neuropetrix.api.ws import SOCKETS, websocket
from neuropetrix.config.settings import Settings
from neuropetrix.store.audit import audit_trail

STATIC = Path(__file__).with_name("static")
ROUTE_MODULES = (routes_auth, routes_studies, routes_review, routes_admin, routes_devices, routes_orders,
                 routes_notifications, routes_patients, routes_audit)


async def _index(_request: web.Request) -> web.FileResponse:
    """The dashboard."""
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _background(app: web.Application) -> AsyncIterator[None]:
    await app[FEED].start()
    feed = asyncio.create_task(app[FEED].run(), name="event-feed")
    yield
    feed.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await feed
    app[DATABASE].close()


async def _close_websockets(app: web.Application) -> None:
    """All at once: a client that does not answer the close must not hold up the others."""
    await asyncio.gather(*(ws.close(code=WSCloseCode.GOING_AWAY, message=b"node stopping")
                           for ws in list(app[SOCKETS])), return_exceptions=True)


def create_app(settings: Settings, db: Database, readiness: Readiness, signer: TokenSigner,
               clock: Callable[[], float] = time.time) -> web.Application:
    """The app over these services; `clock` (Unix seconds) is what token expiry is measured by."""
    auth = Auth(signer, settings.api, clock)
    feed = EventFeed(db, settings.api.event_poll_seconds)
    feed.listen(EventMetrics())
    feed.listen(auth.on_events)

    # the audit middleware outermost: errors_and_timing has made every error a response with its status
    app = web.Application(middlewares=[audit_middleware(settings.audit.trusted_proxies), errors_and_timing],
                          client_max_size=1024 * 1024)
    app[SETTINGS] = settings
    app[DATABASE] = db
    app[AUTH] = auth
    app[FEED] = feed
    app[AUDIT] = audit_trail(settings, db.sessions)
    app[READINESS] = readiness
    app[SOCKETS] = set()
    app[STUDY_PAGES] = StudyPages()
    for module in ROUTE_MODULES:
        app.add_routes(module.routes)
    app.router.add_get("/api/ws", websocket)
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC)
    app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_close_websockets)
    app.on_response_prepare.append(add_security_headers)
    return app
