"""Entity tags on JSON answers: a client that has the same body (If-None-Match) gets 304 and no body,
so a phone re-reading the study list or a study page on a slow link pays only for what changed.

The tag is a hash of the exact body, so it differs wherever the body does (by role, by page); answers
are `private, no-cache`: kept by the client, always revalidated."""
from __future__ import annotations

import hashlib

from aiohttp import web


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def json_with_etag(request: web.Request, body: bytes) -> web.Response:
    tag = etag_of(body)
    headers = {"ETag": tag, "Cache-Control": "private, no-cache", "Vary": "Authorization"}
    asked = [t.strip().removeprefix("W/") for t in request.headers.get("If-None-Match", "").split(",")]
    if tag in asked or "*" in asked:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)
