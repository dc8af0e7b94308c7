"""A completed PET study's priors: the same patient's earlier PET studies, those the node holds and,
with `priors.peer` configured, those the PACS holds, fetched before the analysis compares with one.

Fetching is a durable job of its own (kind `priors`, destination `dicom:<peer>`, so it shares the
PACS's back-off with forwards to it), made with the analysis job of a route and ahead of it
(`after_id`), so it has the queue's attempts, back-off and lease. It C-FINDs the patient's studies
on the peer (Study Root, STUDY level, by Patient ID), keeps the earlier PET studies the node lacks
(the latest `priors.studies` of them; a study whose answer has no ModalitiesInStudy, which many PACS
leave out, is asked for its series' Modality by a SERIES-level C-FIND) and C-MOVEs each to this
node's own AE title: the node's SCP stores them like any instance, and a C-MOVE's Success means
they are all stored and indexed. Each study is recorded as `study.prior_requested` before it is
asked for, so that its arrival is not routed like a new study (it would be forwarded and reported
again). A fetch parked as failed does not hold the analysis back: it runs with the priors the node
has (jobs.py).

The analysis then compares with the latest earlier PET study of the patient that the node holds
(`held_prior`), analysed with the current study's settings (engine/offline.py).
"""
from __future__ import annotations

import logging

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.config.settings import Peer, Settings, TlsSettings
from neuropetrix.engine.jobs import PRIORS_KIND, Claimed, JobFailure
from neuropetrix.node.scu.query import find, move
from neuropetrix.store.eventlog import EventKind, record
from neuropetrix.store.models import Event, Patient, Series, Study

log = logging.getLogger("neuropetrix.engine")
KIND = PRIORS_KIND
PET = "PT"


def _when(date: str, time: str) -> tuple[str, str]:
    """A study's moment as sortable text (DA, TM without its fraction's trailing part)."""
    return (date or "").strip(), (time or "").strip().replace(":", "").split(".")[0].ljust(6, "0")


def held_prior(s: Session, study_uid: str) -> str | None:
    """The latest PET study of the same patient, earlier than `study_uid`, that the node holds."""
    current = s.scalars(select(Study).where(Study.study_uid == study_uid)).first()
    if current is None:
        return None
    now = _when(current.study_date, current.study_time)
    has_pet = exists().where(Series.study_pk == Study.id, Series.modality == PET)
    candidates = s.scalars(select(Study).where(Study.patient_pk == current.patient_pk, Study.id != current.id,
                                               Study.study_date != "", has_pet)).all()
    earlier = [c for c in candidates if _when(c.study_date, c.study_time) < now]
    return max(earlier, key=lambda c: _when(c.study_date, c.study_time)).study_uid if earlier else None


def retrieved_as_prior(s: Session, study_uid: str) -> bool:
    """Whether the node asked for this study as another study's prior (so it is not routed)."""
    return s.scalar(select(exists().where(Event.kind == str(EventKind.PRIOR_REQUESTED),
                                          Event.study_uid == study_uid))) or False


def _query(patient: Patient) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = patient.patient_id
    if patient.issuer:
        ds.IssuerOfPatientID = patient.issuer
    ds.StudyInstanceUID = ds.StudyDate = ds.StudyTime = ds.ModalitiesInStudy = ""
    return ds


def _series_query(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel, ds.StudyInstanceUID = "SERIES", study_uid
    ds.SeriesInstanceUID = ds.Modality = ""
    return ds


def _modalities(match: Dataset) -> list[str]:
    """A study-level answer's ModalitiesInStudy; [] when absent or empty."""
    value = match.get("ModalitiesInStudy", "")
    return [str(m) for m in value] if isinstance(value, MultiValue) else [str(value)] if value else []


def _study_modalities(peer: Peer, calling_ae: str, match: Dataset, tls: TlsSettings | None) -> list[str]:
    """The modalities of a study the PACS answered: its ModalitiesInStudy, or its series' Modality
    (a SERIES-level C-FIND) when the PACS left ModalitiesInStudy out."""
    modalities = _modalities(match)
    if modalities:
        return modalities
    series = find(peer, calling_ae, _series_query(str(match.StudyInstanceUID)), tls=tls)
    return sorted({str(m.get("Modality", "") or "") for m in series} - {""})


class PriorFetcher:
    """Runs `priors` jobs: finds the patient's earlier PET studies on the PACS and moves them here."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions

    def run(self, job: Claimed) -> dict:
        try:
            peer = self.settings.peer(job.params["peer"])
        except KeyError as exc:                 # the configuration changed since the job was made
            raise JobFailure(exc.args[0], permanent=True) from None
        with self.sessions() as s:
            current = s.scalars(select(Study).where(Study.study_uid == job.study_uid)).first()
            if current is None:
                raise JobFailure(f"study {job.study_uid} is not in the index", permanent=True)
            patient = current.patient
            if not patient.patient_id:
                return {"found": 0, "retrieved": [], "reason": "the study has no Patient ID to look for"}
            identifier, now = _query(patient), _when(current.study_date, current.study_time)
            held = set(s.scalars(select(Study.study_uid).where(Study.patient_pk == patient.id)))
        ae_title, tls = self.settings.node.ae_title, self.settings.node.tls
        matches = find(peer, ae_title, identifier, tls=tls)
        wanted = []
        for match in matches:
            uid = str(match.get("StudyInstanceUID", "") or "")
            if not uid or uid in held or str(match.get("PatientID", "")) != patient.patient_id:
                continue
            when = _when(str(match.get("StudyDate", "") or ""), str(match.get("StudyTime", "") or ""))
            if when[0] and when < now and PET in _study_modalities(peer, ae_title, match, tls):
                wanted.append((when, uid))
        wanted = [uid for _, uid in sorted(wanted, reverse=True)[:self.settings.priors.studies]]
        for uid in wanted:
            with self.sessions.begin() as s:     # before the C-MOVE: its instances may arrive at once
                if not retrieved_as_prior(s, uid):
                    record(s, EventKind.PRIOR_REQUESTED, uid, {"for": job.study_uid, "peer": peer.name,
                                                               "job": job.id})
            request = Dataset()
            request.QueryRetrieveLevel, request.StudyInstanceUID = "STUDY", uid
            outcome = move(peer, ae_title, ae_title, request, self.settings.priors.timeout, tls)
            if not outcome.ok:
                unknown = outcome.status == 0xA801
                raise JobFailure(
                    f"{peer.name} could not move prior study {uid} to {ae_title}: status 0x{outcome.status:04X}"
                    f"{' (it does not know this node as a modality)' if unknown else ''}, {outcome.completed} "
                    f"sent, {outcome.failed} failed {outcome.comment}".strip(), permanent=unknown)
            log.info("job %d: prior study %s of study %s fetched from %s (%d instance(s))", job.id, uid,
                     job.study_uid, peer.name, outcome.completed + outcome.warning)
        return {"found": len(matches), "retrieved": wanted}
