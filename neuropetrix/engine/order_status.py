"""The order status the node reports back to the HBYS: ORC-5 `IP` when the first images of an order
arrive, `CM` when its study is complete; ORM^O01 (v2.3.1/2.5) or OMG^O19 (v2.5.1), as the
destination's version says (hbys.mllp). With `hbys.order_status` on.

Each message is built once, when the order changes, and kept in its job (params.message): a retry
sends the very same bytes, MSH-10 included. One IP and one CM per order (action_index 0 and 1 of the
`order-status` route), whatever the number of state changes. hl7apy models ORM^O01's OBR choice
group as if every one of its segments were required, so ORM is built at the tolerant level in the
standard's structure; OMG^O19 is validated strictly.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Group, Message
from sqlalchemy import select
from sqlalchemy.orm import Session

from neuropetrix.config.settings import MllpOut, RetrySettings
from neuropetrix.engine.hl7in import OUR_APPLICATION
from neuropetrix.engine.jobs import new_job
from neuropetrix.reports.hl7 import CODECS, _components  # the ORU's escaping: one copy of it
from neuropetrix.store.jobs_models import Job
from neuropetrix.store.orders_models import ARRIVED, COMPLETED, IN_PROGRESS, HbysPatient, Order

KIND = "order_status"
ROUTE = "order-status"
CODES = {ARRIVED: "IP", IN_PROGRESS: "IP", COMPLETED: "CM"}
_ISTANBUL = timezone(timedelta(hours=3))


def build_status(order: Order, patient: HbysPatient, code: str, destination: MllpOut, control_id: str,
                 now: datetime) -> str:
    """The status message as text (segments ended by CR), in the destination's version."""
    version = destination.version
    omg = version == "2.5.1"
    name = "OMG_O19" if omg else "ORM_O01"
    level = VALIDATION_LEVEL.STRICT if omg else VALIDATION_LEVEL.TOLERANT
    msg = Message(name, version=version, validation_level=level)
    msh = msg.msh
    msh.msh_3 = OUR_APPLICATION
    msh.msh_7 = now.astimezone(_ISTANBUL).strftime("%Y%m%d%H%M%S%z")
    msh.msh_9 = "OMG^O19^OMG_O19" if omg else ("ORM^O01" if version == "2.3.1" else "ORM^O01^ORM_O01")
    msh.msh_10 = control_id
    msh.msh_11 = "P"
    msh.msh_12 = version
    msh.msh_18 = destination.charset
    pid = msg.add_group(f"{name}_PATIENT").add_segment("PID")
    pid.pid_3 = _components(patient.patient_id, "", "", patient.issuer, patient.identifier_type)
    family, _, given = patient.name.partition("^")
    pid.pid_5 = _components(family, given.split("^")[0])
    order_group = msg.add_group(f"{name}_ORDER")
    orc = order_group.add_segment("ORC")
    orc.orc_1 = "SC"
    orc.orc_2 = _components(order.placer_number, order.placer_authority)
    if order.filler_number:
        orc.orc_3 = _components(order.filler_number)
    orc.orc_5 = code
    if omg:
        obr = order_group.add_segment("OBR")
    else:
        choice = Group("ORM_O01_CHOICE" if version == "2.3.1" else "ORM_O01_OBRRQDRQ1RXOODSODT_SUPPGRP",
                       version=version, validation_level=level)
        order_group.add_group("ORM_O01_ORDER_DETAIL").add(choice)
        obr = choice.add_segment("OBR")
    obr.obr_1 = "1"
    obr.obr_2 = _components(order.placer_number, order.placer_authority)
    if order.filler_number:
        obr.obr_3 = _components(order.filler_number)
    obr.obr_4 = _components(order.procedure_code, order.procedure_text, order.procedure_system,
                            *((order.sut_code, order.sut_text, "SUT") if order.sut_code else ()))
    obr.obr_18 = _components(order.accession_number)
    if omg:
        msg.validate()
    return msg.to_er7().replace("\n", "\r") + "\r"


def queue_status(s: Session, order: Order, status: str, destination: MllpOut, retry: RetrySettings,
                 event_id: int, now: datetime) -> Job | None:
    """The status job for `order` now in `status`; None when there is nothing (new) to report."""
    code = CODES.get(status)
    if code is None:
        return None
    index = 0 if code == "IP" else 1
    sent = s.scalars(select(Job.id).where(Job.route == ROUTE, Job.study_uid == order.study_uid,
                                          Job.action_index == index)).first()
    if sent is not None:
        return None
    patient = s.get(HbysPatient, order.patient_pk)
    control_id = f"NPX{order.id}{code}{event_id}"[:20]
    text = build_status(order, patient, code, destination, control_id, now)
    text.encode(CODECS[destination.charset])            # refused now, not at every retry
    job = new_job(KIND, order.study_uid, ROUTE, index, "hl7:hbys", retry.max_attempts, source_event_id=event_id,
                  params={"message": text, "charset": destination.charset, "order": order.id, "code": code},
                  now=now)
    s.add(job)
    return job
