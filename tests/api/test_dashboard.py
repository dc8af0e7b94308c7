"""The dashboard in a real headless Chromium against a real node: sign in, watch a study arrive live
when dcmtk storescu sends it, open it once the node has analysed it, see its MIP and lesion table; then,
as an administrator, retry a parked job from the jobs page. Screenshots: test-artifacts/dashboard/."""
from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from tests.engine.conftest import FAST_ENGINE, petct_study, storescu  # noqa: F401  (petct_study is a fixture)
from tests.support.browser import Chromium
from tests.support.nodeproc import ROOT, running_node

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
PASSWORD = "dashboard password"
ADMIN_PASSWORD = "administrator password"
ROUTE = {"name": "petct", "match": {"modality": "PT"}, "actions": ["analyze", {"notify": ["physician"]}]}


async def test_sign_in_watch_a_study_arrive_and_open_its_picture(tmp_path: Path, petct_study: Path):  # noqa: F811
    study_uid = json.dumps(_study_uid(petct_study))
    with running_node(tmp_path, {"engine": FAST_ENGINE, "routes": [ROUTE]}) as node:
        for name, role, password in (("dr.ayse", "physician", PASSWORD), ("it.admin", "admin", ADMIN_PASSWORD)):
            added = node.cli("users", "add", name, "--role", role, input=password + "\n")
            assert added.returncode == 0, added.stderr
        async with Chromium(tmp_path / "chromium") as page:
            await page.goto(f"http://127.0.0.1:{node.api_port}/")
            await _sign_in(page, "dr.ayse", PASSWORD)
            await page.wait_for("document.querySelector('#live').classList.contains('on')", "the live stream")
            await page.screenshot(ARTIFACTS / "1-signed-in.png")
            await page.evaluate("window.sameDocument = true")     # gone if the page were reloaded

            await asyncio.to_thread(storescu, node, petct_study)
            row = f"document.querySelector('#studies tr[data-uid=' + CSS.escape({study_uid}) + ']')"
            await page.wait_for(row, "the new study in the list")
            assert await page.evaluate("window.sameDocument === true"), "the list must update without a reload"
            assert "YILMAZ AYŞE" in await page.evaluate(f"{row}.textContent")
            await page.screenshot(ARTIFACTS / "2-study-arrived.png")

            await page.evaluate(f"{row}.click()")
            await page.wait_for("!document.querySelector('#view-study').hidden", "the study page")
            mip = "document.querySelector('#mip')"
            await page.wait_for(f"{mip}.complete && {mip}.naturalWidth > 0", "the MIP picture", timeout=180)
            await page.wait_for("document.querySelectorAll('#lesions tbody tr').length > 0", "the lesion table")
            await page.screenshot(ARTIFACTS / "3-study-page.png")
            size = await page.evaluate(f"[{mip}.naturalWidth, {mip}.naturalHeight]")
            lesions = await page.evaluate("document.querySelectorAll('#lesions tbody tr').length")
            series = await page.evaluate("document.querySelectorAll('#series tbody tr').length")
            assert await page.evaluate("document.querySelector('#nav-jobs').hidden"), "no jobs page for physicians"

            # an administrator retries a parked job from the jobs page; the node runs it again
            await page.evaluate("document.querySelector('#logout').click()")
            await _sign_in(page, "it.admin", ADMIN_PASSWORD)
            _park_notify_job(node.data_dir / "neuropetrix.db")
            await page.evaluate("location.hash = '#/jobs'")
            retry = "[...document.querySelectorAll('#jobs button')].find(b => b.textContent === 'Retry')"
            await page.wait_for(retry, "a Retry button on the parked job")
            await page.screenshot(ARTIFACTS / "4-jobs-parked.png")
            await page.evaluate(f"{retry}.click()")
            rows = "[...document.querySelectorAll('#jobs tbody tr')]"
            await page.wait_for(f"{rows}.length === 2 && {rows}.every(r => r.cells[4].textContent === 'done')",
                                "the retried job to be run again and done")
            await page.screenshot(ARTIFACTS / "5-jobs-retried.png")

    from PIL import Image
    results = node.data_dir / "results" / json.loads(study_uid)
    with Image.open(results / "mip.png") as picture:
        assert list(picture.size) == size                  # the picture shown is the node's MIP
    analysis = json.loads((results / "analysis.json").read_text())
    assert lesions == analysis["lesion_count"] > 0
    assert series == 2


async def _sign_in(page, username: str, password: str) -> None:
    await page.wait_for("!document.querySelector('#view-login').hidden", "the sign-in form")
    await page.evaluate(f"""(() => {{
        const f = document.querySelector('#login-form');
        f.username.value = {json.dumps(username)}; f.password.value = {json.dumps(password)};
        f.requestSubmit(); }})()""")
    await page.wait_for("!document.querySelector('#view-studies').hidden", "the study list")


def _park_notify_job(db: Path) -> None:
    """Mark the route's notify job failed, as if its attempts had run out (the worker shares this file)."""
    with sqlite3.connect(db, timeout=30) as conn:
        changed = conn.execute("UPDATE jobs SET state = 'failed', last_error = 'attempts used up (test)' "
                               "WHERE kind = 'notify'").rowcount
    assert changed == 1


def _study_uid(folder: Path) -> str:
    import pydicom
    first = next(p for p in folder.rglob("*") if p.is_file())
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)
