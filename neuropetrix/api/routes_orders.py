"""/api/orders, /api/worklist, /api/reconcile, /api/hl7/messages: the HBYS side of the node.

Orders with their state; the worklist exactly as a scanner's C-FIND sees it (the same provider);
the reconcile list, where a technologist links a study to an order or confirms it as unordered (a
held study is routed at once); the HL7 messages received, with the ACK each got (administrators:
they hold patient data as sent).
"""
from __future__ import annotations

import json
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field, StrictBool, StrictInt, model_validator
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from neuropetrix.api.auth import PRINCIPAL
from neuropetrix.api.database import DATABASE
from neuropetrix.api.endpoint import endpoint
from neuropetrix.api.params import Body, Page, PageQuery, paged
from neuropetrix.api.permissions import HL7_READ, ORDERS_READ, ORDERS_RECONCILE
from neuropetrix.api.routes_studies import _uid
from neuropetrix.engine.hl7in import CODECS_IN
from neuropetrix.engine.orders import link
from neuropetrix.engine.worklist import Worklist
from neuropetrix.store.db import utcnow
from neuropetrix.store.models import Patient, Study
from neuropetrix.store.orders_models import SETTLED, HbysPatient, Hl7Message, Order, StudyOrder

routes = web.RouteTableDef()
ORDER_STATES = ("scheduled", "arrived", "in progress", "completed", "cancelled", "discontinued")


class OrderQuery(PageQuery):
    status: Literal[ORDER_STATES] | None = None  # type: ignore[valid-type]
    accession_number: str | None = Field(None, max_length=16)


class WorklistQuery(BaseModel):
    date: str | None = Field(None, pattern=r"^\d{8}(-\d{8})?$|^\d{8}-$|^-\d{8}$",
                             description="YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
    station: str | None = Field(None, max_length=16, description="the scheduled station's AE title")
    modality: str | None = Field(None, max_length=16)


class ReconcileQuery(PageQuery):
    all: bool = Field(False, description="every reconciliation, not only those waiting for a decision")


class Decision(Body):
    """{"order_id": N} links the study to order N; {"unordered": true} confirms it has none."""

    order_id: StrictInt | None = None
    unordered: StrictBool | None = None

    @model_validator(mode="after")
    def _one(self) -> Decision:
        if (self.order_id is None) == (self.unordered is not True):
            raise ValueError('give {"order_id": <integer>} or {"unordered": true}')
        return self


class MessageQuery(PageQuery):
    ack: str | None = Field(None, max_length=2, description="AA, AE or AR: only messages that got it")


def _iso(t) -> str | None:
    return t.isoformat() + "Z" if t else None


def order_json(order: Order, patient: HbysPatient) -> dict:
    return {"id": order.id, "placer_number": order.placer_number, "placer_authority": order.placer_authority,
            "filler_number": order.filler_number, "accession_number": order.accession_number,
            "study_uid": order.study_uid, "status": order.status, "modality": order.modality,
            "station_ae": order.station_ae, "scheduled_start": order.scheduled_start,
            "procedure": {"code": order.procedure_code, "system": order.procedure_system,
                          "text": order.procedure_text},
            "sut": {"code": order.sut_code, "text": order.sut_text},
            "ordering_physician": order.ordering_physician,
            "patient": {"id": patient.patient_id, "issuer": patient.issuer, "name": patient.name,
                        "birth_date": patient.birth_date, "sex": patient.sex},
            "updated_at": _iso(order.updated_at)}


@routes.get("/api/orders")
@endpoint(ORDERS_READ, query=OrderQuery, response=Page)
async def orders(request: web.Request, query: OrderQuery) -> web.Response:
    """Orders, newest scheduled first; ?status= one state, ?accession_number=."""
    def read(s: Session) -> dict:
        where = [Order.patient_pk == HbysPatient.id]
        if query.status:
            where.append(Order.status == query.status)
        if query.accession_number:
            where.append(Order.accession_number == query.accession_number)
        rows = s.execute(select(Order, HbysPatient).where(*where)
                         .order_by(Order.scheduled_start.desc(), Order.id.desc())
                         .limit(query.limit).offset(query.offset)).all()
        total = s.scalar(select(func.count()).select_from(Order).join(HbysPatient, Order.patient_pk == HbysPatient.id)
                         .where(*where[1:]))
        return paged([order_json(o, p) for o, p in rows], total, query)
    return web.json_response(await request.app[DATABASE](read))


def _worklist_query(date: str | None, station: str | None, modality: str | None) -> Dataset:
    q = Dataset()
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
                "StudyInstanceUID", "RequestedProcedureID", "RequestedProcedureDescription"):
        setattr(q, key, "")
    step = Dataset()
    step.ScheduledStationAETitle = station or ""
    step.ScheduledProcedureStepStartDate = date or ""
    step.ScheduledProcedureStepStartTime = ""
    step.Modality = modality or ""
    step.ScheduledProcedureStepID = ""
    step.ScheduledProcedureStepStatus = ""
    q.ScheduledProcedureStepSequence = Sequence([step])
    return q


