"""/api/auth/*: log in, rotate the refresh token, log out (this login or every device), who am I."""
from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from neuropetrix.api.auth import AUTH, PRINCIPAL, AuthError, TokenPair, auth_error_response
from neuropetrix.api.database import DATABASE
from neuropetrix.api.endpoint import endpoint
from neuropetrix.api.params import Body, Text

routes = web.RouteTableDef()

class Login(Body):
    username: Text
    password: Text


class RefreshToken(Body):
    refresh_token: Text


class Me(BaseModel):
    id: int
    username: str
    role: str
    permissions: list[str]


def _address(request: web.Request) -> str:
    return request.remote or "unknown"


@routes.post("/api/auth/login")
@endpoint(body=Login, response=TokenPair)
async def login(request: web.Request, body: Login) -> web.Response:
    """Log in with a user name and password: an access token and a refresh token."""
    auth = request.app[AUTH]
    try:
        pair = await request.app[DATABASE](auth.login, body.username, body.password, _address(request))
    except AuthError as exc:
        return auth_error_response(exc)
    return web.json_response(pair.model_dump())


@routes.post("/api/auth/refresh")
@endpoint(body=RefreshToken, response=TokenPair)
async def refresh(request: web.Request, body: RefreshToken) -> web.Response:
    """Spend a refresh token for a new pair (a spent one presented again revokes its login)."""
    auth = request.app[AUTH]
    try:
        pair = await request.app[DATABASE](auth.refresh, body.refresh_token, _address(request))
    except AuthError as exc:
        return auth_error_response(exc)
    return web.json_response(pair.model_dump())


@routes.post("/api/auth/logout")
@endpoint(body=RefreshToken, status=204)
async def logout(request: web.Request, body: RefreshToken) -> web.Response:
    """End the login this refresh token belongs to."""
    await request.app[DATABASE](request.app[AUTH].logout, body.refresh_token)
    return web.Response(status=204)


@routes.post("/api/auth/logout-all")
@endpoint(None, status=204)
async def logout_all(request: web.Request) -> web.Response:
    """Every refresh token of the caller revoked and every access token refused: "log out all devices"."""
    auth, who = request.app[AUTH], request[PRINCIPAL]
    await request.app[DATABASE](auth.logout_everywhere, who.user_id)
    auth.forget_user(who.user_id)
    return web.Response(status=204)


@routes.get("/api/me")
@endpoint(None, response=Me)
async def me(request: web.Request) -> web.Response:
    """The caller's account, role and permissions."""
    who = request[PRINCIPAL]
    return web.json_response(Me(id=who.user_id, username=who.username, role=who.role,
                                permissions=sorted(who.permissions)).model_dump())
