"""`GET /api/audit`: the access audit trail for an administrator (store/audit.py), newest first.
There is no route that writes or changes it."""
from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from neuropetrix.api.audit_middleware import AUDIT
from neuropetrix.api.database import DATABASE
from neuropetrix.api.endpoint import endpoint
from neuropetrix.api.permissions import AUDIT_READ

routes = web.RouteTableDef()


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    patient_id: str | None = Field(None, max_length=64)
    user: str | None = Field(None, max_length=64, description="a user name or a calling AE title")
    action: str | None = Field(None, max_length=32, description="read, download, sign, forward, c-find, ...")
    since: datetime | None = Field(None, description="ISO 8601; without a zone it is UTC")
    limit: int = Field(500, ge=1, le=10_000)

    @field_validator("since")
    @classmethod
    def _utc(cls, at: datetime | None) -> datetime | None:
        """The trail stores naive UTC."""
        return at.astimezone(UTC).replace(tzinfo=None) if at is not None and at.tzinfo else at


class AuditRows(BaseModel):
    items: list[dict] = Field(description="{user, user_kind, action, outcome, patient_id, study_uid, "
                                          "address, at, detail}, newest first")


@routes.get("/api/audit")
@endpoint(AUDIT_READ, query=AuditQuery, response=AuditRows)
async def audit(request: web.Request, query: AuditQuery) -> web.Response:
    """The access audit trail, newest first, filtered by patient, user, action and time."""
    rows = await request.app[DATABASE].run(request.app[AUDIT].query, query.patient_id, query.user,
                                           query.since, query.action, query.limit)
    return web.json_response({"items": rows})
