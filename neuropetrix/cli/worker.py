"""`neuropetrix worker`: the engine alone — routing, analyses and deliveries — without the SCP and API.

For an extra analysis machine (a GPU) that shares the node's database (PostgreSQL, or the same SQLite
file on one machine) and storage folder: jobs are claimed from the shared queue with leases, so the
node and its workers never run one job twice. Give the node `engine.analysis_workers: 0` to leave
every analysis to the workers. A worker also has delivery lanes (`engine.workers`, at least one).
It never migrates the shared database: it refuses to start until the node has upgraded it.
"""
from __future__ import annotations

import argparse
import logging

from neuropetrix.cli import add_config_option
from neuropetrix.cli.serve import long_running
from neuropetrix.engine.worker import build_worker
from neuropetrix.store.db import open_current
from neuropetrix.store.files import FileStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run only the engine (analyses, deliveries) on a shared database")
    add_config_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings, stop = long_running(args)
    engine, sessions = open_current(settings.node.db_url)
    worker = build_worker(settings, sessions, FileStore(settings.node.storage_dir, fsync=settings.node.fsync))
    worker.start()
    log = logging.getLogger("neuropetrix")
    log.info("worker ready: %d analysis lane(s) on %s", settings.engine.analysis_workers,
             settings.node.data_dir.resolve())
    stop.wait()
    log.info("stopping: analyses in hand go back to the queue")
    worker.stop()
    engine.dispose()
    log.info("stopped")
    return 0
