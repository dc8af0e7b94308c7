"""`neuropetrix users add|passwd|disable|list`, run as a user would run it."""
from __future__ import annotations

import json

from tests.api.conftest import PASSWORD
from tests.support.nodeproc import run_cli


def test_users_command(tmp_path):
    config = tmp_path / "node.yaml"
    config.write_text(json.dumps({"node": {"data_dir": str(tmp_path / "var")}}))
    add = run_cli("users", "add", "dr.kaya", "--role", "physician", "--config", str(config), input=PASSWORD + "\n")
    assert add.returncode == 0, add.stderr
    assert "added with role physician" in add.stdout
    dup = run_cli("users", "add", "dr.kaya", "--role", "viewer", "--config", str(config), input=PASSWORD + "\n")
    assert dup.returncode == 2 and dup.stderr.strip() == "neuropetrix: user 'dr.kaya' exists"
    weak = run_cli("users", "add", "x", "--role", "viewer", "--config", str(config), input="short\n")
    assert weak.returncode == 2 and "too short" in weak.stderr
    assert run_cli("users", "passwd", "dr.kaya", "--config", str(config), input="another password\n").returncode == 0
    assert run_cli("users", "disable", "dr.kaya", "--config", str(config)).returncode == 0
    listed = json.loads(run_cli("users", "list", "--json", "--config", str(config)).stdout)
    assert [(u["username"], u["role"], u["disabled"]) for u in listed] == [("dr.kaya", "physician", True)]
    missing = run_cli("users", "disable", "nobody", "--config", str(config))
    assert missing.returncode == 2 and "no user named 'nobody'" in missing.stderr
