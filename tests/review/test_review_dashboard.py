"""The review flow in a real headless Chromium against a real node with a real PACS (Orthanc) and HBYS
(python-hl7's MLLP server): a physician signs in, sees the preliminary result with a badge, rejects a
lesion (the totals follow), signs, and sees the final version's deliveries done.
Screenshots: test-artifacts/review/."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.api.test_dashboard import _sign_in, _study_uid
from tests.engine.conftest import FAST_ENGINE, hbys_config, pacs_peer, petct_study, storescu  # noqa: F401
from tests.review.helpers import PASSWORD, add_user, oru_statuses
from tests.support.browser import Chromium
from tests.support.hbys_peer import mllp_listener
from tests.support.nodeproc import ROOT, SCANNER_AE, free_port, running_node
from tests.support.peers import orthanc

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]
ARTIFACTS = ROOT / "test-artifacts" / "review"
ROUTE = {"name": "petct", "match": {"modality": "PT"},
         "actions": ["analyze", {"forward": "pacs", "objects": ["seg", "sr"]}, {"hl7": "hbys"}]}


async def test_physician_rejects_a_lesion_and_signs_in_the_dashboard(tmp_path: Path, petct_study: Path):  # noqa: F811
    uid = json.dumps(_study_uid(petct_study))
    with orthanc(tmp_path / "orthanc") as pacs, mllp_listener() as hbys, running_node(tmp_path / "node", {
            "engine": FAST_ENGINE, "routes": [ROUTE], "hbys": hbys_config(hbys.port, "http://127.0.0.1:1/fhir"),
            "peers": [{"name": "scanner", "ae_title": SCANNER_AE, "host": "127.0.0.1", "port": free_port()},
                      pacs_peer(pacs.dicom_port)]}) as node:
        add_user(node, "dr.ayse", "physician", "--display-name", "Ayşe Yılmaz", "--organisation", "Nükleer Tıp")
        async with Chromium(tmp_path / "chromium") as page:
            await page.goto(f"http://127.0.0.1:{node.api_port}/")
            await _sign_in(page, "dr.ayse", PASSWORD)
            await page.wait_for("document.querySelector('#live').classList.contains('on')", "the live stream")
            await asyncio.to_thread(storescu, node, petct_study)
            await page.wait_for("!document.querySelector('#review-badge').hidden", "the to-review badge", timeout=180)
            assert await page.evaluate("document.querySelector('#review-badge').textContent") == "1 to review"
            await page.screenshot(ARTIFACTS / "1-badge.png")

            await page.evaluate(f"location.hash = '#/study/' + {uid}")
            rows = "document.querySelectorAll('#review-lesions tbody tr')"
            await page.wait_for(f"{rows}.length === 2", "the review's lesions")
            status = "document.querySelector('#review-status').textContent"
            assert (await page.evaluate(status)).startswith("PRELIMINARY · version 1")
            await page.wait_for("[...document.querySelectorAll('img.key')].every(i => i.complete && i.naturalWidth)",
                                "every key image")
            await page.evaluate("document.querySelector('#review-lesions tr[data-label=\"2\"] td.link').click()")
            await page.wait_for("document.querySelector('#mip-caption').textContent === 'MIP: lesion 2 outlined'",
                                "lesion 2's position on the MIP")
            await page.wait_for("document.querySelector('#mip').complete"
                                " && document.querySelector('#mip').naturalWidth",
                                "its picture")
            await page.screenshot(ARTIFACTS / "2b-lesion-on-mip.png")
            totals = "document.querySelector('#review-totals').textContent"
            assert (await page.evaluate(totals)).startswith("Kept: 2 lesion(s)")
            await page.screenshot(ARTIFACTS / "2-preliminary.png")

            await page.evaluate("""(() => { const s = document.querySelector('select.decision[data-label="2"]');
                s.value = 'rejected'; s.dispatchEvent(new Event('change')); })()""")
            await page.wait_for(f"({totals}).startsWith('Kept: 1 lesion(s)')", "the totals without lesion 2")
            assert await page.evaluate("document.querySelector('#review-lesions tr[data-label=\"2\"]').className") \
                == "decision-rejected"
            await page.screenshot(ARTIFACTS / "3-rejected.png")

            await page.evaluate("document.querySelector('#impression').value = 'Lesion 2: artefact.'")
            await page.evaluate("document.querySelector('#review-sign').click()")
            await page.wait_for(f"({status}).startsWith('FINAL · version 2')", "the final version", timeout=180)
            done = ("(() => { const r = document.querySelector('#versions tr[data-version=\"2\"] td.deliveries');"
                    " return r && /forward.*done/.test(r.textContent) && /hl7.*done/.test(r.textContent); })()")
            await page.wait_for(done, "the final version's deliveries done", timeout=120)
            await page.wait_for("document.querySelector('#mip').dataset.shown.endsWith('/2')", "the final's MIP")
            await page.evaluate("document.querySelector('#versions').scrollIntoView()")
            await page.screenshot(ARTIFACTS / "4-signed.png")
            audit = await page.evaluate("document.querySelector('#audit').textContent")
            assert "dr.ayse  reviewed" in audit and "dr.ayse  signed" in audit
            assert "Ayşe Yılmaz, Nükleer Tıp" in await page.evaluate("document.querySelector('#versions').textContent")
        obr, obx, lesions = oru_statuses(hbys.received[-1])
        assert (obr, set(obx)) == ("F", {"F"}) and "2" not in lesions
        assert len(pacs.get("/instances")) == 4          # SEG and SR of version 1 and of version 2
