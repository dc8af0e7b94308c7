"""The patient page in a real headless Chromium against a real node that received two PET studies of one
patient with dcmtk storescu: the patient list, then the patient's timeline (each study's analysis,
response and review state) and the SUVmax / SULpeak / TMTV chart, one point per analysed study at the
value the results folder holds. Screenshots: test-artifacts/patient/."""
from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import storescu
from tests.support.browser import Chromium
from tests.support.nodeproc import ROOT, running_node
from tests.support.synthetic import StudySpec, write_pet_series

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]
ARTIFACTS = ROOT / "test-artifacts" / "patient"
PASSWORD = "physician password"
BASELINE = StudySpec(pet_slices=3, pet_matrix=32, accession_number="ACC-B", patient_name="KAYA^ZEYNEP",
                     injection_time=datetime(2026, 6, 2, 9, 0), scan_start=datetime(2026, 6, 2, 10, 10))
FOLLOW_UP = StudySpec(pet_slices=3, pet_matrix=32, accession_number="ACC-F", patient_name="KAYA^ZEYNEP",
                      injection_time=datetime(2026, 9, 15, 9, 0), scan_start=datetime(2026, 9, 15, 10, 10))
# What the node's analysis writes to results/<study>/analysis.json, with these numbers.
ANALYSES = {
    BASELINE.study_uid: {"suv_type": "bw", "lesion_count": 4, "suv_max": 12.5, "tmtv_ml": 48.0, "tlg_total": 300.0,
                         "lesions": [{"suv_peak": 10.0}]},
    FOLLOW_UP.study_uid: {"suv_type": "bw", "lesion_count": 2, "suv_max": 6.25, "tmtv_ml": 11.5, "tlg_total": 50.0,
                          "lesions": [{"suv_peak": 5.0}],
                          "response": {"criteria": "PERCIST 1.0", "category": "PMR",
                                       "prior_study_uid": BASELINE.study_uid, "sul_type": "lbm_janmahasatian",
                                       "sul_peak_before": 7.5, "sul_peak_after": 3.75, "percent_change": -50.0}},
}


async def _sign_in(page, port: int) -> None:
    await page.goto(f"http://127.0.0.1:{port}/")
    await page.wait_for("!document.querySelector('#view-login').hidden", "the sign-in form")
    await page.evaluate(f"""(() => {{
        const f = document.querySelector('#login-form');
        f.username.value = 'dr.zeynep'; f.password.value = {json.dumps(PASSWORD)};
        f.requestSubmit(); }})()""")
    await page.wait_for("!document.querySelector('#nav').hidden", "signing in")


async def test_patient_page_shows_the_timeline_and_the_chart(tmp_path: Path) -> None:
    for spec, name in ((BASELINE, "baseline"), (FOLLOW_UP, "follow_up")):
        write_pet_series(spec, tmp_path / name)
    with running_node(tmp_path / "node") as node:
        assert node.cli("users", "add", "dr.zeynep", "--role", "physician", input=PASSWORD + "\n").returncode == 0
        for name in ("baseline", "follow_up"):
            done = await asyncio.to_thread(storescu, node.dicom_port, tmp_path / name, aec=node.ae_title)
            assert done.returncode == 0, done.stderr
        for uid, doc in ANALYSES.items():
            (node.data_dir / "results" / uid).mkdir(parents=True)
            (node.data_dir / "results" / uid / "analysis.json").write_text(json.dumps(doc), encoding="utf-8")
        with sqlite3.connect(node.data_dir / "neuropetrix.db", timeout=30) as conn:
            conn.execute("INSERT INTO reviews (study_uid, status, version, candidates, candidates_version, "
                         "decisions, impression, route, updated_at) VALUES (?, 'final', 2, '{}', 1, '{}', '', "
                         "'petct', '2026-09-15 12:00:00')", (FOLLOW_UP.study_uid,))
        async with Chromium(tmp_path / "chromium", height=1150) as page:
            await _sign_in(page, node.api_port)
            await page.goto(f"http://127.0.0.1:{node.api_port}/static/patient.html")
            row = "document.querySelector('#patient-list tbody tr')"
            await page.wait_for(f"{row} && {row}.cells[5].textContent === '2'", "the patient with both studies")
            assert await page.evaluate(f"{row}.cells[0].textContent") == "ZEYNEP KAYA"
            await page.evaluate(f"{row}.click()")
            items = "document.querySelectorAll('#timeline li')"
            await page.wait_for(f"{items}.length === 2", "the patient's two studies on the timeline")
            await page.wait_for("document.body.dataset.loaded === '1'", "the page to finish")

            timeline = await page.evaluate(f"""[...{items}].map(li => ({{
                uid: li.dataset.studyUid, date: li.dataset.date,
                analysis: li.querySelector('.analysis').textContent,
                category: li.querySelector('.response') ? li.querySelector('.response').dataset.category : null,
                review: li.querySelector('.status').dataset.review }}))""")
            assert timeline == [
                {"uid": FOLLOW_UP.study_uid, "date": "2026-09-15", "category": "PMR", "review": "final",
                 "analysis": "analysed: 2 lesion(s), SUVmax 6.25, TMTV 11.5 ml"},
                {"uid": BASELINE.study_uid, "date": "2026-06-02", "category": None, "review": "",
                 "analysis": "analysed: 4 lesion(s), SUVmax 12.5, TMTV 48 ml"}]
            assert "PERCIST 1.0: PMR (partial metabolic response), SULpeak -50.0 %" in await page.evaluate(
                f"{items}[0].textContent")

            points = await page.evaluate("""[...document.querySelectorAll('#trend circle.point')].map(c => ({
                series: c.dataset.series, date: c.dataset.date, value: Number(c.dataset.value),
                x: Number(c.getAttribute('cx')), y: Number(c.getAttribute('cy')) }))""")
            values = {(p["series"], p["date"]): p["value"] for p in points}
            assert values == {("suv_max", "2026-06-02"): 12.5, ("suv_max", "2026-09-15"): 6.25,
                              ("sul_peak", "2026-06-02"): 7.5, ("sul_peak", "2026-09-15"): 3.75,
                              ("tmtv_ml", "2026-06-02"): 48.0, ("tmtv_ml", "2026-09-15"): 11.5}
            for series in ("suv_max", "sul_peak", "tmtv_ml"):       # later to the right, a fall drawn lower
                before, after = (next(p for p in points if p["series"] == series and p["date"] == d)
                                 for d in ("2026-06-02", "2026-09-15"))
                assert after["x"] > before["x"] and after["y"] > before["y"]
            assert await page.evaluate("document.querySelectorAll('#trend polyline').length") == 3
            await page.screenshot(ARTIFACTS / "patient.png")

            # from a study's page to its patient's timeline
            await page.goto(f"http://127.0.0.1:{node.api_port}/#/study/{BASELINE.study_uid}")
            link = "document.querySelector('#study-meta a')"
            await page.wait_for(link, "the study page's link to the patient")
            await page.evaluate(f"{link}.click()")
            await page.wait_for(f"{items}.length === 2 && document.querySelector('#patient-name').textContent "
                                "=== 'ZEYNEP KAYA'", "the patient page opened from the study")
