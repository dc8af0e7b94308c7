"""`neuropetrix serve`: the whole node in one process until SIGTERM or SIGINT.

On a database without accounts it first creates `admin` with a random password and prints it once on
standard output — not through logging, so no log file or handler ever holds it — so that a newcomer
can sign in to the dashboard they just started.
"""
from __future__ import annotations

import argparse
import logging
import secrets
import signal
import sys
import threading

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.api import users
from neuropetrix.cli import CommandError, add_config_option, settings_from
from neuropetrix.config.settings import Settings
from neuropetrix.logs import setup_logging
from neuropetrix.store.accounts import User

FIRST_ACCOUNT = "admin"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the node: DICOM SCP, engine, API")
    add_config_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings, stop = long_running(args)
    from neuropetrix.runtime import Node

    try:
        node = Node(settings)
        _first_account(node.sessions)
        node.start()
    except OSError as exc:
        if exc.errno is None:                   # a refusal with its own message: the data folder is open
            raise CommandError(f"cannot start: {exc}") from None
        raise CommandError(f"cannot start: {exc.strerror or exc} "
                           f"(DICOM port {settings.node.dicom_port})") from None
    log = logging.getLogger("neuropetrix")
    log.info("node %s ready; data in %s", settings.node.ae_title, settings.node.data_dir.resolve())
    stop.wait()
    log.info("stopping: finishing instances in hand, refusing new associations")
    node.stop()
    log.info("stopped")
    return 0


def long_running(args: argparse.Namespace) -> tuple[Settings, threading.Event]:
    """Settings of a process that runs until stopped (serve, worker), its logging set up, and an event
    set by SIGTERM (systemd's stop) or SIGINT (Ctrl-C)."""
    settings = settings_from(args)
    setup_logging(settings.node.log_level)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop.set())
    return settings, stop


def _first_account(sessions: sessionmaker[Session]) -> None:
    """Create `admin` with a random password when no account exists, and print it once."""
    password = secrets.token_urlsafe(12)
    try:
        with sessions.begin() as s:
            if s.scalar(select(func.count(User.id))):
                return
            users.add_user(s, FIRST_ACCOUNT, password, "admin")
    except IntegrityError:      # another node on the same database created it first
        return
    sys.stdout.write(f"created the first account {FIRST_ACCOUNT} with password {password}\n")
    sys.stdout.flush()
