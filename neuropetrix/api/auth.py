"""Who is calling and whether they may: login, refresh-token rotation, logout, access-token checks,
and the rate limit on failed logins (per account and client address together, and per address)."""
from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from neuropetrix.api import users
from neuropetrix.api.database import DATABASE, Database
from neuropetrix.api.errors import json_error
from neuropetrix.api.event_feed import FeedItem
from neuropetrix.api.permissions import ROLE_PERMISSIONS
from neuropetrix.api.singleflight import SingleFlight
from neuropetrix.api.tokens import InvalidToken, TokenSigner, new_refresh_token, token_hash
from neuropetrix.config.settings import ApiSettings
from neuropetrix.store.accounts import RefreshToken, User
from neuropetrix.store.db import utcnow


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    role: str
    expires_at: int          # of the access token, Unix time

    @property
    def permissions(self) -> frozenset[str]:
        return ROLE_PERMISSIONS.get(self.role, frozenset())


class TokenPair(BaseModel):
    """What a login or a refresh answers."""

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds the access token is valid")


class LoginLimiter:
    """Failed logins within a sliding window, per account and client address together
    ("pair:NAME ADDRESS") and per address ("address:IP"). Not per account alone: whoever knows a user
    name could then lock that user out from anywhere. In memory: one node process answers the logins
    of its clients."""

    def __init__(self, per_pair: int, per_address: int, window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = {"pair": per_pair, "address": per_address}
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        cutoff = self.clock() - self.window
        while q and q[0] <= cutoff:
            q.popleft()
        return q

    @staticmethod
    def _keys(username: str, address: str) -> tuple[tuple[str, str], ...]:
        return ("pair", f"pair:{username.lower()} {address}"), ("address", f"address:{address}")

    def retry_after(self, username: str, address: str) -> float:
        """Seconds until a login may be tried again; 0 when it may be tried now."""
        wait = 0.0
        for kind, key in self._keys(username, address):
            q = self._recent(key)
            if len(q) >= self.limits[kind]:
                wait = max(wait, q[0] + self.window - self.clock())
        return wait

    def failed(self, username: str, address: str) -> None:
        now = self.clock()
        if len(self._failures) > 100_000:     # a flood of names: forget the oldest half of the keys
            for key in list(self._failures)[:50_000]:
                del self._failures[key]
        for _, key in self._keys(username, address):
            self._recent(key).append(now)

    def succeeded(self, username: str, address: str) -> None:
        self._failures.pop(self._keys(username, address)[0][1], None)


class AuthError(Exception):
    def __init__(self, status: int, message: str, retry_after: float = 0) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Auth:
    """Logins, refresh rotation and access checks. A checked access token is trusted for CHECK_SECONDS
    without asking the database again (the check costs a thread hop and a query on every request);
    revocations made through this node's API are forgotten at once, those made by another process (the
    `users` command, another node) when the feed brings their account.revoked event, and at the latest
    after CHECK_SECONDS. Concurrent requests with the same unchecked token share one check (the
    dashboards' requests all miss together when the second runs out). `clock` (Unix seconds) is the time
    tokens are issued and checked at; tests move it."""

    CHECK_SECONDS = 1.0

    def __init__(self, signer: TokenSigner, settings: ApiSettings, clock: Callable[[], float] = time.time) -> None:
        self.signer = signer
        self.clock = clock
        self._checked: dict[str, tuple[float, Principal]] = {}    # token → (when checked, principal)
        self._checks: SingleFlight[Principal] = SingleFlight()
        self._revocations = 0          # a check that started before a revocation is not remembered
        self.refresh_ttl = timedelta(days=settings.refresh_token_days)
        self.limiter = LoginLimiter(settings.login_failures_per_account, settings.login_failures_per_address,
                                    settings.login_window_seconds, clock)

    def _issue(self, s: Session, user: User, family: str, address: str) -> TokenPair:
        refresh = new_refresh_token()
        now = utcnow()
        s.add(RefreshToken(user_id=user.id, family=family, token_hash=token_hash(refresh), created_at=now,
                           expires_at=now + self.refresh_ttl, client_address=address[:64]))
        access = self.signer.issue(user.id, user.username, user.role, user.token_version, now=self.clock())
        return TokenPair(access_token=access, refresh_token=refresh, expires_in=self.signer.ttl)

    def login(self, s: Session, username: str, password: str, address: str) -> TokenPair:
        wait = self.limiter.retry_after(username, address)
        if wait > 0:
            raise AuthError(429, "too many failed logins; try again later", wait)
        user = users.verify_password(s, username, password)
        if user is None:
            self.limiter.failed(username, address)
            raise AuthError(401, "invalid user name or password")
        self.limiter.succeeded(username, address)
        user.last_login_at = utcnow()
        return self._issue(s, user, uuid.uuid4().hex, address)

    def refresh(self, s: Session, refresh_token: str, address: str) -> TokenPair:
        """Rotate: the presented token is spent and a new one issued in its family. A spent or revoked
        token presented again means it was copied, so the whole family is revoked."""
        row = s.scalars(select(RefreshToken).where(RefreshToken.token_hash == token_hash(refresh_token))).first()
        if row is None:
            raise AuthError(401, "unknown refresh token")
        now = utcnow()
        spent = s.execute(update(RefreshToken).where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None),
                                                     RefreshToken.revoked_at.is_(None))
                          .values(used_at=now)).rowcount
        if not spent:
            self._revoke_family(s, row.family, now)
            s.commit()                  # the revocation must outlive the refusal that follows
            raise AuthError(401, "refresh token already used or revoked; this login is now revoked")
        user = s.get(User, row.user_id)
        if row.expires_at <= now or user is None or user.disabled:
            raise AuthError(401, "refresh token expired or account disabled")
        return self._issue(s, user, row.family, address)

    @staticmethod
    def _revoke_family(s: Session, family: str, now: datetime) -> None:
        s.execute(update(RefreshToken).where(RefreshToken.family == family, RefreshToken.revoked_at.is_(None))
                  .values(revoked_at=now))

    def logout(self, s: Session, refresh_token: str) -> None:
        """Revoke this login (the token's family); unknown tokens are ignored, logging out is idempotent."""
        row = s.scalars(select(RefreshToken).where(RefreshToken.token_hash == token_hash(refresh_token))).first()
        if row is not None:
            self._revoke_family(s, row.family, utcnow())

    def logout_everywhere(self, s: Session, user_id: int) -> None:
        user = s.get(User, user_id)
        if user is not None:
            users.revoke_sessions(s, user)

    def principal(self, s: Session, access_token: str) -> Principal:
        """The caller of a valid access token whose account is enabled and not logged out since."""
        try:
            claims = self.signer.verify(access_token, now=self.clock())
        except InvalidToken as exc:
            raise AuthError(401, f"invalid access token: {exc}") from None
        user = s.get(User, claims.user_id)
        if user is None or user.disabled or user.token_version != claims.version:
            raise AuthError(401, "access token revoked")
        return Principal(user.id, user.username, user.role, claims.expires_at)


    def recently_checked(self, token: str) -> Principal | None:
        hit = self._checked.get(token)
        now = self.clock()
        if hit is None or not 0 <= now - hit[0] < self.CHECK_SECONDS or now >= hit[1].expires_at:
            return None
        return hit[1]

    async def check(self, token: str, db: Database) -> Principal:
        """The token's principal from the database (AuthError when it is not valid), remembered for
        CHECK_SECONDS unless an account was revoked meanwhile."""
        revocations = self._revocations
        principal = await self._checks((token, revocations), lambda: db(self.principal, token))
        if revocations == self._revocations:
            self.remember(token, principal)
        return principal

    def remember(self, token: str, principal: Principal) -> None:
        if len(self._checked) > 10_000:
            self._checked.clear()
        self._checked[token] = (self.clock(), principal)

    def seconds_left(self, principal: Principal) -> float:
        """Until the principal's access token expires (a WebSocket closes then)."""
        return principal.expires_at - self.clock()

    def forget_user(self, user_id: int) -> None:
        """This user's tokens were revoked here: check them against the database again."""
        self._revocations += 1
        self._checked = {t: hit for t, hit in self._checked.items() if hit[1].user_id != user_id}

    def on_events(self, items: list[FeedItem]) -> None:
        """Feed listener: forget the tokens of accounts revoked by any process (the `users` command)."""
        for item in items:
            if item.kind == users.ACCOUNT_REVOKED:
                self.forget_user(item.payload.get("user_id"))


def bearer_token(request: web.Request, allow_query: bool = False) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.query.get("token") if allow_query else None


def auth_error_response(exc: AuthError) -> web.Response:
    headers = {"Retry-After": str(max(1, int(exc.retry_after + 0.999)))} if exc.status == 429 else None
    if exc.status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="neuropetrix"'}
    return json_error(exc.status, str(exc), headers)


async def authenticate(request: web.Request, allow_query: bool = False) -> Principal:
    """The request's principal; raises AuthError(401) without a valid access token."""
    token = bearer_token(request, allow_query)
    if not token:
        raise AuthError(401, "missing bearer token")
    auth = request.app[AUTH]
    return auth.recently_checked(token) or await auth.check(token, request.app[DATABASE])


AUTH = web.AppKey("auth", Auth)
PRINCIPAL = web.RequestKey("principal", Principal)      # the caller, set by api.endpoint
