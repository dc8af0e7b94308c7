"""/api/openapi.json: the OpenAPI 3.1 description, generated from the app's own routes and what each
handler declares with `api.endpoint` (permission, body, query and answer models, status), so it
cannot drift from what is enforced; each handler's docstring gives the summary."""
from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from neuropetrix.api.endpoint import PUBLIC, EndpointSpec

_ERROR = {"description": "error", "content": {"application/json": {"schema": {
    "type": "object", "required": ["status", "message"],
    "properties": {"status": {"type": "integer"}, "message": {"type": "string"}}}}}}


def _paths(canonical: str) -> list[tuple[str, list[dict]]]:
    """aiohttp's /a/{x:regex} → OpenAPI's /a/{x} and its path parameters; a parameter that is an
    alternation of fixed names (mip\\.png|analysis\\.json) becomes one path per name."""
    fixed = re.search(r"\{\w+:((?:[\w-]|\\\.)+(?:\|(?:[\w-]|\\\.)+)+)\}", canonical)
    if fixed:
        return [p for name in fixed.group(1).replace("\\.", ".").split("|")
                for p in _paths(canonical[:fixed.start()] + name + canonical[fixed.end():])]
    names = re.findall(r"\{(\w+)(?::[^}]*)?\}", canonical)
    path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", canonical)
    return [(path, [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names])]


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """`node` with every {"$ref": "#/$defs/X"} replaced by X, so each operation reads on its own."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rsplit("/", 1)[1]], defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema, inlined (pydantic's $defs resolved)."""
    schema = model.model_json_schema()
    return _inline(schema, schema.pop("$defs", {}))


def _query(model: type[BaseModel]) -> list[dict]:
    """A query model's fields as OpenAPI query parameters."""
    schema = _schema(model)
    required = set(schema.get("required", []))
    return [{"name": name, "in": "query", "required": name in required,
             **({"description": prop.pop("description")} if "description" in prop else {}), "schema": prop}
            for name, prop in schema["properties"].items()]


def _operation(route: web.AbstractRoute, path: str, params: list[dict]) -> dict[str, Any]:
    handler = route.handler
    spec: EndpointSpec | None = getattr(handler, "SPEC", None)
    summary, _, more = (handler.__doc__ or handler.__name__.replace("_", " ")).strip().partition("\n")
    status = str(spec.status if spec else 200)
    answer: dict[str, Any] = {"description": "success"}
    if status != "204":
        schema = _schema(spec.response) if spec and spec.response else {"type": "object"}
        answer["content"] = {"application/json": {"schema": schema}}
    op: dict[str, Any] = {"summary": summary.strip(), "operationId": f"{route.method.lower()}_"
                          f"{path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
                          "parameters": params + (_query(spec.query) if spec and spec.query else []),
                          "responses": {status: answer, "default": _ERROR}}
    if more.strip():
        op["description"] = " ".join(more.split())
    if spec and spec.permission != PUBLIC:
        op["security"] = [{"bearer": []}]
        op["x-permission"] = spec.permission or "any signed-in user"
    if spec and spec.body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _schema(spec.body)}}}
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
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
            "paths": dict(sorted(paths.items()))}


async def openapi(request: web.Request) -> web.Response:
    """This document."""
    return web.json_response(build(request.app))
