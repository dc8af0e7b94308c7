"""Dashboards asking together are answered by one database read (api/singleflight.py): the token check
and the study-list page, when their one-second caches have run out for all of them at once."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from neuropetrix.api.database import DATABASE
from neuropetrix.api.singleflight import SingleFlight
from tests.api.conftest import bearer, login

pytestmark = pytest.mark.asyncio


async def test_concurrent_study_lists_share_one_token_check_and_one_page_read(seven_studies, aiohttp_client):
    app = seven_studies.app()
    client = await aiohttp_client(app)
    tokens = await login(client, "physician")
    db = app[DATABASE]
    reads: list[str] = []
    run = db.run

    async def slow_run(fn, *args):
        """A database under load: each read takes a while, so the requests overlap."""
        inner = [c.cell_contents for c in (fn.__closure__ or ()) if callable(c.cell_contents)]
        reads.append(getattr(inner[0] if inner else fn, "__qualname__", repr(fn)))

        def slow(*a):
            time.sleep(0.5)
            return fn(*a)
        return await run(slow, *args)

    db.run = slow_run
    responses = await asyncio.gather(*(client.get("/api/studies?limit=5", headers=bearer(tokens))
                                       for _ in range(30)))
    bodies = {await r.read() for r in responses}
    assert [r.status for r in responses] == [200] * 30
    assert len(bodies) == 1
    page = json.loads(bodies.pop())
    assert (page["total"], len(page["items"])) == (7, 5)
    # read_after: the event feed's own poll; AuditTrail.record_many: the reads' audit rows (written, not read)
    asked = sorted(r for r in reads if r not in ("read_after", "AuditTrail.record_many"))
    assert asked == ["Auth.principal", "studies.<locals>.read"], asked   # 30 of each before


@pytest.fixture
def seven_studies(env):
    for i in range(7):
        env.add_instance(f"1.2.826.0.1.3680043.10.9.{i}", "PT", 1, patient_id=f"P{i}", study_date="20261101")
    return env


async def test_a_load_is_shared_and_its_failure_reaches_every_caller():
    flight: SingleFlight[int] = SingleFlight()
    started, release = [], asyncio.Event()

    async def load() -> int:
        started.append(1)
        await release.wait()
        return 42

    waiters = [asyncio.ensure_future(flight("k", load)) for _ in range(5)]
    await asyncio.sleep(0)
    waiters[0].cancel()                                  # one caller gives up: the others still get it
    release.set()
    assert await asyncio.gather(*waiters[1:]) == [42] * 4
    assert started == [1]

    async def fails() -> int:
        raise ValueError("no such token")
    results = await asyncio.gather(*(flight("k", fails) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)     # a finished load is not reused
