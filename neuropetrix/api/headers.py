"""Security headers on every response (dashboard, API, static files, errors, WebSocket handshakes):
the dashboard loads only its own script, style and images (MIPs as blob: URLs), talks only to its own
origin, and may not be framed; no response is content-sniffed or leaks the URL as a referrer."""
from __future__ import annotations

from aiohttp import web

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
                           "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Frame-Options": "DENY",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


async def add_security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs for every response, whichever handler or middleware made it."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
