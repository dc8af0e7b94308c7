"""Study assembly: a study is complete `study_quiet_seconds` after its last instance, or at once
when the scanner's procedure steps (MPPS) for it are final and every image they list has arrived.

Completion is a state change and a `study.complete` event written in one transaction; the same
study receiving more instances is re-opened by the index and completes again later.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.engine.clock import SYSTEM, Clock
from neuropetrix.engine.periodic import PeriodicThread
from neuropetrix.store.eventlog import EventKind, record
from neuropetrix.store.models import Instance, ProcedureStep, Series, Study

log = logging.getLogger("neuropetrix.engine")


def study_summary(s: Session, study_pk: int) -> dict:
    """Modalities, series and instance counts of one study."""
    modalities = sorted(m for m in s.scalars(
        select(Series.modality).where(Series.study_pk == study_pk).distinct()) if m)
    series = s.scalar(select(func.count(Series.id)).where(Series.study_pk == study_pk)) or 0
    instances = s.scalar(select(func.count(Instance.id)).join(Series)
                         .where(Series.study_pk == study_pk)) or 0
    return {"modalities": modalities, "series": series, "instances": instances}


def _performed(s: Session) -> list[tuple[int, str]]:
    """Receiving studies whose procedure steps are all final, one at least COMPLETED, and whose
    completed steps' images have all arrived."""
    rows = s.execute(select(Study.id, Study.study_uid, ProcedureStep.status, ProcedureStep.referenced)
                     .join(ProcedureStep, ProcedureStep.study_uid == Study.study_uid)
                     .where(Study.state == "receiving")).all()
    steps: dict[tuple[int, str], list[tuple[str, list[str]]]] = {}
    for pk, uid, status, referenced in rows:
        steps.setdefault((pk, uid), []).append((status, referenced or []))
    ready = []
    for (pk, uid), study_steps in steps.items():
        states = {status for status, _ in study_steps}
        if "IN PROGRESS" in states or "COMPLETED" not in states:
            continue
        wanted = {ref for status, refs in study_steps if status == "COMPLETED" for ref in refs}
        have = s.scalar(select(func.count(Instance.id)).where(Instance.sop_instance_uid.in_(wanted))) if wanted else 0
        if have == len(wanted):
            ready.append((pk, uid))
    return ready


class CompletionWatcher:
    def __init__(self, sessions: sessionmaker[Session], quiet_seconds: float, clock: Clock = SYSTEM) -> None:
        self.sessions = sessions
        self.clock = clock
        self.quiet = timedelta(seconds=quiet_seconds)
        self._thread = PeriodicThread("completion", min(1.0, self.quiet.total_seconds() / 4), self.sweep,
                                      "study completion sweep failed; will retry", log)

    def sweep(self, now: datetime | None = None) -> list[str]:
        """Complete every study quiet for long enough or performed in full; returns their UIDs."""
        now = now or self.clock.now()
        cutoff = now - self.quiet
        done: list[str] = []
        with self.sessions.begin() as s:
            quiet = s.execute(select(Study.id, Study.study_uid).where(
                Study.state == "receiving", Study.last_received_at <= cutoff)).all()
            candidates = [(pk, uid, "quiet") for pk, uid in quiet]
            candidates += [(pk, uid, "mpps") for pk, uid in _performed(s) if (pk, uid) not in quiet]
            for pk, uid, reason in candidates:
                condition = [Study.id == pk, Study.state == "receiving"]
                if reason == "quiet":
                    condition.append(Study.last_received_at <= cutoff)
                changed = s.execute(update(Study).where(*condition).values(
                    state="complete", completed_at=now, completion_count=Study.completion_count + 1)).rowcount
                if not changed:
                    continue
                summary = study_summary(s, pk)
                record(s, EventKind.STUDY_COMPLETE, uid, {**summary, "reason": reason}, now)
                done.append(uid)
                log.info("study %s complete (%s): %d series (%s), %d instances", uid,
                         "quiet time" if reason == "quiet" else "procedure step completed", summary["series"],
                         ", ".join(summary["modalities"]) or "-", summary["instances"])
        return done

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._thread.stop(timeout=5)
