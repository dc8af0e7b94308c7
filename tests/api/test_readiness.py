"""/readyz tells a load balancer or systemd what it needs (issue 14, item 4): not ready while the
database answers reads but refuses writes (C-STOREs are then refused with 0xA700), nor while the
storage disk has less free space than `api.readyz_min_free_mb`; the reason is in the answer."""
from __future__ import annotations

import shutil

import pytest

from neuropetrix.store.db import make_engine, make_sessionmaker

pytestmark = [pytest.mark.asyncio, pytest.mark.faults]


async def test_not_ready_while_the_database_is_read_only(env, aiohttp_client):
    db_file = env.settings.node.data_dir / "neuropetrix.db"
    read_only = make_sessionmaker(make_engine(f"sqlite:///file:{db_file}?mode=ro&uri=true"))
    client = await aiohttp_client(env.app(read_only))
    r = await client.get("/readyz")
    body = await r.json()
    assert r.status == 503 and body["ready"] is False
    assert body["checks"]["database"].startswith("read-only") and "readonly database" in body["checks"]["database"]
    assert body["checks"]["storage"] == "ok"


async def test_not_ready_while_the_disk_is_full(make_env, aiohttp_client):
    free_mb = shutil.disk_usage("/tmp").free // 2**20
    env = make_env(readyz_min_free_mb=free_mb * 4 + 1024)      # more than the disk could ever have free
    client = await aiohttp_client(env.app())
    r = await client.get("/readyz")
    body = await r.json()
    assert r.status == 503 and body["checks"]["database"] == "ok"
    assert body["checks"]["storage"].startswith("disk full:") and "api.readyz_min_free_mb" in body["checks"]["storage"]
