"""`neuropetrix send DEST PATH…`: C-STORE files or folders to a configured peer."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuropetrix.cli import CommandError, add_config_option, settings_from
from neuropetrix.node.scu.dicom import SendError, dicom_files, send_files


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("send", help="send DICOM files to a configured peer")
    add_config_option(p)
    p.add_argument("dest", metavar="DEST", help="peer name from the configuration")
    p.add_argument("paths", metavar="PATH", nargs="+", type=Path)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    try:
        peer = settings.peer(args.dest)
    except KeyError as exc:
        raise CommandError(exc.args[0]) from None
    try:
        report = send_files(peer, dicom_files(args.paths), settings.node.ae_title, tls=settings.node.tls)
    except SendError as exc:
        raise CommandError(str(exc)) from None
    for f, why in report.failed:
        print(f"{f}: {why}", file=sys.stderr)
    print(f"sent {report.sent} file(s) to {peer.name}, {len(report.failed)} failed")
    if not report.ok:
        raise CommandError(f"{len(report.failed)} file(s) not stored by {peer.name}")
    return 0
