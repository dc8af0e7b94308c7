"""The aiohttp application: routes, middlewares, and the event feed. Push messages are engine jobs."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import WSCloseCode, web
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.api import (
    audit_middleware,
    routes_admin,
    routes_auth,
    routes_devices,
    routes_orders,
    routes_review,
    routes_studies,
)
from neuropetrix.api.auth import Auth
from neuropetrix.api.context import CTX, ApiContext, Database, Readiness
from neuropetrix.api.errors import errors_and_timing
from neuropetrix.api.events import EventFeed
from neuropetrix.api.openapi import openapi
from neuropetrix.api.ops import EventMetrics, healthz, metrics, readyz
from neuropetrix.api.tokens import TokenSigner, load_signing_key
from neuropetrix.api.ws import websocket
from neuropetrix.config.settings import Settings

STATIC = Path(__file__).with_name("static")


async def _index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _background(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CTX]
    tasks = [asyncio.create_task(ctx.feed.run(), name="event-feed")]
    yield
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t
    ctx.db.close()


async def _close_websockets(app: web.Application) -> None:
    """All at once: a client that does not answer the close must not hold up the others."""
    await asyncio.gather(*(ws.close(code=WSCloseCode.GOING_AWAY, message=b"node stopping")
                           for ws in list(app[CTX].websockets)), return_exceptions=True)


def create_app(settings: Settings, sessions: sessionmaker[Session], readiness: Readiness) -> web.Application:
    db = Database(sessions)
    key = load_signing_key(settings.api.signing_key, settings.node.data_dir)
    auth = Auth(TokenSigner(key, settings.api.access_token_seconds), settings.api)
    feed = EventFeed(db, settings.api.event_poll_seconds)
    feed.listen(EventMetrics())

    app = web.Application(middlewares=[errors_and_timing], client_max_size=1024 * 1024)
    app[CTX] = ApiContext(settings, db, auth, feed, readiness)
    for module in (routes_auth, routes_studies, routes_review, routes_admin, routes_devices, routes_orders):
        app.add_routes(module.routes)
    app.router.add_get("/api/ws", websocket)
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC)
    audit_middleware.install(app)
    app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_close_websockets)
    return app
