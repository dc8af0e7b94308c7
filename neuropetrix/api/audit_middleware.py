"""The API's part of the access audit trail: every request that reads or acts on patient data
(studies, results, downloads, review and sign-off, orders and HL7 messages, the WebSocket, the audit
itself) and every login is recorded (store/audit.py) with the user, the client address, the study
and the outcome — after the handler answered, before the answer leaves.

Behind a reverse proxy the client is the proxy; `audit.trusted_proxies` names the proxies whose
`X-Forwarded-For` is believed: the request is then handled as from the address the proxy saw (the
login rate limits and refresh tokens use it too). From any other caller the header is ignored.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from neuropetrix.api.auth import PRINCIPAL, AuthError, authenticate
from neuropetrix.api.database import DATABASE
from neuropetrix.api.group_commit import GroupCommit
from neuropetrix.api.node_config import SETTINGS
from neuropetrix.api.params import MAX_ID, parse_json, read_body
from neuropetrix.store.audit import FAILURE, SUCCESS, Access, AuditTrail

DOWNLOADS = frozenset({"seg.dcm", "sr.dcm", "report.pdf"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AUDIT = web.AppKey("audit", AuditTrail)

# (method, route's canonical form) → action; routes not here are not patient data (health, config, ...)
_ACTIONS: dict[tuple[str, str], str] = {
    ("GET", "/api/studies"): "read",
    ("GET", "/api/studies/{study_uid}"): "read",
    ("GET", "/api/studies/{study_uid}/{name}"): "read",      # MIP, analysis.json; "download" for files
    ("GET", "/api/studies/{study_uid}/review"): "read",
    ("GET", "/api/studies/{study_uid}/versions"): "read",
    ("GET", "/api/studies/{study_uid}/review/{kind}-{label}.png"): "read",
    ("POST", "/api/studies/{study_uid}/review"): "review",
    ("POST", "/api/studies/{study_uid}/sign"): "sign",
    ("GET", "/api/orders"): "read",
    ("GET", "/api/worklist"): "read",
    ("GET", "/api/reconcile"): "read",
    ("POST", "/api/reconcile/{study_uid}"): "reconcile",
    ("GET", "/api/hl7/messages"): "read",
    ("GET", "/api/patients"): "read",
    ("GET", "/api/patients/{patient}"): "read",
    ("GET", "/api/notifications"): "read",
    ("GET", "/api/sync"): "read",                             # the offline catch-up of the event stream
    ("GET", "/api/ws"): "subscribe",
    ("GET", "/api/audit"): "audit",
    ("POST", "/api/auth/login"): "login",
}


def _networks(items: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(item, strict=False) for item in items]


def _trusted(address: str, proxies: list) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies if net.version == ip.version)


def client_address(remote: str, forwarded_for: str | None, proxies: list) -> str:
    """The client: the right-most X-Forwarded-For hop that is not one of our proxies, when the
    connection comes from one of them; the connection's own address otherwise."""
    if not forwarded_for or not _trusted(remote, proxies):
        return remote
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _trusted(hop, proxies):
            return hop
    return remote


async def _who(request: web.Request, action: str) -> str:
    """The user: the handler's principal; else whoever the token names (a 403: known but not
    allowed); for a login, the account tried."""
    principal = request.get(PRINCIPAL)
    if principal is not None:
        return principal.username
    if action == "login":
        return await _login_user(request)
    try:
        return (await authenticate(request)).username
    except (AuthError, SQLAlchemyError):     # a database that is down: the row says "?", the answer stands
        return ""


async def _login_user(request: web.Request) -> str:
    """The user name a login tried, read as the login handler reads it (in time, any JSON refused
    the same way): a body the handler refused names no one."""
    try:
        body = parse_json(await read_body(request, request.app[SETTINGS].api.body_timeout_seconds),
                          request.charset)
    except web.HTTPException:
        return "?"
    return str(body.get("username", "?"))[:64] if isinstance(body, dict) else "?"


def audit_middleware(trusted_proxies: list[str]) -> Callable:
    proxies = _networks(trusted_proxies)
    writes: GroupCommit[Access] = GroupCommit()     # this app's rows: one commit for those that arrive together

    @web.middleware
    async def audited(request: web.Request, handler: Handler) -> web.StreamResponse:
        remote = request.remote or "unknown"
        address = client_address(remote, request.headers.get("X-Forwarded-For"), proxies)
        if address != remote:
            request = request.clone(remote=address)
        route = request.match_info.route.resource
        action = _ACTIONS.get((request.method, route.canonical)) if route is not None else None
        if action is None:
            return await handler(request)
        if request.match_info.get("name") in DOWNLOADS:
            action = "download"
        who = ""
        if action == "subscribe":      # the stream lives long: recorded when it starts
            try:
                who = (await authenticate(request, allow_query=True)).username
            except AuthError:
                pass
            await _record(writes, request, action, who, SUCCESS if who else FAILURE, address)
            return await handler(request)
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)    # errors_and_timing, inside, answers every error
            return response
        finally:
            status = response.status if response is not None else 500
            await _record(writes, request, action, await _who(request, action),
                          SUCCESS if status < 400 else FAILURE,
                          address, f"{request.method} {request.path_qs} → {status}")

    return audited


async def _record(writes: GroupCommit[Access], request: web.Request, action: str, who: str, outcome: str,
                  address: str, detail: str = "") -> None:
    patient = request.match_info.get("patient", "")     # /api/patients/{patient}: the row's id, digits
    patient_pk = int(patient) if patient and len(patient) <= 19 and int(patient) <= MAX_ID else None
    access = Access(who or "?", "user", action, outcome, address, study_uid=request.match_info.get("study_uid", ""),
                    detail=detail or request.path_qs, patient_pk=patient_pk)
    app = request.app
    await writes(access, lambda batch: app[DATABASE].run(app[AUDIT].record_many, batch))
