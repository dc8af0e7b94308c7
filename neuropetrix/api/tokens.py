"""Access tokens (short-lived HS256 JWTs, python-jose) and refresh tokens (opaque, stored hashed).

The signing key comes from the config or from a key file generated once in the data folder with mode
0600; there is no built-in default secret, so two installations never accept each other's tokens.
"""
from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from jose import JWTError, jwt

from neuropetrix.config.secrets import load_secret

ALGORITHM = "HS256"
KEY_FILE = "api_signing.key"
MAX_USER_ID = 2**63 - 1     # a database row id


class InvalidToken(Exception):
    """The token is malformed, tampered with, signed with another key or algorithm, or expired."""


def load_signing_key(configured: str | None, data_dir: Path) -> str:
    """The configured key, else the key file in `data_dir`, created (0600) on first use."""
    return load_secret(configured, data_dir / KEY_FILE)


@dataclass(frozen=True)
class AccessClaims:
    user_id: int
    username: str
    role: str
    version: int       # the user's token_version when issued
    expires_at: int    # Unix time


class TokenSigner:
    def __init__(self, key: str, ttl_seconds: int) -> None:
        self._key = key
        self.ttl = ttl_seconds

    def issue(self, user_id: int, username: str, role: str, version: int, now: float | None = None) -> str:
        iat = int(now if now is not None else time.time())
        claims = {"sub": str(user_id), "name": username, "role": role, "ver": version, "typ": "access",
                  "iat": iat, "exp": iat + self.ttl, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, token: str, now: float | None = None) -> AccessClaims:
        """Claims of a valid access token, unexpired at `now` (Unix time; default the clock's); only
        HS256 is accepted, so `alg: none` never passes."""
        try:
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM],
                                options={"require_exp": True, "require_iat": True, "require_sub": True,
                                         "verify_exp": False})     # checked below, against `now`
            if claims.get("typ") != "access":
                raise InvalidToken("not an access token")
            if int(claims["exp"]) <= (now if now is not None else time.time()):
                raise InvalidToken("Signature has expired.")
            user_id = int(claims["sub"])
            if not 0 < user_id <= MAX_USER_ID:
                raise InvalidToken(f"subject {str(claims['sub'])[:24]!r} is not a user id")
            return AccessClaims(user_id, str(claims["name"]), str(claims["role"]), int(claims["ver"]),
                                int(claims["exp"]))
        except (JWTError, KeyError, TypeError, ValueError) as exc:
            raise InvalidToken(str(exc) or type(exc).__name__) from None


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """SHA-256 hex: refresh and device tokens are looked up by this, never stored in the clear (refresh)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
