"""How a handler declares itself: who may call it, the pydantic models of its body, query and answer.

    @routes.post("/api/things")
    @endpoint(THINGS_WRITE, body=NewThing, response=Thing, status=201)
    async def add_thing(request: web.Request, body: NewThing) -> web.Response:
        \"\"\"Add a thing (the first line is its OpenAPI summary).\"\"\"

Before the handler runs, the caller is authenticated (401) and authorised (403) unless the permission
is PUBLIC (None: any signed-in user; the caller is then in request[PRINCIPAL]), the JSON body is parsed
and validated into `body`, and the query string into `query` (400 naming the field). The declaration
is kept on the handler (`SPEC`) for openapi.py, so the document is generated from what is enforced.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from neuropetrix.api.auth import PRINCIPAL, AuthError, auth_error_response, authenticate
from neuropetrix.api.errors import json_error
from neuropetrix.api.node_config import SETTINGS
from neuropetrix.api.params import bad_request, parse_json, read_body

PUBLIC = "public"            # no token needed (login, refresh, /healthz)
Handler = Callable[..., Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class EndpointSpec:
    permission: str | None       # None: any signed-in user
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int


def validation_message(exc: ValidationError) -> str:
    """'field: what is wrong' for each error, as the 400's message."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())


def validated(model: type[BaseModel], data: Any) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise bad_request(validation_message(exc)) from None


async def read_model(request: web.Request, model: type[BaseModel]) -> BaseModel:
    """The request's JSON body as `model`; 400 for anything else."""
    raw = await read_body(request, request.app[SETTINGS].api.body_timeout_seconds)
    doc = parse_json(raw, request.charset)
    if not isinstance(doc, dict):
        raise bad_request("the body must be a JSON object")
    return validated(model, doc)


def endpoint(permission: str | None = PUBLIC, *, body: type[BaseModel] | None = None,
             query: type[BaseModel] | None = None, response: type[BaseModel] | None = None,
             status: int = 200, token_in_query: bool = False) -> Callable[[Handler], Handler]:
    """Declare a handler's access and models (see the module's docstring); `token_in_query` also takes
    the access token from ?token= (WebSockets: browsers cannot set their headers)."""

    def wrap(handler: Handler) -> Handler:
        @wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            if permission != PUBLIC:
                try:
                    principal = await authenticate(request, allow_query=token_in_query)
                except AuthError as exc:
                    return auth_error_response(exc)
                if permission is not None and permission not in principal.permissions:
                    return json_error(403, f"role {principal.role} may not do this ({permission})")
                request[PRINCIPAL] = principal
            kwargs: dict[str, BaseModel] = {}
            if body is not None:
                kwargs["body"] = await read_model(request, body)
            if query is not None:
                # an empty parameter (?state=, as forms send) means "not given"
                kwargs["query"] = validated(query, {k: v for k, v in request.query.items() if v != ""})
            return await handler(request, **kwargs)

        checked.SPEC = EndpointSpec(permission, body, query, response, status)  # type: ignore[attr-defined]
        return checked
    return wrap