@routes.get("/api/worklist")
@endpoint(ORDERS_READ, query=WorklistQuery)
async def worklist(request: web.Request, query: WorklistQuery) -> web.Response:
    """The Modality Worklist as a console sees it: ?date=YYYYMMDD or a range, ?station=AE, ?modality=."""
    identifier = _worklist_query(query.date, query.station, query.modality)
    db = request.app[DATABASE]
    provider = Worklist(db.sessions)

    def items() -> list[dict]:
        out = []
        for ds in provider(identifier, query.station or ""):
            step = ds.ScheduledProcedureStepSequence[0]
            out.append({"patient_name": str(ds.PatientName), "patient_id": ds.PatientID,
                        "birth_date": ds.PatientBirthDate, "sex": ds.PatientSex,
                        "accession_number": ds.AccessionNumber, "study_uid": ds.StudyInstanceUID,
                        "requested_procedure": ds.RequestedProcedureDescription,
                        "station_ae": step.ScheduledStationAETitle, "modality": step.Modality,
                        "start": step.ScheduledProcedureStepStartDate + step.ScheduledProcedureStepStartTime,
                        "status": step.ScheduledProcedureStepStatus})
        return out
    return web.json_response({"items": await db.run(items)})


def _reconcile_json(row: StudyOrder, study: Study, patient: Patient | None) -> dict:
    return {"study_uid": row.study_uid, "state": row.state, "order_id": row.order_pk,
            "matched_by": row.matched_by, "differences": row.differences, "held": bool(row.held),
            "resolved_by": row.resolved_by, "updated_at": _iso(row.updated_at),
            "study": {"accession_number": study.accession_number, "study_date": study.study_date,
                      "description": study.description, "state": study.state,
                      "patient_id": patient.patient_id if patient else "",
                      "patient_name": patient.name if patient else ""}}


@routes.get("/api/reconcile")
@endpoint(ORDERS_READ, query=ReconcileQuery, response=Page)
async def reconcile_list(request: web.Request, query: ReconcileQuery) -> web.Response:
    """Studies waiting for a decision (default), or ?all=1 every reconciliation."""
    def read(s: Session) -> dict:
        where = [] if query.all else [StudyOrder.state.notin_(SETTLED)]
        rows = s.execute(select(StudyOrder, Study).join(Study, Study.study_uid == StudyOrder.study_uid)
                         .where(*where).order_by(StudyOrder.id.desc()).limit(query.limit).offset(query.offset)).all()
        total = s.scalar(select(func.count()).select_from(StudyOrder).where(*where))
        return paged([_reconcile_json(r, st, s.get(Patient, st.patient_pk)) for r, st in rows], total, query)
    return web.json_response(await request.app[DATABASE](read))


@routes.post("/api/reconcile/{study_uid}")
@endpoint(ORDERS_RECONCILE, body=Decision)
async def reconcile_link(request: web.Request, body: Decision) -> web.Response:
    """Link a study to an order, or confirm it has none (a held study is routed at once)."""
    uid = _uid(request)
    user = request[PRINCIPAL].username

    def decide(s: Session) -> dict:
        row = link(s, uid, body.order_id, user, utcnow())
        study = s.scalars(select(Study).where(Study.study_uid == uid)).one()
        return _reconcile_json(row, study, s.get(Patient, study.patient_pk))
    try:
        return web.json_response(await request.app[DATABASE](decide))
    except KeyError as exc:
        raise web.HTTPNotFound(text=exc.args[0]) from None


@routes.get("/api/hl7/messages")
@endpoint(HL7_READ, query=MessageQuery, response=Page)
async def hl7_messages(request: web.Request, query: MessageQuery) -> web.Response:
    """Received HL7 messages, newest first, each with its ACK; ?ack=AE to see the refused ones."""
    def read(s: Session) -> dict:
        where = [Hl7Message.ack_code == query.ack] if query.ack else []
        rows = s.scalars(select(Hl7Message).where(*where).order_by(Hl7Message.id.desc()).limit(query.limit)
                         .offset(query.offset))
        total = s.scalar(select(func.count()).select_from(Hl7Message).where(*where))
        return paged([{"id": m.id, "received_at": _iso(m.received_at), "peer": m.peer, "sender": m.sender,
                       "control_id": m.control_id, "message_type": m.message_type, "charset": m.charset,
                       "ack_code": m.ack_code, "error": m.error, "duplicate_of": m.duplicate_of,
                       "message": _decoded(m), "ack": m.ack.replace("\r", "\n")} for m in rows],
                     total, query)
    return web.json_response(await request.app[DATABASE](read), dumps=_dumps)


def _decoded(message: Hl7Message) -> str:
    codec = CODECS_IN.get(message.charset.upper(), "latin_1")
    return message.raw.decode(codec, "replace").replace("\r", "\n")


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)
