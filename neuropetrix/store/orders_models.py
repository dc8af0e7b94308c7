"""What the HBYS tells the node: its patients, its orders (each one scheduled procedure step of the
worklist), every HL7 message received with the ACK it got, and which order each study belongs to.

These are the hospital's records, kept apart from `patients`/`studies` (what the images say), so the
node can compare the two and never overwrite what a scanner sent. Times are naive UTC.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from neuropetrix.store.models import UID, Base

# Order states, in the order a procedure goes through them (dcm4chee-arc's MWL item states).
SCHEDULED, ARRIVED, IN_PROGRESS, COMPLETED = "scheduled", "arrived", "in progress", "completed"
CANCELLED, DISCONTINUED = "cancelled", "discontinued"
OPEN_STATES = (SCHEDULED, ARRIVED, IN_PROGRESS)

# Reconciliation of a study with an order.
MATCHED, LINKED, UNORDERED = "matched", "linked", "unordered"     # settled: the study may be delivered
UNMATCHED, MISMATCH = "unmatched", "mismatch"                     # on the reconcile list, held
SETTLED = (MATCHED, LINKED, UNORDERED)


class HbysPatient(Base):
    """A patient as the HBYS identifies and names them (PID), merged ones pointing at the survivor."""

    __tablename__ = "hbys_patients"
    __table_args__ = (UniqueConstraint("patient_id", "issuer", name="uq_hbys_patient_identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(64), default="")          # PID-3.4 (e.g. TCKN)
    identifier_type: Mapped[str] = mapped_column(String(16), default="")  # PID-3.5 (NNTUR, PI, …)
    identifiers: Mapped[list] = mapped_column(JSON, default=list)       # every PID-3 repetition as sent
    name: Mapped[str] = mapped_column(String(324), default="")           # DICOM PN: family^given^middle
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    merged_into: Mapped[int | None] = mapped_column(ForeignKey("hbys_patients.id"), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class Order(Base):
    """One imaging order and its one scheduled procedure step (what the worklist offers)."""

    __tablename__ = "orders"
    __table_args__ = (UniqueConstraint("placer_number", "placer_authority", name="uq_order_placer"),
                      Index("ix_orders_status_start", "status", "scheduled_start"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    placer_number: Mapped[str] = mapped_column(String(64))              # ORC-2.1
    placer_authority: Mapped[str] = mapped_column(String(64), default="")  # ORC-2.2 (sending application)
    filler_number: Mapped[str] = mapped_column(String(64), default="")  # ORC-3.1
    accession_number: Mapped[str] = mapped_column(String(16), index=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("hbys_patients.id"), index=True)
    study_uid: Mapped[str] = mapped_column(UID, index=True)              # ours unless the HBYS gave one
    requested_procedure_id: Mapped[str] = mapped_column(String(16), default="")
    sps_id: Mapped[str] = mapped_column(String(16), default="")
    procedure_code: Mapped[str] = mapped_column(String(64), default="")    # OBR-4.1 (LOINC)
    procedure_text: Mapped[str] = mapped_column(String(200), default="")
    procedure_system: Mapped[str] = mapped_column(String(20), default="")  # OBR-4.3 (LN)
    sut_code: Mapped[str] = mapped_column(String(64), default="")          # OBR-44 or OBR-4.4 (SUT)
    sut_text: Mapped[str] = mapped_column(String(200), default="")
    ordering_physician: Mapped[str] = mapped_column(String(324), default="")   # DICOM PN
    referring_physician: Mapped[str] = mapped_column(String(324), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    station_ae: Mapped[str] = mapped_column(String(16), default="")
    scheduled_start: Mapped[str] = mapped_column(String(14), default="")   # YYYYMMDDHHMMSS, local time
    admission_id: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16), default=SCHEDULED)
    hl7_version: Mapped[str] = mapped_column(String(8), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class Hl7Message(Base):
    """An HL7 message as it arrived (bytes), stored before it is acknowledged, with its ACK."""

    __tablename__ = "hl7_messages"
    __table_args__ = (Index("ix_hl7_messages_control", "sender", "control_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime)
    peer: Mapped[str] = mapped_column(String(64), default="")            # the caller's address
    sender: Mapped[str] = mapped_column(String(200), default="")         # MSH-3^MSH-4
    control_id: Mapped[str] = mapped_column(String(64), default="")      # MSH-10
    message_type: Mapped[str] = mapped_column(String(32), default="")    # MSH-9, e.g. ORM^O01
    charset: Mapped[str] = mapped_column(String(32), default="")         # the codec used to decode it
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    ack_code: Mapped[str] = mapped_column(String(2), default="")         # AA | AE | AR; "" = not yet answered
    ack: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")
    duplicate_of: Mapped[int | None] = mapped_column(Integer, nullable=True)


class StudyOrder(Base):
    """Which order a received study belongs to, how that was decided, and what differs."""

    __tablename__ = "study_orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(UID, unique=True)
    order_pk: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), nullable=True, index=True)
    # matched | linked | unordered (settled) | unmatched | mismatch (on the reconcile list)
    state: Mapped[str] = mapped_column(String(16), index=True)
    # accession | study_uid | patient_date_modality | user
    matched_by: Mapped[str] = mapped_column(String(32), default="")
    differences: Mapped[list] = mapped_column(JSON, default=list)    # attribute names where images and order differ
    held: Mapped[int] = mapped_column(Integer, default=0)             # 1 = its completion waits for the link
    resolved_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
