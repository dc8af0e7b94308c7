"""The dashboard in a real headless Chromium against a real node: sign in, watch a study arrive live
when dcmtk storescu sends it, open it once the node has analysed it, see its MIP and lesion table.
Screenshots are kept in test-artifacts/dashboard/."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.api.browser import Chromium
from tests.engine.conftest import FAST_ENGINE, petct_study, storescu  # noqa: F401  (petct_study is a fixture)
from tests.nodeproc import ROOT, running_node

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
PASSWORD = "dashboard password"
ROUTE = {"name": "petct", "match": {"modality": "PT"}, "actions": ["analyze", {"notify": ["physician"]}]}


async def test_sign_in_watch_a_study_arrive_and_open_its_picture(tmp_path: Path, petct_study: Path):  # noqa: F811
    study_uid = json.dumps(_study_uid(petct_study))
    with running_node(tmp_path, {"engine": FAST_ENGINE, "routes": [ROUTE]}) as node:
        added = node.cli("users", "add", "dr.ayse", "--role", "physician", input=PASSWORD + "\n")
        assert added.returncode == 0, added.stderr
        async with Chromium(tmp_path / "chromium") as page:
            await page.goto(f"http://127.0.0.1:{node.api_port}/")
            await page.wait_for("!document.querySelector('#view-login').hidden", "the sign-in form")
            await page.evaluate(f"""(() => {{
                const f = document.querySelector('#login-form');
                f.username.value = 'dr.ayse'; f.password.value = {json.dumps(PASSWORD)};
                f.requestSubmit(); }})()""")
            await page.wait_for("!document.querySelector('#view-studies').hidden", "the study list")
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

    from PIL import Image
    results = node.data_dir / "results" / json.loads(study_uid)
    with Image.open(results / "mip.png") as picture:
        assert list(picture.size) == size                  # the picture shown is the node's MIP
    analysis = json.loads((results / "analysis.json").read_text())
    assert lesions == analysis["lesion_count"] > 0
    assert series == 2


def _study_uid(folder: Path) -> str:
    import pydicom
    first = next(p for p in folder.rglob("*") if p.is_file())
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)
