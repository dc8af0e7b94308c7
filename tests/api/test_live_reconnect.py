"""The department page in headless Chromium: when the node closes its event stream because the access
token ran out (4001), the page refreshes its tokens and reconnects with the new one, and goes on
reading the stats again on each event (it used to offer the expired token again, every 5 s, for ever)."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from neuropetrix.api.ws import SOCKETS
from tests.api.conftest import served
from tests.support.browser import Chromium

pytestmark = pytest.mark.asyncio
UID = "1.2.826.0.1.3680043.10.19.3"


async def _until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Until `condition()` holds on the node's side; fails naming `what`."""
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_department_page_reconnects_with_a_fresh_token_after_its_own_expired(env, aiohttp_server, tmp_path):
    app = env.app()
    base, tokens = await served(aiohttp_server, app)
    async with Chromium(tmp_path / "chromium") as page:
        await page.goto(f"{base}/")
        await page.evaluate(f"sessionStorage.setItem('access', {json.dumps(tokens['access_token'])}); "
                            f"sessionStorage.setItem('refresh', {json.dumps(tokens['refresh_token'])}); "
                            f"sessionStorage.setItem('expires', String(Date.now() + {tokens['expires_in']} * 1000))")
        await page.goto(f"{base}/static/stats.html")
        await page.wait_for("document.body.dataset.loaded >= 1", "the stats to load")
        await _until(lambda: len(app[SOCKETS]) == 1, "the page's event stream")
        [first] = app[SOCKETS]

        env.clock.advance(tokens["expires_in"] + 1)          # the node's clock: the access token ran out
        await _until(lambda: first.closed, "the node to close the stream (4001: token expired)")
        await _until(lambda: len(app[SOCKETS]) == 1 and first not in app[SOCKETS], "the page to reconnect")
        assert await page.evaluate("sessionStorage.getItem('access')") != tokens["access_token"]

        loaded = await page.evaluate("Number(document.body.dataset.loaded)")
        env.add_event("study.complete", UID)
        await page.wait_for(f"Number(document.body.dataset.loaded) > {loaded}", "the stats read again on the event")
        assert await page.evaluate("document.querySelector('#signed-out').hidden")
