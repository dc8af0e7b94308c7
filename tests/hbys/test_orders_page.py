"""The orders page in a real headless Chromium against a real node: a technologist sees the HBYS's
order and the worklist, finds the study that arrived with an unknown accession on the reconcile list
and links it with the page's own controls. Screenshots: test-artifacts/orders/."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hl7.client import MLLPClient

from tests.conftest import storescu
from tests.engine.conftest import events_of, wait_for
from tests.hbys import corpus
from tests.hbys.conftest import ack_of, parse_ack
from tests.support.browser import Chromium
from tests.support.nodeproc import ROOT, free_port, running_node
from tests.support.synthetic import StudySpec, write_pet_series

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]
ARTIFACTS = ROOT / "test-artifacts" / "orders"
PASSWORD = "technologist password"


async def test_a_technologist_links_a_held_study_on_the_orders_page(tmp_path: Path) -> None:
    listen = free_port()
    spec = StudySpec(pet_slices=3, pet_matrix=32, accession_number="TYPO-1", patient_name="YILDIZ^SUKRU")
    write_pet_series(spec, tmp_path / "study")
    with running_node(tmp_path / "node", {"hbys": {"mllp_listen": {"enabled": True, "host": "127.0.0.1",
                                                                   "port": listen}}}) as node:
        with MLLPClient("127.0.0.1", listen) as client:
            order = corpus.orm("P1", "PL1", "ACC1", start="20261201100000")
            assert ack_of(parse_ack(client.send_message(order)))[0] == "AA"
        assert node.cli("users", "add", "tech", "--role", "technologist", input=PASSWORD + "\n").returncode == 0
        done = await asyncio.to_thread(storescu, node.dicom_port, tmp_path / "study", aec=node.ae_title)
        assert done.returncode == 0, done.stderr
        wait_for("the study to be complete (and held)", lambda: "held on the reconcile list" in node.log_text(), node)
        async with Chromium(tmp_path / "chromium") as page:
            await page.goto(f"http://127.0.0.1:{node.api_port}/")
            await page.wait_for("!document.querySelector('#view-login').hidden", "the sign-in form")
            await page.evaluate(f"""(() => {{
                const f = document.querySelector('#login-form');
                f.username.value = 'tech'; f.password.value = {json.dumps(PASSWORD)};
                f.requestSubmit(); }})()""")
            await page.wait_for("!document.querySelector('#nav').hidden", "signing in")
            await page.goto(f"http://127.0.0.1:{node.api_port}/static/orders.html")
            rows = "document.querySelectorAll('#reconcile-list tbody tr')"
            await page.wait_for(f"{rows}.length === 1", "the held study on the reconcile list", timeout=60)
            assert "TYPO-1" in await page.evaluate(f"{rows}[0].textContent")
            assert "ŞÜKRÜ YILDIZ" in await page.evaluate("document.querySelector('#order-list').textContent")
            assert "ACC1" in await page.evaluate("document.querySelector('#worklist-list').textContent")
            await page.screenshot(ARTIFACTS / "1-reconcile.png")
            await page.evaluate(f"""(() => {{
                const cell = {rows}[0].cells[7];
                cell.querySelector('select').value = '1';
                [...cell.querySelectorAll('button')].find(b => b.textContent === 'Link').click(); }})()""")
            await page.wait_for(f"{rows}.length === 0", "the study to leave the list")
            await page.wait_for("document.querySelector('#order-list tbody tr').cells[9].textContent === 'completed'",
                                "the linked order to be completed")
            await page.screenshot(ARTIFACTS / "2-linked.png")
        linked = [e.payload for e in events_of(node, "study.complete")]
        assert linked[-1] == {"reason": "reconciled", "by": "tech"}       # routed now, by the page's link
