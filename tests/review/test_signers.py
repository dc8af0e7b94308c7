"""A signer's display name and organisation, as the SR's verifying observer names them: set with
`neuropetrix users add … --display-name … --organisation …` and through the users API (admin)."""
from __future__ import annotations

import json

import pytest

from tests.api.conftest import PASSWORD
from tests.review.conftest import bearer, login
from tests.support.nodeproc import run_cli

pytestmark = pytest.mark.asyncio


async def test_the_cli_sets_and_lists_them(tmp_path):
    config = tmp_path / "node.yaml"
    config.write_text(json.dumps({"node": {"data_dir": str(tmp_path / "var")}}))
    add = run_cli("users", "add", "dr.kaya", "--role", "physician", "--display-name", "Dr. Şule Kaya",
                  "--organisation", "Ege Üniversitesi Nükleer Tıp", "--config", str(config), input=PASSWORD + "\n")
    assert add.returncode == 0, add.stderr
    listed = json.loads(run_cli("users", "list", "--json", "--config", str(config)).stdout)
    assert [(u["display_name"], u["organisation"]) for u in listed] == [
        ("Dr. Şule Kaya", "Ege Üniversitesi Nükleer Tıp")]
    bad = run_cli("users", "add", "x", "--role", "physician", "--display-name", "Kaya^Şule", "--config", str(config),
                  input=PASSWORD + "\n")
    assert bad.returncode == 2 and "display_name" in bad.stderr


async def test_an_administrator_sets_them_through_the_api(make_env, aiohttp_client):
    client = await aiohttp_client(make_env().app())
    admin = bearer(await login(client, "admin"))
    r = await client.patch("/api/users/physician", headers=admin,
                           json={"display_name": "Ayşe Yılmaz", "organisation": "Hacettepe"})
    assert r.status == 200 and (await r.json())["display_name"] == "Ayşe Yılmaz"
    r = await client.post("/api/users", headers=admin, json={"username": "dr.new", "password": PASSWORD,
                                                             "role": "physician", "organisation": "Ege"})
    assert r.status == 201 and (await r.json())["organisation"] == "Ege"
    assert (await client.patch("/api/users/physician", headers=admin, json={"display_name": 7})).status == 400
    physician = bearer(await login(client, "physician"))
    assert (await client.patch("/api/users/physician", headers=physician, json={"display_name": "x"})).status == 403
