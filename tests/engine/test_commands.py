"""Commands that only read (`studies`, `jobs`, `users list`) leave the schema alone: they run beside live
nodes, and only `db upgrade` and `serve` may migrate the database those nodes use."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from neuropetrix.store import migrate
from neuropetrix.store.db import make_engine
from tests.support.nodeproc import run_cli

READ_ONLY = (("studies", "--json"), ("jobs", "--json"), ("users", "list", "--json"))


def config_for(tmp_path: Path) -> tuple[Path, Path]:
    db = tmp_path / "var" / "neuropetrix.db"
    config = tmp_path / "node.yaml"
    config.write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\n", encoding="utf-8")
    return config, db


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: " ".join(c[:2]))
def test_read_only_command_refuses_an_old_schema(tmp_path: Path, command: tuple[str, ...]) -> None:
    config, db = config_for(tmp_path)
    engine = make_engine(f"sqlite:///{db}")
    migrate.upgrade(engine, "0001")
    done = run_cli(*command, "--config", str(config))
    assert done.returncode == 2, done.stdout
    assert done.stderr.strip() == ("neuropetrix: the database is at revision 0001, this version needs "
                                   f"{', '.join(migrate.head_revisions())}: run `neuropetrix db upgrade`")
    assert migrate.current_revision(engine) == "0001"


def test_read_only_command_creates_no_database(tmp_path: Path) -> None:
    config, db = config_for(tmp_path)
    done = run_cli("studies", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.strip() == f"neuropetrix: no database at {db}: run `neuropetrix db upgrade` (or start the node)"
    assert not db.exists()


def test_after_db_upgrade_read_only_commands_answer(tmp_path: Path) -> None:
    config, db = config_for(tmp_path)
    upgraded = run_cli("db", "upgrade", "--config", str(config))
    assert upgraded.returncode == 0, upgraded.stderr
    for command in READ_ONLY:
        done = run_cli(*command, "--config", str(config))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == []
