"""/api/patients: the index's patients (Patient ID with its issuer), and one patient with every study
in date order, each with its analysis summary and review state: the follow-up timeline a physician
reads ("better or worse than last time?") and the data of its SUVmax / SULpeak / TMTV chart."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import Field
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from neuropetrix.api.auth import PRINCIPAL
from neuropetrix.api.database import DATABASE
from neuropetrix.api.endpoint import endpoint
from neuropetrix.api.node_config import SETTINGS, results_dir
from neuropetrix.api.params import Page, PageQuery, paged, path_id
from neuropetrix.api.permissions import RESULTS_READ, STUDIES_READ
from neuropetrix.reports.source import is_valid_tckn
from neuropetrix.store.models import Instance, Patient, Series, Study
from neuropetrix.store.reviews import Review

routes = web.RouteTableDef()


class PatientQuery(PageQuery):
    q: str | None = Field(None, max_length=200, description="a name fragment or an exact Patient ID")


def _patient_json(p: Patient, studies: int, last_study_date: str | None) -> dict[str, Any]:
    return {"id": p.id, "patient_id": p.patient_id, "issuer": p.issuer, "name": p.name,
            "birth_date": p.birth_date, "sex": p.sex, "tckn": is_valid_tckn(p.patient_id),
            "study_count": studies, "last_study_date": last_study_date or None}


def _list(s: Session, query: PatientQuery) -> dict[str, Any]:
    where = []
    if query.q:
        where.append(or_(Patient.name.ilike(f"%{query.q}%"), Patient.patient_id == query.q))
    counted = (select(Patient, func.count(Study.id), func.max(Study.study_date))
               .outerjoin(Study, Study.patient_pk == Patient.id).where(*where).group_by(Patient.id))
    total = s.scalar(select(func.count(Patient.id)).where(*where)) or 0
    rows = s.execute(counted.order_by(func.max(Study.study_date).desc(), Patient.id.desc())
                     .limit(query.limit).offset(query.offset)).all()
    return paged([_patient_json(p, n, last) for p, n, last in rows], total, query)


def _analysis_summary(results_dir: Path, study_uid: str) -> dict[str, Any] | None:
    """The numbers of the chart from analysis.json (None before an analysis)."""
    path = results_dir / study_uid / "analysis.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    response = doc.get("response")
    peaks = [les.get("suv_peak") for les in doc.get("lesions", []) if les.get("suv_peak") is not None]
    return {"suv_type": doc.get("suv_type"), "lesion_count": doc.get("lesion_count"), "suv_max": doc.get("suv_max"),
            "suv_peak": max(peaks, default=None), "tmtv_ml": doc.get("tmtv_ml"), "tlg_total": doc.get("tlg_total"),
            "response": None if response is None else {
                "criteria": response.get("criteria"), "category": response.get("category"),
                "prior_study_uid": response.get("prior_study_uid"),
                "sul_peak_after": response.get("sul_peak_after"), "percent_change": response.get("percent_change")}}


def _detail(s: Session, patient_pk: int) -> dict[str, Any] | None:
    patient = s.get(Patient, patient_pk)
    if patient is None:
        return None
    studies = s.scalars(select(Study).where(Study.patient_pk == patient.id)
                        .order_by(Study.study_date, Study.study_time, Study.id)).all()
    uids = [st.study_uid for st in studies]
    modalities: dict[int, set[str]] = {}
    for study_pk, modality in s.execute(select(Series.study_pk, Series.modality)
                                        .where(Series.study_pk.in_([st.id for st in studies])).distinct()):
        modalities.setdefault(study_pk, set()).add(modality)
    instances = dict(s.execute(select(Series.study_pk, func.count(Instance.id)).join(Instance)
                               .where(Series.study_pk.in_([st.id for st in studies])).group_by(Series.study_pk)).all())
    reviews = {r.study_uid: r for r in s.scalars(select(Review).where(Review.study_uid.in_(uids)))}
    out = _patient_json(patient, len(studies), max((st.study_date for st in studies), default=None))
    out["studies"] = [{
        "study_uid": st.study_uid, "study_date": st.study_date, "study_time": st.study_time,
        "accession_number": st.accession_number, "description": st.description, "state": st.state,
        "modalities": sorted(m for m in modalities.get(st.id, ()) if m), "instances": instances.get(st.id, 0),
        "review": None if st.study_uid not in reviews else {
            "status": reviews[st.study_uid].status, "version": reviews[st.study_uid].version},
    } for st in studies]
    return out


@routes.get("/api/patients")
@endpoint(STUDIES_READ, query=PatientQuery, response=Page)
async def patients(request: web.Request, query: PatientQuery) -> web.Response:
    """Patients, the most recently examined first; `q` finds a name fragment or an exact Patient ID."""
    return web.json_response(await request.app[DATABASE](_list, query))


@routes.get("/api/patients/{patient:\\d+}")
@endpoint(STUDIES_READ)
async def patient(request: web.Request) -> web.Response:
    """One patient with every study in date order; with results.read each study's analysis summary."""
    patient_pk = path_id(request, "patient", "patient")
    detail = await request.app[DATABASE](_detail, patient_pk)
    if detail is None:
        raise web.HTTPNotFound(text=f"no patient {patient_pk}")
    if RESULTS_READ in request[PRINCIPAL].permissions:
        folder = results_dir(request.app[SETTINGS])
        for study in detail["studies"]:
            study["analysis"] = _analysis_summary(folder, study["study_uid"])
    return web.json_response(detail)
