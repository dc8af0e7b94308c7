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

# Each top-level command and the module under neuropetrix.cli that adds it. A command imports only its
# own module: `users add` need not load the analysis, the engine and scipy (seconds on a busy 2-core box).
COMMANDS = {"serve": "serve", "studies": "studies", "send": "send", "db": "db", "analyze": "analyze",
            "jobs": "jobs", "routes": "routes", "users": "users", "doctor": "doctor", "demo": "demo",
            "backup": "backup", "restore": "backup", "worker": "worker",
            "cohort": "cohort", "storage": "storage"}


class CommandError(Exception):
    """A command cannot do what was asked; the message is shown to the user as one line."""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="configuration file (default: the embedded config/node.yaml)")


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of `command` alone when it is a known one, else of every command (help, a typo)."""
    parser = argparse.ArgumentParser(prog="neuropetrix",
                                     description="DICOM node and HL7/FHIR integration engine for PET/CT")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        importlib.import_module(f"neuropetrix.cli.{name}").register(sub)
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors shown as one line. The store's SchemaNotCurrent only once the store is loaded (it
    cannot have been raised before): importing it loads alembic and SQLAlchemy, about a second that a
    command without a database (`analyze`) need not pay."""
    migrate = sys.modules.get("neuropetrix.store.migrate")
    return (ConfigError, CommandError) + ((migrate.SchemaNotCurrent,) if migrate is not None else ())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    apply_private_umask()         # every command may create the database, keys or results
    try:
        return handler(args)
    except _user_errors() as exc:
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
