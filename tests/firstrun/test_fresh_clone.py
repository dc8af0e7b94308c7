"""The first hour of a newcomer, as the README tells it: `make run` in a fresh copy of the repository,
the password it prints signs in, `make demo` sends the whole-body phantom, and within 120 s the API
shows the study analysed and its results delivered; headless Chromium then takes a picture of the study
page (test-artifacts/firstrun/study-page.png; copy it to docs/screenshots/ when the README's picture is
to change: a test never rewrites a tracked file, so a CI clone stays clean).

"Fresh" is a copy of what a clone of this checkout holds (tracked files, and new files not ignored),
without .venv/ or var/, run with the venv already installed (`make VENV=… -o VENV/.installed`): a
literal `git clone` would miss uncommitted work, and its `make run` would spend minutes reinstalling
1.9 GB of dependencies — the one step a newcomer waits for once. PYTHONPATH points at the copy, so its
code runs, not the installed checkout's. Ports are free loopback ones (CONFIG= a copy of
config/node.yaml with only the ports changed), so the test runs beside others.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.api.test_dashboard import _sign_in
from tests.firstrun.conftest import default_config
from tests.firstrun.test_first_account import LINE
from tests.support.browser import Chromium
from tests.support.nodeproc import ROOT, wait_for_port

pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.timeout(480)]
SCREENSHOT = ROOT / "test-artifacts" / "firstrun" / "study-page.png"
ANALYSED_WITHIN_S = 120


def fresh_copy(dest: Path) -> None:
    """The files a clone of this checkout would have: tracked ones and new ones git does not ignore."""
    names = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src, target = ROOT / name, dest / name
        if not src.exists() and not src.is_symlink():        # deleted in the work tree, not yet committed
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, target)


def make(clone: Path, target: str) -> list[str]:
    venv = Path(sys.executable).parent.parent
    return ["make", "-C", str(clone), target, f"VENV={venv}", "CONFIG=site.yaml", "-o", f"{venv}/.installed"]


async def api(http: aiohttp.ClientSession, base: str, path: str, token: str) -> dict:
    async with http.get(base + path, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_make_run_sign_in_make_demo_and_see_the_study_analysed(tmp_path: Path):
    clone = tmp_path / "neuropetrix"
    fresh_copy(clone)
    config = default_config(Path("./var"))                 # the default data folder, inside the copy
    (clone / "site.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEUROPETRIX_")}
    env.update(PYTHONPATH=str(clone), TCP_NODELAY="1")
    console = tmp_path / "make-run.log"
    with console.open("wb") as out:
        # in the background for the whole test, in its own process group: make and the node
        node = subprocess.Popen(make(clone, "run"), stdout=out, stderr=subprocess.STDOUT, env=env,  # noqa: ASYNC220
                                start_new_session=True)
    base = f"http://127.0.0.1:{config['node']['api_port']}"
    try:
        wait_for_port(config["node"]["dicom_port"], timeout=120, proc=node)
        [password] = LINE.findall(console.read_text())
        async with aiohttp.ClientSession() as http:
            async with http.post(base + "/api/auth/login", json={"username": "admin", "password": password}) as r:
                assert r.status == 200, await r.text()
                token = (await r.json())["access_token"]

            started = time.monotonic()
            demo = await asyncio.create_subprocess_exec(*make(clone, "demo"), env=env, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
            detail = None
            while time.monotonic() - started < ANALYSED_WITHIN_S:
                listed = (await api(http, base, "/api/studies", token))["items"]
                if listed:
                    detail = await api(http, base, f"/api/studies/{listed[0]['study_uid']}", token)
                    if detail["analysis"] and all(j["state"] == "done" for j in detail["deliveries"]):
                        break
                await asyncio.sleep(1)
            elapsed = time.monotonic() - started
            said = (await asyncio.wait_for(demo.communicate(), 300))[0].decode()
            assert demo.returncode == 0, said
            assert detail is not None and detail["analysis"], f"not analysed after {elapsed:.0f} s:\n{said}"
            assert elapsed < ANALYSED_WITHIN_S, f"analysed and delivered after {elapsed:.0f} s:\n{said}"
            print(f"analysed and delivered {elapsed:.0f} s after `make demo` started")
        uid = detail["study_uid"]
        assert detail["patient_name"] == "DEMİR^ŞÜKRÜ" and detail["state"] == "complete"
        assert sorted((j["kind"], j["destination"]) for j in detail["deliveries"]) == [
            ("analyze", "analysis"), ("forward", "dicom:demo")]
        assert detail["analysis"]["lesion_count"] > 0
        assert f"#/study/{uid}" in said

        async with Chromium(tmp_path / "chromium") as page:
            await page.goto(base + "/")
            await _sign_in(page, "admin", password)
            await page.evaluate(f"location.hash = {json.dumps('#/study/' + uid)}")
            mip = "document.querySelector('#mip')"
            await page.wait_for(f"{mip}.complete && {mip}.naturalWidth > 0", "the MIP picture", timeout=60)
            await page.wait_for("document.querySelectorAll('#lesions tbody tr').length > 0", "the lesion table")
            assert "DEMİR" in await page.evaluate("document.querySelector('#view-study').textContent")
            await page.screenshot(SCREENSHOT)
    finally:
        os.killpg(node.pid, signal.SIGTERM)
        node.wait(60)
    assert re.search(r"\bstopped\b", console.read_text()), console.read_text()[-3000:]
    assert (clone / "var" / "results" / uid / "mip.png").is_file()        # make run's data folder: ./var
