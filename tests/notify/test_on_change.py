"""Notify on change: a route's notify job reads the study's analysis.json after the analysis and tells
only when its PERCIST response is one the route names (`when: {response: PMD}`); progression is told at
high priority by push even where the route names a lower one. Through the real worker and pyfcm to the
local fake FCM."""
from __future__ import annotations

import asyncio
import json

import pytest

from neuropetrix.engine.jobs import new_job
from neuropetrix.engine.notifications import notify_params
from neuropetrix.store.jobs_models import Job
from tests.notify.conftest import notifications, set_contact, until
from tests.notify.test_push_channel import fcm_env  # noqa: F401  (fixture)

PMD_STUDY, SMD_STUDY = "1.2.826.0.1.3680043.10.18.21", "1.2.826.0.1.3680043.10.18.22"


def _analysed(env, study_uid: str, category: str) -> None:
    """The results folder of an analysis whose response to the prior study is `category`."""
    folder = env.data_dir / "results" / study_uid
    folder.mkdir(parents=True)
    (folder / "analysis.json").write_text(json.dumps({
        "study_instance_uid": study_uid, "lesion_count": 3, "response": {
            "criteria": "PERCIST 1.0", "category": category, "prior_study_uid": "1.2.826.0.1.3680043.10.18.20"}}))


def _notify_job(env, study_uid: str, route: str, action: dict) -> int:
    """The job a route's notify action makes (engine/dispatch.py), run by the worker once queued."""
    with env.sessions.begin() as s:
        job = new_job("notify", study_uid, route, 1, "notify", 3, params=notify_params(action))
        s.add(job)
        s.flush()
        return job.id


def _job(env, job_id: int) -> Job:
    with env.sessions() as s:
        return s.get(Job, job_id)


@pytest.mark.asyncio
async def test_progression_rule_pushes_a_pmd_study_at_high_priority_and_not_an_smd_one(fcm_env):  # noqa: F811
    fake, env = fcm_env
    rule = {"roles": ["physician"], "when": {"response": "PMD"}, "priority": "high"}
    _analysed(env, PMD_STUDY, "PMD")
    _analysed(env, SMD_STUDY, "SMD")
    smd = _notify_job(env, SMD_STUDY, "progression", rule)
    pmd = _notify_job(env, PMD_STUDY, "progression", rule)
    await fake.wait_for(lambda: len(fake.delivered) == 1)
    [message] = fake.delivered
    assert message["token"] == "phone-physician" and message["android"] == {"priority": "high"}
    assert message["data"]["study_uid"] == PMD_STUDY
    assert message["notification"]["body"] == "Rule progression asks you to look: PERCIST PMD"
    await until(lambda: _job(env, smd).state == "done" and _job(env, pmd).state == "done")
    assert _job(env, smd).result == {"recipients": [], "not_notified": "response SMD, not PMD"}
    await asyncio.sleep(0.5)                     # the worker polls every 0.05 s: nothing more comes
    assert len(fake.delivered) == 1
    assert [(n.study_uid, n.priority, n.channels) for n in notifications(env)] == [(PMD_STUDY, "high", ["push"])]


@pytest.mark.asyncio
async def test_progression_is_raised_to_a_high_priority_push_where_the_route_says_low(fcm_env):  # noqa: F811
    fake, env = fcm_env
    routine = {"roles": ["physician"], "priority": "low"}          # e-mail only, normally
    _analysed(env, PMD_STUDY, "PMD")
    _analysed(env, SMD_STUDY, "SMD")
    _notify_job(env, SMD_STUDY, "results-ready", routine)
    _notify_job(env, PMD_STUDY, "results-ready", routine)
    await until(lambda: len(notifications(env)) == 2)
    await fake.wait_for(lambda: len(fake.delivered) == 1)
    assert fake.delivered[0]["data"]["study_uid"] == PMD_STUDY
    assert fake.delivered[0]["android"] == {"priority": "high"}
    told = {n.study_uid: (n.priority, n.channels) for n in notifications(env)}
    assert told == {PMD_STUDY: ("high", ["push"]),      # no e-mail server here: push is what reached them
                    SMD_STUDY: ("low", [])}


@pytest.mark.asyncio
async def test_progression_rule_mails_a_pmd_study_and_not_an_smd_one(notify_env, smtp_server, running):
    inbox, port = smtp_server()
    env = notify_env({"email": {"smtp_host": "127.0.0.1", "smtp_port": port, "sender": "petct@hastane.local"}})
    set_contact(env, "physician", email="ayse.hekim@hastane.local")
    running(env)
    rule = {"roles": ["physician"], "when": {"response": ["PMD"]}, "channels": ["email"]}
    _analysed(env, PMD_STUDY, "PMD")
    _analysed(env, SMD_STUDY, "SMD")
    jobs = [_notify_job(env, uid, "progression", rule) for uid in (SMD_STUDY, PMD_STUDY)]
    await until(lambda: len(inbox.messages) == 1 and all(_job(env, j).state == "done" for j in jobs))
    [(envelope, mail)] = inbox.messages
    assert envelope.rcpt_tos == ["ayse.hekim@hastane.local"] and mail["Subject"] == "[HIGH] PET/CT study flagged"
    text = mail.get_body(("plain",)).get_content()
    assert PMD_STUDY in text and SMD_STUDY not in text
    assert "Response to the prior study (PERCIST 1.0): PMD (progressive metabolic disease)." in text


def test_when_names_a_percist_category():
    assert notify_params({"roles": ["physician"], "when": {"response": ["PMD", "SMD"]}})["when"] == {
        "response": ["PMD", "SMD"]}
    for when, message in (({"response": "worse"}, "PERCIST category (CMR, PMR, SMD, PMD), not worse"),
                          ({"response": []}, "not nothing"), ("PMD", "when is {response: CATEGORY"),
                          ({"suvmax": 10}, "when is {response: CATEGORY")):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")):
            notify_params({"roles": ["physician"], "when": when})
