"""Durable work: jobs, per-destination back-off state and the engine's event cursor.

A job is one action of one route for one study (analyse, forward, HL7, FHIR, notify). It lives in the
database so that a crash, a restart or a second node never loses or repeats it. Destinations carry
the back-off state so that one dead peer delays only its own jobs. Times are naive UTC.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from neuropetrix.store.models import UID, Base

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
COMMITTING = "committing"      # stored; waiting for the PACS to answer the storage commitment request


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # one job per action of a route per completion event: handling an event twice adds nothing
        UniqueConstraint("source_event_id", "route", "action_index", name="uq_jobs_event_action"),
        Index("ix_jobs_state_next", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))              # analyze | forward | hl7 | fhir | notify
    study_uid: Mapped[str] = mapped_column(UID, index=True)
    route: Mapped[str] = mapped_column(String(64))
    action_index: Mapped[int] = mapped_column(Integer)
    source_event_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    destination: Mapped[str] = mapped_column(String(80), index=True)   # e.g. dicom:pacs, hl7:hbys
    objects: Mapped[list] = mapped_column(JSON, default=list)          # study | seg | sr | pdf | …
    params: Mapped[dict] = mapped_column(JSON, default=dict)           # the action as configured
    after_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=10)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    worker: Mapped[str] = mapped_column(String(80), default="")
    last_error: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict] = mapped_column(JSON, default=dict)          # what the destination answered
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Destination(Base):
    """Back-off state of one destination, shared by all its jobs."""

    __tablename__ = "destinations"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)     # consecutive
    blocked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class EngineCursor(Base):
    """The last event a consumer has handled, moved in the same transaction as what it did."""

    __tablename__ = "engine_cursors"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer, default=0)
