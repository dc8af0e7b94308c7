"""GET /api/stats and the department page in headless Chromium, every number checked against what
was put in the database (percentiles recomputed here with numpy); a notification acknowledged and the
on-call list set with the page's own controls. Screenshots: test-artifacts/stats/."""
from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select, update

from neuropetrix.engine.jobs import new_job
from neuropetrix.engine.notifications import NotificationPlanner, oncall_list
from neuropetrix.store.db import utcnow
from neuropetrix.store.jobs_models import Job
from neuropetrix.store.models import Event, Study
from tests.api.conftest import bearer, login, served
from tests.notify.conftest import notifications, notify_event
from tests.support.browser import Chromium
from tests.support.nodeproc import ROOT

pytestmark = pytest.mark.asyncio
ARTIFACTS = ROOT / "test-artifacts" / "stats"
# study → (days ago, seconds after the last image to: analysis done, signed, delivered after signing)
STUDIES = {"1.2.826.0.1.3680043.10.18.50": (0, 300, 1500, 1560),
           "1.2.826.0.1.3680043.10.18.51": (0, 420, 3000, 3030),
           "1.2.826.0.1.3680043.10.18.52": (0, 250, None, None),
           "1.2.826.0.1.3680043.10.18.53": (1, 610, 7200, 7500),
           "1.2.826.0.1.3680043.10.18.54": (3, 380, 2400, 2410)}
JOBS = [("dicom:pacs", "forward", "done")] * 4 + [("dicom:pacs", "forward", "failed"), ("hl7:hbys", "hl7", "done"),
        ("hl7:hbys", "hl7", "queued"), ("smtp", "email", "queued"), ("analysis", "analyze", "running")]


def _seed(env) -> None:
    now = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    for uid in STUDIES:
        env.add_instance(uid)
    with env.sessions.begin() as s:
        for uid, (days, analysed, signed, delivered) in STUDIES.items():
            last = now - timedelta(days=days)
            s.execute(update(Study).where(Study.study_uid == uid)
                      .values(first_received_at=last - timedelta(minutes=5), last_received_at=last))
            s.add(Event(kind="delivery.done", study_uid=uid, created_at=last + timedelta(seconds=analysed + 5),
                        payload={"note": "the preliminary result, before signing"}))
            for kind, after in (("analysis.done", analysed), ("review.signed", signed), ("delivery.done", delivered)):
                if after is not None:
                    s.add(Event(kind=kind, study_uid=uid, created_at=last + timedelta(seconds=after), payload={}))
        for i, (destination, kind, state) in enumerate(JOBS):
            job = new_job(kind, "1.2.3", "r", i, destination, 5)
            job.state = state
            s.add(job)


def _expected() -> dict:
    spans = {"image_to_analysis": [], "analysis_to_signed": [], "signed_to_delivered": [], "image_to_delivered": []}
    for _, analysed, signed, delivered in STUDIES.values():
        spans["image_to_analysis"].append(analysed)
        if signed is not None:
            spans["analysis_to_signed"].append(signed - analysed)
            spans["signed_to_delivered"].append(delivered - signed)
            spans["image_to_delivered"].append(delivered)
    return {name: {"count": len(v), "median": float(np.median(v)), "p90": float(np.percentile(v, 90))}
            for name, v in spans.items()}


async def test_stats_match_the_database(env, aiohttp_client):
    _seed(env)
    client = await aiohttp_client(env.app())
    assert (await client.get("/api/stats", headers=bearer(await login(client, "viewer")))).status == 403
    r = await client.get("/api/stats?days=7", headers=bearer(await login(client, "technologist")))
    assert r.status == 200, await r.text()
    stats = await r.json()
    today = utcnow().date()
    per_day = {d["date"]: d["studies"] for d in stats["studies_per_day"]}
    assert len(per_day) == 7 and per_day[today.isoformat()] == 3
    assert [per_day[(today - timedelta(days=d)).isoformat()] for d in (1, 2, 3)] == [1, 0, 1]
    assert sum(per_day.values()) == 5
    for span, expected in _expected().items():
        assert stats["turnaround_seconds"][span] == pytest.approx(expected, abs=1e-3), span
    assert stats["destinations"] == {"analysis": {"received": 1, "queued": 1, "sent": 0, "failed": 0},
                                     "dicom:pacs": {"received": 5, "queued": 0, "sent": 4, "failed": 1},
                                     "hl7:hbys": {"received": 2, "queued": 1, "sent": 1, "failed": 0},
                                     "smtp": {"received": 1, "queued": 1, "sent": 0, "failed": 0}}
    assert stats["queue_depth"] == {"analyze": 1, "email": 1, "hl7": 1}


