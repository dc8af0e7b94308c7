"""`neuropetrix backup DEST` and `neuropetrix restore SRC`: a node's database, key files, stored
instances and results, with a manifest; and the way back.

The database is copied first and consistently while the node runs (SQLite's online backup API,
`pg_dump` for PostgreSQL); files are copied after it, so every file the copied database names is in
the backup, and files that arrived meanwhile are too. Stored instances are immutable (a name is never
written twice), so a nightly backup into the same DEST copies only the new ones. What retention
deleted (a `study.pruned` event) is deleted from DEST too, file by file where the node no longer has
it: the rule binds the copies, and a restore must not bring those studies back. The manifest is
written last: a backup without one is unfinished and `restore` refuses it.

`restore` brings a node back on a data folder and database that hold no node yet. Instances in the
storage folder that the restored database does not list — those that arrived while the backup ran,
or a storage folder that survived (shared storage, the site's own file backup) with studies newer
than the backup — are indexed again from their files (store/recovery.py), so nothing received is lost.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, inspect, select
from sqlalchemy.engine import make_url

from neuropetrix.cli import CommandError, add_config_option, settings_from
from neuropetrix.config.secrets import KEY_FILES
from neuropetrix.config.settings import Settings
from neuropetrix.dicom_uids import InvalidUID, check_uid
from neuropetrix.store import migrate
from neuropetrix.store.accounts import User
from neuropetrix.store.db import make_engine, make_sessionmaker
from neuropetrix.store.eventlog import EventKind
from neuropetrix.store.files import FileStore
from neuropetrix.store.index import StudyIndex
from neuropetrix.store.jobs_models import Job
from neuropetrix.store.models import Event, Instance, Study
from neuropetrix.store.recovery import reindex_since

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_COPY, PG_DUMP = "database/neuropetrix.db", "database/neuropetrix.pgdump"
FOLDERS = ("storage", "results")                      # under data_dir, copied file by file


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("backup", help="copy the database, key files, storage and results to DEST")
    b.add_argument("dest", metavar="DEST", type=Path)
    add_config_option(b)
    b.set_defaults(handler=run_backup)
    r = sub.add_parser("restore", help="bring a node back from a backup onto an empty data folder and database")
    r.add_argument("src", metavar="SRC", type=Path)
    add_config_option(r)
    r.set_defaults(handler=run_restore)


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_path(url: str) -> Path:
    return Path(make_url(url).database or "")


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A SQLAlchemy PostgreSQL URL as libpq's, and an environment with its password (not on the
    command line, where `ps` shows it)."""
    u = make_url(url)
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    return u.set(drivername="postgresql", password=None).render_as_string(hide_password=False), env


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise CommandError(f"{name} is not installed: install the PostgreSQL client (Debian: postgresql-client)")
    return found


