"""Reading what a request carries: bodies (in time, in a known charset, not nested too deeply), row ids
in paths, and the paging every list shares; 400s that say what is wrong."""
from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

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


def path_id(request: web.Request, name: str, what: str) -> int:
    """A row id from the path (the route's pattern makes it digits); 404 when no row can have it."""
    value = int(request.match_info[name])
    if value > MAX_ID:
        raise web.HTTPNotFound(text=f"no {what} {value}")
    return value


Text = Annotated[str, Field(min_length=1)]      # a required, non-empty string


class Body(BaseModel):
    """A request body: unknown fields are refused rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")


class PageQuery(BaseModel):
    """?limit=&offset= of every list."""

    model_config = ConfigDict(extra="ignore")
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=10**9)


class Page(BaseModel):
    """A page of a list: the items, how many there are in all, and which page this is."""

    items: list[dict]
    total: int
    limit: int
    offset: int


def paged(items: list[dict], total: int, page: PageQuery) -> dict[str, Any]:
    return {"items": items, "total": total, "limit": page.limit, "offset": page.offset}
