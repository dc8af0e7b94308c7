"""/api/openapi.json: the OpenAPI 3.1 description, built from the app's own routes so that it cannot
drift from them (each handler's docstring and required permission), plus the parameters and bodies."""
from __future__ import annotations

import re
from typing import Any

from aiohttp import web

_STR = {"type": "string"}
_TOKENS = {"type": "object", "properties": {"access_token": _STR, "refresh_token": _STR,
                                             "token_type": {"const": "bearer"}, "expires_in": {"type": "integer"}}}
_PAGE = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
         {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}}]


def _q(*names: str) -> list[dict]:
    return [{"name": n, "in": "query", "schema": _STR} for n in names]


QUERY: dict[str, list[dict]] = {
    "/api/studies": _PAGE + _q("state", "modality", "patient_id", "accession_number", "date_from", "date_to", "q"),
    "/api/jobs": _PAGE + _q("state", "kind", "study_uid"),
    "/api/patients": _PAGE + _q("q"),
    "/api/ws": _q("token", "after"),
}


def _obj(*required: str, **props: dict) -> dict:
    return {"type": "object", "required": list(required), "properties": props}


BODIES: dict[tuple[str, str], dict] = {
    ("POST", "/api/auth/login"): _obj("username", "password", username=_STR, password=_STR),
    ("POST", "/api/auth/refresh"): _obj("refresh_token", refresh_token=_STR),
    ("POST", "/api/auth/logout"): _obj("refresh_token", refresh_token=_STR),
    ("POST", "/api/devices"): _obj("token", "platform", token=_STR,
                                   platform={"enum": ["android", "ios", "web"]}),
    ("POST", "/api/users"): _obj("username", "password", "role", username=_STR, password=_STR,
                                 role={"enum": ["admin", "physician", "technologist", "viewer"]},
                                 display_name=_STR, organisation=_STR),
    ("PATCH", "/api/users/{username}"): _obj(role=_STR, disabled={"type": "boolean"}, display_name=_STR,
                                             organisation=_STR),
}
_DECISION = _obj("label", "decision", label={"type": "integer"},
                 decision={"enum": ["lesion", "rejected", "physiological"]})
BODIES[("POST", "/api/studies/{study_uid}/review")] = _obj(
    decisions={"type": "array", "items": _DECISION}, impression=_STR,
    analysis=_obj(method={"enum": ["fixed", "percent_max", "percist", "model"]}, threshold={"type": "number"},
                  min_volume_ml={"type": "number"}, seed_threshold={"type": "number"}))
_REGION = _obj("label", "decision", label={"type": "integer"}, decision=_DECISION["properties"]["decision"])
_STATUS = {"enum": ["preliminary", "final", "amended"]}
RESPONSES: dict[tuple[str, str], dict] = {
    ("GET", "/api/studies/{study_uid}/review"): _obj(
        "status", "version", "lesions", "physiological", "totals", "audit", status=_STATUS,
        version={"type": "integer"}, pending_version={"type": ["integer", "null"]}, impression=_STR,
        lesions={"type": "array", "items": _REGION}, physiological={"type": "array", "items": _REGION},
        totals={"type": "object"}, versions={"type": "array"}, audit={"type": "array"}),
    ("POST", "/api/studies/{study_uid}/sign"): _obj("version", "status", version={"type": "integer"},
                                                    status=_STATUS, job={"type": "integer"}, state=_STR),
    ("GET", "/api/studies/{study_uid}/versions"): _obj("items", items={"type": "array"}),
    ("POST", "/api/auth/login"): _TOKENS,
    ("POST", "/api/auth/refresh"): _TOKENS,
}
RESPONSES[("POST", "/api/studies/{study_uid}/review")] = RESPONSES[("GET", "/api/studies/{study_uid}/review")]
_ERROR = {"description": "error", "content": {"application/json": {"schema": _obj(
    "status", "message", status={"type": "integer"}, message=_STR)}}}


def _paths(canonical: str) -> list[tuple[str, list[dict]]]:
    """aiohttp's /a/{x:regex} → OpenAPI's /a/{x} and its path parameters; a parameter that is an
    alternation of fixed names (mip\\.png|analysis\\.json) becomes one path per name."""
    fixed = re.search(r"\{\w+:((?:[\w-]|\\\.)+(?:\|(?:[\w-]|\\\.)+)+)\}", canonical)
    if fixed:
        return [p for name in fixed.group(1).replace("\\.", ".").split("|")
                for p in _paths(canonical[:fixed.start()] + name + canonical[fixed.end():])]
    names = re.findall(r"\{(\w+)(?::[^}]*)?\}", canonical)
    path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", canonical)
    return [(path, [{"name": n, "in": "path", "required": True, "schema": _STR} for n in names])]


def _operation(route: web.AbstractRoute, path: str, params: list[dict]) -> dict[str, Any]:
    handler = route.handler
    doc = (handler.__doc__ or handler.__name__.replace("_", " ")).strip().split("\n")[0]
    op: dict[str, Any] = {"summary": doc, "operationId": f"{route.method.lower()}_{path.strip('/').replace('/', '_')}",
                          "parameters": params + QUERY.get(path, []),
                          "responses": {"200": {"description": "success", "content": {"application/json": {
                              "schema": RESPONSES.get((route.method, path), {"type": "object"})}}},
                                        "default": _ERROR}}
    if hasattr(handler, "permission"):        # set by auth.requires
        op["security"] = [{"bearer": []}]
        op["x-permission"] = handler.permission or "any signed-in user"
    if (route.method, path) in BODIES:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": BODIES[(route.method, path)]}}}
    return op


def build(app: web.Application) -> dict[str, Any]:
    paths: dict[str, dict] = {}
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource else ""
        if route.method == "HEAD" or not (canonical.startswith("/api") or canonical in
                                           ("/healthz", "/readyz", "/metrics")):
            continue
        for path, params in _paths(canonical):
            paths.setdefault(path, {})[route.method.lower()] = _operation(route, path, params)
    return {"openapi": "3.1.0",
            "info": {"title": "NeuroPETRIX API", "version": "1",
                     "description": "DICOM node and HL7/FHIR integration engine for PET/CT: studies, results, "
                                    "jobs, live events (/api/ws) and push devices. Roles: docs/api.md."},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                          "bearerFormat": "JWT"}}},
            "paths": dict(sorted(paths.items()))}


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build(request.app))
