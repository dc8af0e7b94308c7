"""Schema migrations with alembic, driven from code so `neuropetrix db upgrade` needs no alembic.ini."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).with_name("migrations")


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine, revision: str = "heads") -> str | None:
    """Bring the schema to `revision` (all heads by default: parts of the schema may evolve on
    separate branches of the migration graph); returns the revision(s) now current."""
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(engine)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    return ", ".join(sorted(heads)) or None


class SchemaNotCurrent(Exception):
    """The database's schema is not the one this version of the code expects."""


def check_current(engine: Engine) -> None:
    """Raise SchemaNotCurrent unless the schema is at every head: a command that only reads must not
    migrate a database that running nodes use (only `db upgrade` and `serve` do)."""
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    expected = set(head_revisions())
    if current == expected:
        return
    if not current:
        raise SchemaNotCurrent("the database has no schema yet: run `neuropetrix db upgrade` (or start the node)")
    if current - expected and not (expected - current):
        raise SchemaNotCurrent(f"the database is at revision {', '.join(sorted(current))}, newer than this "
                               f"version of neuropetrix knows ({', '.join(sorted(expected))}): upgrade neuropetrix")
    raise SchemaNotCurrent(f"the database is at revision {', '.join(sorted(current))}, this version needs "
                           f"{', '.join(sorted(expected))}: run `neuropetrix db upgrade`")


def head_revisions() -> tuple[str, ...]:
    return tuple(sorted(ScriptDirectory.from_config(_config()).get_heads()))
