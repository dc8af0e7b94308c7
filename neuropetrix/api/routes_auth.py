"""/api/auth/*: log in, rotate the refresh token, log out (this login or every device), who am I."""
from __future__ import annotations

from aiohttp import web

from neuropetrix.api.auth import AuthError, auth_error_response, requires
from neuropetrix.api.context import CTX
from neuropetrix.api.params import json_body

routes = web.RouteTableDef()


def _address(request: web.Request) -> str:
    return request.remote or "unknown"


@routes.post("/api/auth/login")
async def login(request: web.Request) -> web.Response:
    body = await json_body(request, ("username", "password"))
    ctx = request.app[CTX]
    try:
        pair = await ctx.db(ctx.auth.login, body["username"], body["password"], _address(request))
    except AuthError as exc:
        return auth_error_response(exc)
    return web.json_response(pair.to_json())


@routes.post("/api/auth/refresh")
async def refresh(request: web.Request) -> web.Response:
    body = await json_body(request, ("refresh_token",))
    ctx = request.app[CTX]
    try:
        pair = await ctx.db(ctx.auth.refresh, body["refresh_token"], _address(request))
    except AuthError as exc:
        return auth_error_response(exc)
    return web.json_response(pair.to_json())


@routes.post("/api/auth/logout")
async def logout(request: web.Request) -> web.Response:
    body = await json_body(request, ("refresh_token",))
    ctx = request.app[CTX]
    await ctx.db(ctx.auth.logout, body["refresh_token"])
    return web.Response(status=204)


@routes.post("/api/auth/logout-all")
@requires(None)
async def logout_all(request: web.Request) -> web.Response:
    """Every refresh token of the caller revoked and every access token refused: "log out all devices"."""
    ctx = request.app[CTX]
    await ctx.db(ctx.auth.logout_everywhere, request["principal"].user_id)
    ctx.auth.forget_user(request["principal"].user_id)
    return web.Response(status=204)


@routes.get("/api/me")
@requires(None)
async def me(request: web.Request) -> web.Response:
    who = request["principal"]
    return web.json_response({"id": who.user_id, "username": who.username, "role": who.role,
                              "permissions": sorted(who.permissions)})
