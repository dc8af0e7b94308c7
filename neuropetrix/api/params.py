"""Reading what a request carries: JSON bodies and query parameters, with 400s that name the field."""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

MAX_LIMIT = 500
DEFAULT_LIMIT = 50


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message)


async def json_body(request: web.Request, required: tuple[str, ...] = ()) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_request("the body must be JSON") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    for name in required:
        if not isinstance(body.get(name), str) or not body[name]:
            raise bad_request(f"{name}: a non-empty string is required")
    return body


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name}: an integer is required") from None
    if not lo <= value <= hi:
        raise bad_request(f"{name}: must be between {lo} and {hi}")
    return value


def page(request: web.Request) -> tuple[int, int]:
    """(limit, offset) from ?limit=&offset=."""
    return (query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
            query_int(request, "offset", 0, 0, 10**9))


def paged(items: list[dict], total: int, limit: int, offset: int) -> dict[str, Any]:
    return {"items": items, "total": total, "limit": limit, "offset": offset}
