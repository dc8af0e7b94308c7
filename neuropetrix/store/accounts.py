"""The schema of the clinicians' side: accounts, refresh tokens and push devices (whose messages are
durable jobs of kind "push", see engine/push_jobs.py).

Kept apart from store/models.py (the index) so that accounts evolve on their own migration branch
(0003). Times are naive UTC like the rest of the database.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from neuropetrix.store.models import Base

ROLES = ("admin", "physician", "technologist", "viewer")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Carried in every access token: bumping it (disable, password change, "log out all my devices")
    # makes every access token issued before refused at once, not only when it expires.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # How a signed report names the user (the SR's Verifying Observer Name and Organization); 0010.
    display_name: Mapped[str] = mapped_column(String(128), default="", server_default="")
    organisation: Mapped[str] = mapped_column(String(128), default="", server_default="")


class RefreshToken(Base):
    """One refresh token, stored as its SHA-256. Rotation issues a new one in the same family; a token
    presented again after it was used means it leaked, and the whole family is revoked."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family: Mapped[str] = mapped_column(String(32), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    client_address: Mapped[str] = mapped_column(String(64), default="")


class Device(Base):
    """A phone or browser that receives push notifications for one user."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(String(16))        # android | ios | web
    token: Mapped[str] = mapped_column(String(4096))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)   # FCM tokens are long: index a hash
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime)

