"""The schema of physician review: one review per study, every version of its results, and the audit.

`reviews` holds the study's current state: the regions the automatic analysis found (`candidates`,
from its analysis.json), the physician's decision for each, the impression, the current version and
status, and the version being made, if any. `review_versions` keeps one row per version that was
made and delivered (never changed after). `review_actions` is the audit: who reviewed, changed and
signed what, and when; rows are only ever added (the migration adds triggers that refuse UPDATE and
DELETE, so not even a bug in the node can rewrite it). Times are naive UTC.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from neuropetrix.store.models import UID, Base


class Review(Base):
    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(UID, unique=True)
    status: Mapped[str] = mapped_column(String(16))              # preliminary | final | amended
    version: Mapped[int] = mapped_column(Integer)                 # the current (delivered) version
    candidates: Mapped[dict] = mapped_column(JSON, default=dict)  # {"lesions": [...], "physiological": [...]}
    candidates_version: Mapped[int] = mapped_column(Integer, default=1)   # whose files show them (key images)
    decisions: Mapped[dict] = mapped_column(JSON, default=dict)   # str(label) → lesion | rejected | physiological
    impression: Mapped[str] = mapped_column(Text, default="")
    pending_version: Mapped[int | None] = mapped_column(Integer, nullable=True)   # being made now
    pending_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    route: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class ReviewVersion(Base):
    __tablename__ = "review_versions"
    __table_args__ = (UniqueConstraint("study_uid", "version", name="uq_review_versions_study_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(UID, index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    analysis_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)   # its deliveries come after it
    signer_username: Mapped[str] = mapped_column(String(64), default="")
    signer_name: Mapped[str] = mapped_column(String(128), default="")
    signer_organisation: Mapped[str] = mapped_column(String(128), default="")
    decisions: Mapped[dict] = mapped_column(JSON, default=dict)
    impression: Mapped[str] = mapped_column(Text, default="")
    sr_uid: Mapped[str] = mapped_column(String(64), default="")
    seg_uid: Mapped[str] = mapped_column(String(64), default="")
    control_id: Mapped[str] = mapped_column(String(64), default="")             # MSH-10 of its ORU
    summary: Mapped[dict] = mapped_column(JSON, default=dict)                   # lesion count, TMTV, TLG
    created_at: Mapped[datetime] = mapped_column(DateTime)


class ReviewAction(Base):
    """One audited act: analysed, reviewed (decisions, impression), reanalysis, signed, version made."""

    __tablename__ = "review_actions"
    __table_args__ = (Index("ix_review_actions_study", "study_uid", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(UID)
    at: Mapped[datetime] = mapped_column(DateTime)
    username: Mapped[str] = mapped_column(String(64))            # "" for the node itself
    role: Mapped[str] = mapped_column(String(16), default="")
    action: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)                 # the version it concerns
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
