"""The first start of `serve` on an empty database creates `admin` with a random password, printed
once on the console and nowhere else; later starts, and databases that already have accounts, get none."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.nodeproc import node_config, run_cli, running_node

LINE = re.compile(r"^created the first account admin with password (\S+)$", re.MULTILINE)


def login(api_port: int, username: str, password: str) -> int:
    """HTTP status of POST /api/auth/login."""
    body = json.dumps({"username": username, "password": password}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{api_port}/api/auth/login", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def first_password(console: str) -> str:
    found = LINE.findall(console)
    assert len(found) == 1, f"expected one first-account line, got {len(found)}:\n{console[-3000:]}"
    return found[0]


def test_first_start_prints_a_password_that_signs_in_once_and_never_again(tmp_path: Path):
    with running_node(tmp_path / "first") as node:
        password = first_password(node.log_text())
        assert len(password) >= 16
        assert login(node.api_port, "admin", password) == 200
        assert login(node.api_port, "admin", password + "x") == 401
        listed = json.loads(node.cli("users", "list", "--json").stdout)
        assert [(u["username"], u["role"]) for u in listed] == [("admin", "admin")]
    # nothing the node wrote into its data folder (database, keys, logs) holds the password
    for f in node.data_dir.rglob("*"):
        if f.is_file():
            assert password.encode() not in f.read_bytes(), f
    with running_node(tmp_path / "second", config=node.config) as again:
        assert not LINE.search(again.log_text())
        assert login(again.api_port, "admin", password) == 200


def test_no_first_account_when_accounts_exist(tmp_path: Path):
    config = node_config(tmp_path / "var")
    path = tmp_path / "pre.yaml"
    path.write_text(json.dumps(config))
    added = run_cli("users", "add", "it.admin", "--role", "admin", "--config", str(path),
                    input="a long enough password\n")
    assert added.returncode == 0, added.stderr
    with running_node(tmp_path, config=config) as node:
        assert not LINE.search(node.log_text())
        listed = json.loads(node.cli("users", "list", "--json").stdout)
        assert [u["username"] for u in listed] == ["it.admin"]
