"""`neuropetrix db upgrade`: bring the database schema to the current version."""
from __future__ import annotations

import argparse

from neuropetrix.cli import add_config_option, settings_from
from neuropetrix.store import migrate
from neuropetrix.store.db import make_engine


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="database maintenance")
    dbsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = dbsub.add_parser("upgrade", help="apply pending schema migrations")
    add_config_option(up)
    up.set_defaults(handler=upgrade)


def upgrade(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    engine = make_engine(settings.node.db_url)
    before = migrate.current_revision(engine)
    after = migrate.upgrade(engine)
    print(f"database at revision {after}" + ("" if before == after else f" (was {before or 'empty'})"))
    return 0
