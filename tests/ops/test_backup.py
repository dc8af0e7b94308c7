"""`neuropetrix backup` while the node runs, and `neuropetrix restore` into an empty folder (and an empty
database), on SQLite and on PostgreSQL: every study, job and account comes back as it was at backup
time; instances stored after the backup are indexed again from a storage folder that survived; the
restored node starts and its accounts sign in."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg
import pytest

from neuropetrix.api import users
from neuropetrix.config.loader import parse_settings
from neuropetrix.engine.jobs import job_json, list_jobs
from neuropetrix.store.db import open_database
from neuropetrix.store.queries import list_studies
from tests.conftest import storescu
from tests.engine.conftest import FAST_ENGINE, jobs_of, postgres_server, wait_for  # noqa: F401 (a fixture)
from tests.firstrun.test_first_account import login
from tests.support.nodeproc import SCANNER_AE, free_port, node_config, run_cli, running_node
from tests.support.peers import storescp
from tests.support.synthetic import StudySpec, write_petct_study

PASSWORD = "a backup password"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_urls(request, tmp_path) -> dict[str, str | None]:
    """Database URLs of the source node and of two restores (None: SQLite in each data folder)."""
    names = ("source", "restored", "survived")
    if request.param == "sqlite":
        return dict.fromkeys(names)
    base = request.getfixturevalue("postgres_server")
    tag = tmp_path.name.lower().replace("-", "_")[-20:]
    with psycopg.connect(base.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as c:
        for name in names:
            c.execute(f"CREATE DATABASE {name}_{tag}")
    return {name: f"{base}/{name}_{tag}" for name in names}


def settled(node, count: int):
    jobs = jobs_of(node)
    return jobs if len(jobs) == count and all(j["state"] in ("done", "failed") for j in jobs) else None


def listed(url: str) -> tuple[list, list, list]:
    """What `studies --json`, `jobs --json` and `users list --json` print (the same functions, run here:
    each command would cost a Python start-up)."""
    engine, sessions = open_database(url)
    try:
        with sessions() as s:
            return ([r.to_json() for r in list_studies(s)], [job_json(j) for j in list_jobs(s)],
                    [u.to_json() for u in users.list_users(s)])
    finally:
        engine.dispose()


def db_url(config: dict) -> str:
    return parse_settings(json.dumps(config), environ={}).node.db_url


def config_file(tmp_path: Path, config: dict, data_dir: Path, url: str | None) -> tuple[Path, str]:
    """A copy of `config` on another data folder and database, written to a file; (file, database URL)."""
    config = {**config, "node": {**config["node"], "data_dir": str(data_dir), "database_url": url}}
    path = tmp_path / f"{data_dir.parent.name}.yaml"
    path.write_text(json.dumps(config))
    return path, db_url(config)


def test_backup_while_running_and_restore_into_an_empty_node(tmp_path: Path, small_study, database_urls):
    _, first = small_study
    _, second = write_petct_study(tmp_path / "later", StudySpec(ct_slices=4, pet_slices=4))
    backup = tmp_path / "backup"
    with storescp(tmp_path / "pacs", "PACS") as pacs_port:
        config = node_config(tmp_path / "a" / "var", {
            "node": {"database_url": database_urls["source"]},
            "peers": [{"name": "scanner", "ae_title": SCANNER_AE, "host": "127.0.0.1", "port": free_port()},
                      {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port},
                      {"name": "gone", "ae_title": "GONE", "host": "127.0.0.1", "port": free_port()}],
            # two attempts: a forward to the live PACS survives one hiccup, the dead peer's is parked
            "engine": {**FAST_ENGINE, "retry": {**FAST_ENGINE["retry"], "max_attempts": 2}},
            "routes": [{"name": "copies", "match": {"modality": "PT"},
                        "actions": [{"forward": "pacs"}, {"forward": "gone"}]}]})
        with running_node(tmp_path / "a", config=config) as node:
            assert node.cli("users", "add", "dr.kaya", "--role", "physician", input=PASSWORD + "\n").returncode == 0
            assert storescu(node.dicom_port, first[0].parent.parent).returncode == 0
            jobs = wait_for("the forward jobs to settle", lambda: settled(node, 2), node)
            assert sorted(j["state"] for j in jobs) == ["done", "failed"], jobs   # one delivered, one parked
            expected = listed(db_url(config))
            made = node.cli("backup", str(backup))                              # online: the node runs
            assert made.returncode == 0, made.stderr
            assert storescu(node.dicom_port, tmp_path / "later").returncode == 0   # after the backup
            wait_for("the later study indexed", lambda: len(listed(db_url(config))[0]) == 2, node)
            final_studies = listed(db_url(config))[0]
        source_data = node.data_dir

    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["counts"] == {"studies": 1, "instances": len(first), "jobs": 2, "users": 2}
    assert {"api_signing.key", "pseudonym.key"} <= set(manifest["keys"])

    # an empty folder (and an empty database): everything as it was when the backup was made
    restored, restored_url = config_file(tmp_path, config, tmp_path / "b" / "var", database_urls["restored"])
    result = run_cli("restore", str(backup), "--config", str(restored))
    assert result.returncode == 0, result.stderr
    assert listed(restored_url) == expected
    assert (tmp_path / "b" / "var" / "api_signing.key").read_bytes() == (source_data / "api_signing.key").read_bytes()
    assert (tmp_path / "b" / "var" / "api_signing.key").stat().st_mode & 0o777 == 0o600
    again = run_cli("restore", str(backup), "--config", str(restored))
    assert again.returncode == 2 and "restore needs an empty node" in again.stderr

    # the storage folder survived with a study newer than the backup: it is indexed from its files
    survived_dir = tmp_path / "c" / "var"
    shutil.copytree(source_data / "storage", survived_dir / "storage")
    survived, survived_url = config_file(tmp_path, config, survived_dir, database_urls["survived"])
    result = run_cli("restore", str(backup), "--config", str(survived))
    assert result.returncode == 0, result.stderr
    assert f"({len(second)} re-indexed from storage)" in result.stdout
    studies, jobs, accounts = listed(survived_url)
    assert sorted((s["study_uid"], s["instances"]) for s in studies) == sorted(
        (s["study_uid"], s["instances"]) for s in final_studies)
    assert (jobs, accounts) == expected[1:]

    # the restored node runs, and an account from before the backup signs in
    restarted = json.loads(restored.read_text())
    restarted["node"].update(dicom_port=free_port(), api_port=free_port())
    with running_node(tmp_path / "b", config=restarted) as node:
        assert login(node.api_port, "dr.kaya", PASSWORD) == 200
        assert "created the first account" not in node.log_text()


def test_restore_refuses_an_unfinished_backup(tmp_path: Path):
    (tmp_path / "half").mkdir()
    config = tmp_path / "node.yaml"
    config.write_text(json.dumps({"node": {"data_dir": str(tmp_path / "var")}}))
    result = run_cli("restore", str(tmp_path / "half"), "--config", str(config))
    assert result.returncode == 2 and "no manifest.json: not a backup, or an unfinished one" in result.stderr
