"""The schema of notifications: how each user is reached (`user_contacts`) and every notification
sent, with its state (`notifications`): queued → sent → acknowledged, or escalated to the next
person on call, or failed when no channel could reach the user. Migration 0012; times naive UTC."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from neuropetrix.store.models import UID, Base

QUEUED, SENT, ACKNOWLEDGED, ESCALATED, FAILED = "queued", "sent", "acknowledged", "escalated", "failed"
PRIORITIES = ("urgent", "high", "medium", "low")


class Contact(Base):
    """A user's e-mail, phone, quiet hours ("HH:MM" in notify.timezone) and preferred channels. An
    address the channel refused for good is marked (`*_failed`: why) and not used until it changes."""

    __tablename__ = "user_contacts"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), default="")
    phone: Mapped[str] = mapped_column(String(32), default="")
    quiet_from: Mapped[str] = mapped_column(String(5), default="")
    quiet_until: Mapped[str] = mapped_column(String(5), default="")
    channels: Mapped[list] = mapped_column(JSON, default=list)        # [] = whatever the route says
    email_failed: Mapped[str] = mapped_column(String(500), default="")
    phone_failed: Mapped[str] = mapped_column(String(500), default="")
    # place on the on-call list set from the dashboard (PUT /api/oncall); when any user has one, that
    # list replaces notify.oncall
    oncall_rank: Mapped[int | None] = mapped_column(Integer, nullable=True)

    @classmethod
    def blank(cls, user_id: int) -> Contact:
        return cls(user_id=user_id, email="", phone="", quiet_from="", quiet_until="", channels=[],
                   email_failed="", phone_failed="", oncall_rank=None)


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_due", "state", "escalate_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer, index=True)      # the `notification` event it tells of
    study_uid: Mapped[str] = mapped_column(UID, default="")
    route: Mapped[str] = mapped_column(String(64), default="")
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    priority: Mapped[str] = mapped_column(String(8))
    channels: Mapped[list] = mapped_column(JSON, default=list)      # those it was sent on
    state: Mapped[str] = mapped_column(String(16))
    escalate_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)   # urgent, not yet acked
    escalated_from: Mapped[int | None] = mapped_column(Integer, nullable=True)      # notification id
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    acked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    acked_by: Mapped[str] = mapped_column(String(64), default="")