async def test_department_page_shows_the_numbers_acks_and_sets_the_on_call_list(notify_env, aiohttp_server, tmp_path):
    env = notify_env({"oncall": ["physician", "technologist"]})
    _seed(env)
    planner = NotificationPlanner(env.sessions, env.settings, push_on=False)
    planner.run_once()
    notify_event(env, "1.2.826.0.1.3680043.10.18.50", users=["physician"], priority="urgent", channels=["push"])
    planner.run_once()
    [urgent] = notifications(env)
    base, tokens = await served(aiohttp_server, env.app())
    with env.sessions() as s:
        in_db = {state: n for state, n in
                 ((st, len(s.scalars(select(Job.id).where(Job.destination == "dicom:pacs", Job.state == st)).all()))
                  for st in ("done", "failed"))}
    async with Chromium(tmp_path / "chromium") as page:
        await page.goto(f"{base}/")
        await page.evaluate(f"sessionStorage.setItem('access', {json.dumps(tokens['access_token'])}); "
                            f"sessionStorage.setItem('refresh', {json.dumps(tokens['refresh_token'])})")
        await page.goto(f"{base}/static/stats.html")
        await page.wait_for("document.body.dataset.loaded >= 1", "the stats to load")
        bars = await page.evaluate("JSON.stringify([...document.querySelectorAll('#per-day-chart rect')]"
                                   ".map(b => [b.dataset.date, Number(b.dataset.studies)]))")
        bars = dict(json.loads(bars))
        assert len(bars) == 14 and bars[utcnow().date().isoformat()] == 3 and sum(bars.values()) == 5
        rows = json.loads(await page.evaluate(
            "JSON.stringify([...document.querySelectorAll('#turnaround tbody tr')]"
            ".map(r => [r.dataset.span, Number(r.cells[1].textContent), Number(r.dataset.median),"
            "           Number(r.dataset.p90), r.cells[2].textContent]))"))
        expected = _expected()
        for span, count, median, p90, _ in rows:
            assert (count, median, p90) == pytest.approx((expected[span]["count"], expected[span]["median"],
                                                          expected[span]["p90"]))
        assert rows[0][4] == f"{expected['image_to_analysis']['median'] / 60:.1f} min"
        pacs = json.loads(await page.evaluate(
            "JSON.stringify([...document.querySelector('#destinations tr[data-destination=\"dicom:pacs\"]').cells]"
            ".map(c => c.textContent))"))
        assert pacs == ["dicom:pacs", "5", "0", str(in_db["done"]), str(in_db["failed"])]
        assert await page.evaluate("document.querySelector('#queue-depth').textContent") == "analyze 1, email 1, hl7 1"
        await page.screenshot(ARTIFACTS / "department.png")
        # the administrator acknowledges the urgent notification and puts the admin first on call
        ack = f"document.querySelector('#notifications tr[data-notification=\"{urgent.id}\"]')"
        assert await page.evaluate(f"{ack}.cells[4].textContent") == "queued"
        await page.evaluate(f"{ack}.querySelector('button').click()")
        # the table is drawn again after the click: between two drawings the row is not there
        await page.wait_for(f"{ack}?.cells[4].textContent === 'acknowledged'", "the acknowledgement")
        [acked] = notifications(env)
        assert (acked.state, acked.acked_by, acked.escalate_at) == ("acknowledged", "admin", None)
        await page.evaluate("""(() => { const f = document.querySelector('#oncall-form');
            f.users.value = 'admin, physician'; f.requestSubmit(); })()""")
        await page.wait_for("document.querySelector('#oncall-list').textContent === 'admin → physician'",
                            "the saved on-call list")
        with env.sessions() as s:
            assert oncall_list(s, env.settings.notify) == ["admin", "physician"]
        await page.evaluate("document.querySelector('#notifications').scrollIntoView()")
        await page.screenshot(ARTIFACTS / "department-notifications.png")
        # live: a new study's event makes the page read the stats again
        loaded = await page.evaluate("Number(document.body.dataset.loaded)")
        env.add_instance("1.2.826.0.1.3680043.10.18.60")
        env.add_event("study.received", "1.2.826.0.1.3680043.10.18.60")
        await page.wait_for(f"Number(document.body.dataset.loaded) > {loaded}", "the page to follow the event stream")
        today = utcnow().date().isoformat()
        await page.wait_for(f"document.querySelector('#per-day-chart rect[data-date=\"{today}\"]')"
                            ".dataset.studies === '4'", "the new study in today's bar")


async def test_department_page_refreshes_an_expired_access_token(notify_env, aiohttp_server, tmp_path):
    """The page signs in through the dashboard's shared session.js: an access token the server no longer
    takes is refreshed once with the refresh token, and the page loads instead of saying "not signed in"."""
    env = notify_env({})
    _seed(env)
    base, tokens = await served(aiohttp_server, env.app())
    async with Chromium(tmp_path / "chromium") as page:
        await page.goto(f"{base}/")
        await page.evaluate("sessionStorage.setItem('access', 'expired.or.revoked'); "
                            f"sessionStorage.setItem('refresh', {json.dumps(tokens['refresh_token'])})")
        await page.goto(f"{base}/static/stats.html")
        await page.wait_for("document.body.dataset.loaded >= 1", "the stats to load")
        assert await page.evaluate("document.querySelector('#signed-out').hidden") is True
        assert await page.evaluate("document.querySelector('#whoami').textContent") == "admin (admin)"
        renewed = await page.evaluate("sessionStorage.getItem('refresh')")
        assert renewed and renewed != tokens["refresh_token"]          # rotated by the refresh
