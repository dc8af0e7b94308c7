"""Errors as JSON (`{"status", "message"}`) with the right status code, and request timing for /metrics."""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from neuropetrix.metrics import API_SECONDS

log = logging.getLogger("neuropetrix.api")


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"status": status, "message": message}, status=status, headers=headers)


def _route_name(request: web.Request) -> str:
    """The route's pattern (/api/studies/{study_uid}), not the path, so metrics stay few."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def errors_and_timing(request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        text = exc.text or ""
        return json_error(exc.status, exc.reason if not text or text.startswith(f"{exc.status}:") else text,
                          {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")})
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return json_error(500, "internal error; see the node's log")
    finally:
        if request.path != "/metrics":
            API_SECONDS.labels(request.method, _route_name(request), str(status)).observe(
                time.perf_counter() - started)
