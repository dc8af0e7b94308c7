"""`neuropetrix` command line: one module per command group, each with `register(subparsers)`.

Every command takes `--config FILE` (default: the embedded config/node.yaml), exits 0 on success and
otherwise prints one line on stderr saying what is wrong and exits non-zero.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from neuropetrix.config.filemodes import apply_private_umask
from neuropetrix.config.loader import ConfigError, load_settings
from neuropetrix.config.settings import Settings
from neuropetrix.store.migrate import SchemaNotCurrent

# Modules under neuropetrix.cli that each add their commands.
COMMAND_MODULES = ("serve", "studies", "send", "db", "analyze", "jobs", "routes", "users",
                   "doctor", "demo", "backup", "worker", "storage")


class CommandError(Exception):
    """A command cannot do what was asked; the message is shown to the user as one line."""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="configuration file (default: the embedded config/node.yaml)")


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuropetrix",
                                     description="DICOM node and HL7/FHIR integration engine for PET/CT")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"neuropetrix.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    apply_private_umask()         # every command may create the database, keys or results
    try:
        return handler(args)
    except (ConfigError, CommandError, SchemaNotCurrent) as exc:
        print(f"neuropetrix: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a last resort: one line for the user, the traceback in the log
        logging.getLogger("neuropetrix").debug("unhandled error", exc_info=True)
        print(f"neuropetrix: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
