"""Reading what a request carries: JSON bodies and query parameters, with 400s that name the field."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from neuropetrix.api.context import CTX

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_ID = 2**63 - 1          # the largest row id SQLite and PostgreSQL (bigint) hold


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message)


def parse_json(raw: bytes, charset: str | None) -> Any:
    """The JSON document in `raw`; 400 for an unknown charset, bytes not in it, bad or too deeply nested JSON."""
    try:
        text = raw.decode(charset or "utf-8")
    except LookupError:
        raise bad_request(f"unknown charset {charset!r}; send UTF-8") from None
    except UnicodeDecodeError:
        raise bad_request(f"the body is not valid {charset or 'utf-8'}") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise bad_request("the body is JSON nested too deeply") from None
    except json.JSONDecodeError:
        raise bad_request("the body must be JSON") from None


async def read_body(request: web.Request, seconds: float) -> bytes:
    """The request's body, which must arrive within `seconds` (a trickled body holds a connection)."""
    try:
        async with asyncio.timeout(seconds):
            return await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(text=f"the body did not arrive within {seconds:g} s") from None


async def json_body(request: web.Request, required: tuple[str, ...] = ()) -> dict[str, Any]:
    body = parse_json(await read_body(request, request.app[CTX].settings.api.body_timeout_seconds),
                      request.charset)
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


def path_id(request: web.Request, name: str, what: str) -> int:
    """A row id from the path (the route's pattern makes it digits); 404 when no row can have it."""
    value = int(request.match_info[name])
    if value > MAX_ID:
        raise web.HTTPNotFound(text=f"no {what} {value}")
    return value


def page(request: web.Request) -> tuple[int, int]:
    """(limit, offset) from ?limit=&offset=."""
    return (query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
            query_int(request, "offset", 0, 0, 10**9))


def paged(items: list[dict], total: int, limit: int, offset: int) -> dict[str, Any]:
    return {"items": items, "total": total, "limit": limit, "offset": offset}
