"""`neuropetrix db upgrade` from every earlier schema, with data in it, on SQLite and PostgreSQL: a
database stopped at each revision of the migration graph (the revisions are read from the scripts, so
a new migration is tested here without editing this file) holds a study, its instance, an event, a
job and an account — whatever that revision has tables for — and after the upgrade the current code
reads them all, and the account still signs in."""
from __future__ import annotations

import json
from datetime import datetime

import psycopg
import pytest
from alembic.script import ScriptDirectory
from argon2 import PasswordHasher
from sqlalchemy import Engine, MetaData, insert

from neuropetrix.api import users
from neuropetrix.engine.jobs import job_json, list_jobs
from neuropetrix.store import migrate
from neuropetrix.store.db import make_engine, make_sessionmaker
from neuropetrix.store.models import Event
from neuropetrix.store.queries import list_studies
from tests.engine.conftest import postgres_server  # noqa: F401  (a fixture)
from tests.support.nodeproc import run_cli

HEADS = set(migrate.head_revisions())
EARLIER = sorted(r.revision for r in ScriptDirectory.from_config(migrate._config()).walk_revisions()
                 if r.revision not in HEADS)
AT = datetime(2026, 11, 24, 10, 0, 0)
ROOT_UID = "1.2.826.0.1.3680043.10.1"
STUDY_UID, SERIES_UID, SOP_UID = f"{ROOT_UID}.1", f"{ROOT_UID}.2", f"{ROOT_UID}.3"
PASSWORD = "an upgraded password"

# the column that refers to the row of another table, filled with that row's key (ids come from the
# database's own sequences, as in a node's life)
REFERS = {"studies": ("patient_pk", "patients"), "series": ("study_pk", "studies"),
          "instances": ("series_pk", "series"), "jobs": ("source_event_id", "events")}
ROWS: dict[str, dict] = {     # one row per table, by table name; columns a revision lacks are left out
    "patients": {"patient_id": "10000000146", "issuer": "", "name": "YILMAZ^AYŞE", "birth_date": "19650314",
                 "sex": "F"},
    "studies": {"study_uid": STUDY_UID, "study_date": "20261124", "study_time": "100000",
                "accession_number": "ACC1", "description": "PET^CT Whole Body FDG", "state": "complete",
                "first_received_at": AT, "last_received_at": AT, "completed_at": AT, "completion_count": 1},
    "series": {"series_uid": SERIES_UID, "modality": "PT", "series_number": 2,
               "description": "PET WB", "body_part": "WHOLEBODY", "frame_of_reference_uid": "1.2.3",
               "calling_ae": "PETCT1"},
    "instances": {"sop_instance_uid": SOP_UID, "sop_class_uid": "1.2.840.10008.5.1.4.1.1.128",
                  "instance_number": 1, "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                  "path": f"{STUDY_UID}/{SERIES_UID}/{SOP_UID}.dcm", "size_bytes": 1234, "received_at": AT,
                  "calling_ae": "PETCT1", "calling_host": "127.0.0.1"},
    "events": {"kind": "study.complete", "study_uid": STUDY_UID, "created_at": AT,
               "payload": {"reason": "quiet", "instances": 1}},
    "jobs": {"kind": "forward", "study_uid": STUDY_UID, "route": "petct", "action_index": 0,
             "destination": "dicom:pacs", "objects": ["study"], "params": {"peer": "pacs"},
             "state": "done", "attempts": 1, "max_attempts": 12, "next_attempt_at": AT, "worker": "old:1",
             "last_error": "", "result": {"sent": 1}, "created_at": AT, "updated_at": AT, "finished_at": AT},
    "users": {"username": "dr.kaya", "password_hash": PasswordHasher().hash(PASSWORD), "role": "physician",
              "disabled": False, "token_version": 0, "created_at": AT},
}


def fill(engine: Engine) -> set[str]:
    """Insert ROWS into the tables this revision has; returns the tables filled."""
    meta = MetaData()
    meta.reflect(engine)
    filled, keys = set(), {}
    with engine.begin() as conn:
        for name, row in ROWS.items():           # in foreign-key order
            table = meta.tables.get(name)
            if table is None:
                continue
            values = {k: v for k, v in row.items() if k in table.c}
            if name in REFERS:
                column, other = REFERS[name]
                values[column] = keys[other]
            keys[name] = conn.execute(insert(table).values(values).returning(table.c.id)).scalar_one()
            filled.add(name)
    return filled


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    base = request.getfixturevalue("postgres_server")
    name = "upgrade_" + tmp_path.name.lower().replace("-", "_")[-24:]
    with psycopg.connect(base.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return f"{base}/{name}"


def test_there_are_earlier_revisions():
    assert "0001" in EARLIER and not HEADS & set(EARLIER)


@pytest.mark.parametrize("revision", EARLIER)
def test_upgrade_keeps_the_data_of_an_earlier_schema(url: str, revision: str):
    engine = make_engine(url)
    try:
        migrate.upgrade(engine, revision)
        assert migrate.current_revision(engine) == revision
        filled = fill(engine)
        assert {"patients", "studies", "series", "instances", "events"} <= filled
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == ", ".join(sorted(HEADS))
        with make_sessionmaker(engine).begin() as s:
            [study] = list_studies(s)
            assert (study.study_uid, study.patient_name, study.modalities, study.series, study.instances,
                    study.state) == (STUDY_UID, "YILMAZ^AYŞE", ["PT"], 1, 1, "complete")
            assert [(e.kind, e.payload) for e in s.query(Event)] == [("study.complete", ROWS["events"]["payload"])]
            jobs = [job_json(j) for j in list_jobs(s)]
            if "jobs" in filled:
                assert [(j["kind"], j["state"], j["destination"], j["result"]) for j in jobs] == [
                    ("forward", "done", "dicom:pacs", {"sent": 1})]
            if "users" in filled:
                user = users.verify_password(s, "dr.kaya", PASSWORD)
                assert user is not None and user.role == "physician"
            users.add_user(s, "after.upgrade", PASSWORD, "viewer")      # the current code writes too
    finally:
        engine.dispose()


def test_db_upgrade_command_from_the_oldest_revision(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'neuropetrix.db'}")
    migrate.upgrade(engine, EARLIER[0])
    fill(engine)
    engine.dispose()
    config = tmp_path / "node.yaml"
    config.write_text(json.dumps({"node": {"data_dir": str(tmp_path / "var")}}))
    result = run_cli("db", "upgrade", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"database at revision {', '.join(sorted(HEADS))} (was {EARLIER[0]})"
    listed = json.loads(run_cli("studies", "--json", "--config", str(config)).stdout)
    assert [s["study_uid"] for s in listed] == [STUDY_UID]
