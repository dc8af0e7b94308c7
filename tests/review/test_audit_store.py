"""The review audit is append-only in the database itself, on SQLite and on PostgreSQL: the migration's
triggers refuse UPDATE and DELETE, so no code path (a bug, an admin's script through the node) rewrites
who signed what; rows are added as before. Migrating down and up again works."""
from __future__ import annotations

import pytest
import sqlalchemy
from alembic import command
from sqlalchemy import select

from neuropetrix.store import migrate
from neuropetrix.store.db import open_database, utcnow
from neuropetrix.store.reviews import ReviewAction
from tests.store.test_store import database_url  # noqa: F401  (fixture: SQLite and PostgreSQL)


def test_audit_rows_are_added_never_changed(database_url):  # noqa: F811
    engine, sessions = open_database(database_url)
    with sessions.begin() as s:
        s.add(ReviewAction(study_uid="1.2.3", at=utcnow(), username="ayse", role="physician", action="signed",
                           version=2, detail={"status": "final"}))
    for statement in ("UPDATE review_actions SET username = 'mallory'", "DELETE FROM review_actions"):
        with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"), sessions.begin() as s:
            s.execute(sqlalchemy.text(statement))
    with sessions.begin() as s:
        s.add(ReviewAction(study_uid="1.2.3", at=utcnow(), username="", role="", action="version made", version=2,
                           detail={}))
    with sessions() as s:
        assert [(a.username, a.action) for a in s.scalars(select(ReviewAction).order_by(ReviewAction.id))] == [
            ("ayse", "signed"), ("", "version made")]
    cfg = migrate._config()
    with engine.begin() as conn:             # down one step on 0010's branch (the triggers and tables go) …
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0010-1")
    assert "review_actions" not in sqlalchemy.inspect(engine).get_table_names()
    migrate.upgrade(engine)                  # … and up again
    assert "review_actions" in sqlalchemy.inspect(engine).get_table_names()
    engine.dispose()
