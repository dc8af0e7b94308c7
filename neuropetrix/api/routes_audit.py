"""`GET /api/audit`: the access audit trail for an administrator (store/audit.py), newest first.
There is no route that writes or changes it."""
from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from neuropetrix.api.auth import requires
from neuropetrix.api.context import CTX
from neuropetrix.api.params import bad_request, query_int
from neuropetrix.api.permissions import AUDIT_READ
from neuropetrix.store.audit import AuditTrail

routes = web.RouteTableDef()
AUDIT = web.AppKey("audit", AuditTrail)


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"since: {value!r} is not an ISO 8601 date or time") from None
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo else at


@routes.get("/api/audit")
@requires(AUDIT_READ)
async def audit(request: web.Request) -> web.Response:
    """?patient_id=&user=&action=&since=ISO&limit= → {"items": [{user, action, patient_id, study_uid,
    address, at, outcome, ...}]}."""
    q = request.query
    rows = await request.app[CTX].db.run(request.app[AUDIT].query, q.get("patient_id"), q.get("user"),
                                         _since(q.get("since")), q.get("action"),
                                         query_int(request, "limit", 500, 1, 10000))
    return web.json_response({"items": rows})
