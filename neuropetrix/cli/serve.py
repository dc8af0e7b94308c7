"""`neuropetrix serve`: the whole node in one process until SIGTERM or SIGINT."""
from __future__ import annotations

import argparse
import logging
import signal
import threading

from neuropetrix.cli import CommandError, add_config_option, settings_from
from neuropetrix.logs import setup_logging


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the node: DICOM SCP, engine, API")
    add_config_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings.node.log_level)
    from neuropetrix.runtime import Node

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop.set())
    try:
        node = Node(settings)
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