def _run(cmd: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CommandError(f"{Path(cmd[0]).name} failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _copy_tree(src: Path, dest: Path) -> tuple[int, int]:
    """Copy every file under `src` that `dest` lacks or holds with another size or time; (files, bytes)
    copied. In-flight `.incoming` files are never part of a backup."""
    files = size = 0
    if not src.is_dir():
        return 0, 0
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if not path.is_file() or rel.parts[0] == ".incoming":
            continue
        target = dest / rel
        try:
            st = path.stat()
            if target.is_file() and (t := target.stat()).st_size == st.st_size and int(t.st_mtime) == int(st.st_mtime):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        except FileNotFoundError:       # deleted since it was listed (a prune job): not in the backup
            continue
        files += 1
        size += st.st_size
    return files, size


def _pruned(url: str) -> dict[str, set[str]]:
    """The studies retention deleted something of, by folder: {"storage": {uid, ...}, "results": {...}}."""
    out: dict[str, set[str]] = {folder: set() for folder in FOLDERS}
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as s:
            for uid, payload in s.execute(select(Event.study_uid, Event.payload)
                                          .where(Event.kind == EventKind.STUDY_PRUNED)):
                try:
                    out["results" if (payload or {}).get("what") == "results" else "storage"].add(
                        check_uid(uid, "StudyInstanceUID"))
                except InvalidUID:
                    continue
    finally:
        engine.dispose()
    return out


def _drop_pruned(src: Path, dest: Path, study_uids: set[str]) -> int:
    """Delete from the backup folder `dest` the files of these studies that `src` no longer has (a
    study received again after its prune keeps its new files); how many were deleted. Only pruned
    studies: a file missing from the node for any other reason keeps its backup copy."""
    removed = 0
    for uid in study_uids:
        folder = dest / uid
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*"), reverse=True):        # files before their folders
            if path.is_file() and not (src / path.relative_to(dest)).exists():
                path.unlink()
                removed += 1
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        if not any(folder.iterdir()):
            folder.rmdir()
    return removed


def _private_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(0o600)


@dataclass(frozen=True)
class Counts:
    studies: int
    instances: int
    jobs: int
    users: int

    @classmethod
    def of(cls, url: str) -> Counts:
        engine = make_engine(url)
        try:
            with make_sessionmaker(engine)() as s:
                return cls(*(s.scalar(select(func.count()).select_from(m)) or 0
                             for m in (Study, Instance, Job, User)))
        finally:
            engine.dispose()


def _dump_database(url: str, dest: Path) -> str:
    """A consistent copy of the database under `dest`; returns its path relative to `dest`."""
    if _is_sqlite(url):
        target = dest / SQLITE_COPY
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        source = sqlite3.connect(_sqlite_path(url), timeout=30)
        copy = sqlite3.connect(partial)
        try:
            with copy:
                source.backup(copy)       # pages copied while writers go on; the copy is one snapshot
        finally:
            copy.close()
            source.close()
        os.replace(partial, target)
        return SQLITE_COPY
    dsn, env = _libpq(url)
    target = dest / PG_DUMP
    target.parent.mkdir(parents=True, exist_ok=True)
    _run([_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", "-f", str(target), dsn], env)
    return PG_DUMP


def run_backup(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    node, dest = settings.node, args.dest
    url = node.db_url
    if _is_sqlite(url) and not _sqlite_path(url).is_file():
        raise CommandError(f"no database at {_sqlite_path(url)}: nothing to back up")
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MANIFEST).unlink(missing_ok=True)      # unfinished until the new manifest is written
    counts = Counts.of(url)
    database = _dump_database(url, dest)
    keys = []
    for path in sorted(node.data_dir.glob(KEY_FILES)):
        _private_copy(path, dest / "keys" / path.name)
        keys.append(path.name)
    if args.config:
        _private_copy(Path(args.config), dest / "config" / "node.yaml")   # it may hold tokens
    copied = {folder: _copy_tree(node.data_dir / folder, dest / folder) for folder in FOLDERS}
    pruned = _pruned(url)
    dropped = {folder: _drop_pruned(node.data_dir / folder, dest / folder, pruned[folder]) for folder in FOLDERS}
    engine = make_engine(url)
    try:
        revision = migrate.current_revision(engine)
    finally:
        engine.dispose()
    manifest = {
        "format": FORMAT, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(), "ae_title": node.ae_title,
        "database": {"kind": "sqlite" if _is_sqlite(url) else "postgresql", "file": database,
                     "sha256": _sha256(dest / database), "revision": revision},
        "counts": counts.__dict__, "keys": keys, "config": "config/node.yaml" if args.config else None,
        "copied": {folder: {"files": n, "bytes": b} for folder, (n, b) in copied.items()},
        "pruned": dropped,        # files deleted from the backup because retention deleted them
    }
    partial = dest / (MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, dest / MANIFEST)
    new = copied["storage"]
    print(f"backup in {dest}: database at revision {revision} ({counts.studies} studies, {counts.jobs} jobs, "
          f"{counts.users} accounts), {len(keys)} key file(s), {new[0]} new stored file(s) ({new[1]} bytes)"
          + (f", {sum(dropped.values())} pruned file(s) deleted from it" if any(dropped.values()) else ""))
    return 0


def _read_manifest(src: Path) -> dict:
    try:
        manifest = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CommandError(f"{src}: no {MANIFEST}: not a backup, or an unfinished one") from None
    except ValueError as exc:
        raise CommandError(f"{src / MANIFEST}: unreadable: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise CommandError(f"{src}: backup format {manifest.get('format')!r}, this version reads {FORMAT}")
    database = src / manifest["database"]["file"]
    if not database.is_file() or _sha256(database) != manifest["database"]["sha256"]:
        raise CommandError(f"{database}: missing or changed since the backup (checksum differs)")
    return manifest


def _check_empty(settings: Settings, kind: str) -> None:
    """Refuse to restore over a node: no database, no key files in the data folder."""
    node = settings.node
    url = node.db_url
    if kind != ("sqlite" if _is_sqlite(url) else "postgresql"):
        raise CommandError(f"the backup holds a {kind} database; node.database_url is {make_url(url).drivername}")
    taken = sorted(node.data_dir.glob(KEY_FILES))
    if _is_sqlite(url):
        taken += [p for p in (_sqlite_path(url),) if p.exists()]
    else:
        engine = make_engine(url)
        try:
            if inspect(engine).get_table_names():
                taken.append(Path(make_url(url).render_as_string()))
        finally:
            engine.dispose()
    if taken:
        raise CommandError(f"restore needs an empty node; found {', '.join(map(str, taken))}")


def _load_database(src: Path, manifest: dict, url: str) -> None:
    copy = src / manifest["database"]["file"]
    if _is_sqlite(url):
        target = _sqlite_path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(copy, target)
        return
    dsn, env = _libpq(url)
    _run([_pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", "-d", dsn, str(copy)], env)


def run_restore(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    node, src = settings.node, args.src
    manifest = _read_manifest(src)
    _check_empty(settings, manifest["database"]["kind"])
    node.data_dir.mkdir(parents=True, exist_ok=True)
    for name in manifest["keys"]:
        _private_copy(src / "keys" / name, node.data_dir / name)
    for folder in FOLDERS:
        _copy_tree(src / folder, node.data_dir / folder)
    _load_database(src, manifest, node.db_url)
    index_engine = make_engine(node.db_url)
    migrate.upgrade(index_engine)                       # a backup of an older version is upgraded here
    try:
        reindexed = reindex_since(FileStore(node.storage_dir, fsync=node.fsync),
                                  StudyIndex(make_sessionmaker(index_engine)), since=0.0)
    finally:
        index_engine.dispose()
    counts = Counts.of(node.db_url)
    print(f"restored {src} (made {manifest['created_at']} on {manifest['host']}): {counts.studies} studies, "
          f"{counts.instances} instances ({reindexed} re-indexed from storage), {counts.jobs} jobs, "
          f"{counts.users} accounts")
    if manifest.get("config"):
        print(f"the configuration at backup time is {src / manifest['config']}")
    return 0
