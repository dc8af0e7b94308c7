"""Headless Chromium (Debian's) driven over the Chrome DevTools Protocol with aiohttp's WebSocket
client: enough to load a page, run JavaScript in it, wait for a condition and take a screenshot."""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

# Debian's /usr/bin/chromium is a launcher script that fails here; the real binary runs headless.
CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome")


def chromium_binary() -> str:
    for c in CANDIDATES:
        path = shutil.which(c) or (c if Path(c).is_file() else None)
        if path:
            return path
    pytest.fail("Chromium is not installed: run `make test`, which installs Debian's chromium")


# what DevTools answers an evaluation that a navigation (a click that sets location) cut off
NAVIGATING = ("Inspected target navigated or closed", "Execution context was destroyed",
              "Cannot find context with specified id")


class Navigating(RuntimeError):
    """The page navigated while a command ran in it."""


def _failure(what: str, detail: str) -> RuntimeError:
    return (Navigating if any(m in detail for m in NAVIGATING) else RuntimeError)(f"{what}: {detail}")


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict:
        msg_id = next(self._ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=60)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise _failure(method, str(msg["error"]))
                return msg["result"]

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        if "exceptionDetails" in result:
            raise _failure(expression, str(result["exceptionDetails"]))
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str, timeout: float = 60) -> None:
        """Until `expression` is truthy in the page; fails naming `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if await self.evaluate(f"Boolean({expression})"):     # a DOM node comes back as {}
                    return
            except Navigating:        # asked while the page was being replaced: ask the new one
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", f"{url} to load")

    async def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(data["data"]))


class Chromium:
    def __init__(self, profile: Path, width: int = 1280, height: int = 900) -> None:
        self.profile = profile
        self.size = f"{width},{height}"
        self.proc: subprocess.Popen | None = None
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Page:
        self.profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             f"--window-size={self.size}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Chromium did not start its DevTools endpoint")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{port}/json/list") as r:
            target = next(t for t in json.loads(await r.text()) if t["type"] == "page")
        ws = await self.session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        return Page(ws)

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
