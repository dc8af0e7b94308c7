"""Accounts: create, change password, change role, disable, list — shared by `neuropetrix users` and
the REST API. Passwords are hashed with argon2id; the hash is upgraded when its parameters age."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from neuropetrix.store.accounts import ROLES, RefreshToken, User
from neuropetrix.store.db import utcnow
from neuropetrix.store.eventlog import EventKind, record

# Written when an account's tokens are revoked, so that every process serving the API (the feed reads
# the log) forgets the account's checked tokens and closes its open WebSockets.
ACCOUNT_REVOKED = EventKind.ACCOUNT_REVOKED

MIN_PASSWORD = 8
_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_hasher = PasswordHasher()
# Verified when the user does not exist, so that a wrong name takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class AccountError(ValueError):
    """A request about an account that cannot be done; the message says why."""


@dataclass(frozen=True)
class UserInfo:
    id: int
    username: str
    role: str
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None
    display_name: str = ""
    organisation: str = ""

    @classmethod
    def of(cls, u: User) -> UserInfo:
        return cls(u.id, u.username, u.role, u.disabled, u.created_at, u.last_login_at, u.display_name or "",
                   u.organisation or "")

    def to_json(self) -> dict:
        return {"id": self.id, "username": self.username, "role": self.role, "disabled": self.disabled,
                "created_at": self.created_at.isoformat() + "Z",
                "last_login_at": self.last_login_at.isoformat() + "Z" if self.last_login_at else None,
                "display_name": self.display_name, "organisation": self.organisation}


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password too short: at least {MIN_PASSWORD} characters")


def check_role(role: str) -> None:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")


def _get(s: Session, username: str) -> User:
    user = s.scalars(select(User).where(User.username == username)).first()
    if user is None:
        raise AccountError(f"no user named {username!r}")
    return user


def revoke_sessions(s: Session, user: User) -> None:
    """Log the user out everywhere: refresh tokens revoked, access tokens refused from now on, open
    WebSockets closed (by the API processes, on the account.revoked event)."""
    now = utcnow()
    s.execute(update(RefreshToken).where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
              .values(revoked_at=now))
    user.token_version += 1
    record(s, ACCOUNT_REVOKED, None, {"user_id": user.id, "username": user.username}, at=now)


def check_label(name: str, value: str) -> str:
    """A display name or organisation as a signed report prints it: one line, at most 64 characters
    (a DICOM PN component group and LO hold 64)."""
    value = value.strip()
    if len(value) > 64 or any(c in value for c in "\r\n\\^="):
        raise AccountError(f"{name}: one line of at most 64 characters without \\ ^ =")
    return value


def add_user(s: Session, username: str, password: str, role: str, display_name: str = "",
             organisation: str = "") -> UserInfo:
    if not _USERNAME.match(username):
        raise AccountError("user names are 1-64 letters, digits and _ . @ -")
    check_role(role)
    check_password(password)
    if s.scalars(select(User.id).where(User.username == username)).first() is not None:
        raise AccountError(f"user {username!r} exists")
    user = User(username=username, password_hash=_hasher.hash(password), role=role, disabled=False,
                token_version=0, created_at=utcnow(), display_name=check_label("display_name", display_name),
                organisation=check_label("organisation", organisation))
    s.add(user)
    s.flush()
    return UserInfo.of(user)


def set_password(s: Session, username: str, password: str) -> None:
    check_password(password)
    user = _get(s, username)
    user.password_hash = _hasher.hash(password)
    revoke_sessions(s, user)


def update_user(s: Session, username: str, role: str | None = None,
                disabled: bool | None = None, display_name: str | None = None,
                organisation: str | None = None) -> UserInfo:
    user = _get(s, username)
    if display_name is not None:
        user.display_name = check_label("display_name", display_name)
    if organisation is not None:
        user.organisation = check_label("organisation", organisation)
    if role is not None and role != user.role:
        check_role(role)
        user.role = role
        revoke_sessions(s, user)
    if disabled is not None and disabled != user.disabled:
        user.disabled = disabled
        if disabled:
            revoke_sessions(s, user)
    return UserInfo.of(user)


def list_users(s: Session) -> list[UserInfo]:
    return [UserInfo.of(u) for u in s.scalars(select(User).order_by(User.username))]


def verify_password(s: Session, username: str, password: str) -> User | None:
    """The enabled user whose password this is, else None (in the same time either way)."""
    user = s.scalars(select(User).where(User.username == username)).first()
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or user.disabled:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user
