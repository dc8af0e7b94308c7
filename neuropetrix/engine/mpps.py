"""Modality Performed Procedure Steps: what a scanner says about the acquisition it performed.

A scanner creates a step (N-CREATE, "IN PROGRESS") when it starts and sets it "COMPLETED" or
"DISCONTINUED" (N-SET) when it ends, listing the images it made. A completed step lets the engine
complete its study as soon as those images have arrived, instead of waiting for the quiet time.
The SCP hands the decoded datasets here and sends back the DIMSE status these methods return.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.dicom_uids import InvalidUID, check_uid, new_uid
from neuropetrix.node.scp.status import (
    DUPLICATE_SOP_INSTANCE,
    INVALID_ATTRIBUTE_VALUE,
    NO_SUCH_SOP_INSTANCE,
    PROCESSING_FAILURE,
    SUCCESS,
)
from neuropetrix.store.db import utcnow
from neuropetrix.store.models import ProcedureStep

log = logging.getLogger("neuropetrix.engine")


STATES = ("IN PROGRESS", "COMPLETED", "DISCONTINUED")


@dataclass(frozen=True)
class StepAnswer:
    status: int
    sop_instance_uid: str = ""
    comment: str = ""


def _study_uid(ds: Dataset) -> str:
    for item in ds.get("ScheduledStepAttributesSequence", []):
        if item.get("StudyInstanceUID"):
            return str(item.StudyInstanceUID)
    return ""


def _referenced(ds: Dataset) -> list[str]:
    """SOP Instance UIDs of the images the step made (Performed Series Sequence)."""
    return [str(ref.ReferencedSOPInstanceUID)
            for series in ds.get("PerformedSeriesSequence", [])
            for ref in series.get("ReferencedImageSequence", []) if ref.get("ReferencedSOPInstanceUID")]


class ProcedureSteps:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def create(self, sop_instance_uid: str, ds: Dataset, calling_ae: str) -> StepAnswer:
        """N-CREATE: a new step, IN PROGRESS; the UID is ours to give when the scanner gave none."""
        uid = sop_instance_uid or new_uid()
        status = str(ds.get("PerformedProcedureStepStatus", "")).strip()
        if status != "IN PROGRESS":
            return StepAnswer(INVALID_ATTRIBUTE_VALUE, uid,
                              f"PerformedProcedureStepStatus {status!r} is not IN PROGRESS")
        try:
            check_uid(uid, "Affected SOP Instance UID")
        except InvalidUID as exc:
            return StepAnswer(INVALID_ATTRIBUTE_VALUE, "", str(exc))
        now = utcnow()
        try:
            with self.sessions.begin() as s:
                s.add(ProcedureStep(sop_instance_uid=uid, study_uid=_study_uid(ds), status=status,
                                    referenced=_referenced(ds), calling_ae=calling_ae, created_at=now,
                                    updated_at=now))
        except IntegrityError:
            return StepAnswer(DUPLICATE_SOP_INSTANCE, uid, "a procedure step with this UID exists")
        log.info("procedure step %s of study %s in progress (from %s)", uid, _study_uid(ds) or "?", calling_ae)
        return StepAnswer(SUCCESS, uid)

    def update(self, sop_instance_uid: str, ds: Dataset, calling_ae: str) -> StepAnswer:
        """N-SET: new attributes for a step in progress; COMPLETED or DISCONTINUED make it final."""
        status = str(ds.get("PerformedProcedureStepStatus", "")).strip()
        if status and status not in STATES:
            return StepAnswer(INVALID_ATTRIBUTE_VALUE, sop_instance_uid, f"PerformedProcedureStepStatus {status!r}")
        with self.sessions.begin() as s:
            step = s.scalars(select(ProcedureStep).where(
                ProcedureStep.sop_instance_uid == sop_instance_uid)).first()
            if step is None:
                return StepAnswer(NO_SUCH_SOP_INSTANCE, sop_instance_uid, "no such procedure step")
            if step.status != "IN PROGRESS":
                return StepAnswer(PROCESSING_FAILURE, sop_instance_uid, f"the step is already {step.status}")
            referenced = _referenced(ds)
            if referenced:
                step.referenced = referenced
            if _study_uid(ds):
                step.study_uid = _study_uid(ds)
            if status:
                step.status = status
            step.updated_at = utcnow()
            study, final = step.study_uid, step.status
        log.info("procedure step %s of study %s: %s (from %s)", sop_instance_uid, study or "?", final, calling_ae)
        return StepAnswer(SUCCESS, sop_instance_uid)
