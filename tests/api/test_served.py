"""The API as `neuropetrix serve` runs it, in one process with the SCP: ready when the DICOM port is
open, its event loop's thread named "api" in the OS (what `top -H` and benchmarks/api.py look for),
WebSocket clients told "going away" on SIGTERM, and a clean exit."""
from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.support.nodeproc import running_node

pytestmark = pytest.mark.asyncio
PASSWORD = "served password"


async def test_serve_runs_the_api_and_stops_it_cleanly(tmp_path: Path):
    with running_node(tmp_path) as node:
        assert node.cli("users", "add", "tech", "--role", "technologist", input=PASSWORD + "\n").returncode == 0
        base = f"http://127.0.0.1:{node.api_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/readyz") as r:          # up as soon as the DICOM port is
                assert r.status == 200 and (await r.json())["checks"]["dicom"] == "ok"
            threads = [(task / "comm").read_text().strip() for task in Path(f"/proc/{node.proc.pid}/task").iterdir()]
            assert threads.count("api") == 1, threads
            async with http.post(f"{base}/api/auth/login", json={"username": "tech", "password": PASSWORD}) as r:
                token = (await r.json())["access_token"]
            sockets = [await http.ws_connect(f"{base}/api/ws", params={"token": token}) for _ in range(3)]
            for ws in sockets:
                assert (await ws.receive_json(timeout=10))["type"] == "hello"
            assert node.stop() == 0
            for ws in sockets:
                msg = await ws.receive(timeout=10)
                while msg.type == aiohttp.WSMsgType.TEXT:
                    msg = await ws.receive(timeout=10)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
    assert "stopped" in node.log_text()
