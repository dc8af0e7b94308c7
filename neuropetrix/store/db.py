"""Database engine and sessions: SQLite by default (WAL, full sync), PostgreSQL with the same code."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.store import migrate


def utcnow() -> datetime:
    """Naive UTC, the form every timestamp in the database takes."""
    return datetime.now(UTC).replace(tzinfo=None)


def _sqlite_pragmas(synchronous: str):
    def on_connect(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        # WAL lets the API read while the SCP writes; FULL makes every commit durable on its own.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()
    return on_connect


def make_engine(url: str, durable_commits: bool = True) -> Engine:
    """An engine for `url`. `durable_commits=False` (the index of received instances, which can be
    rebuilt from the files: see store/recovery.py) commits without waiting for the disk: SQLite
    `synchronous=NORMAL` in WAL mode, PostgreSQL `synchronous_commit=off`. Both stay consistent
    after a power loss; only the last commits may be missing."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas("FULL" if durable_commits else "NORMAL"))
        return engine
    options = {} if durable_commits else {"connect_args": {"options": "-c synchronous_commit=off"}}
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, **options)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def open_database(url: str) -> tuple[Engine, sessionmaker[Session]]:
    """Engine and sessions for `url`, its schema brought up to date."""
    engine = make_engine(url)
    migrate.upgrade(engine)
    return engine, make_sessionmaker(engine)


def open_current(url: str) -> tuple[Engine, sessionmaker[Session]]:
    """Engine and sessions for an existing database whose schema is current; never migrates nor
    creates one (migrate.SchemaNotCurrent otherwise), for commands that run beside live nodes."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and not Path(path).is_file():
            raise migrate.SchemaNotCurrent(f"no database at {path}: run `neuropetrix db upgrade` "
                                           "(or start the node)")
    engine = make_engine(url)
    try:
        migrate.check_current(engine)
    except migrate.SchemaNotCurrent:
        engine.dispose()
        raise
    return engine, make_sessionmaker(engine)
