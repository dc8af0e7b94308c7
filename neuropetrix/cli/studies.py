"""`neuropetrix studies [--json]`: what the node holds."""
from __future__ import annotations

import argparse
import json

from neuropetrix.cli import add_config_option, settings_from
from neuropetrix.store.db import open_current
from neuropetrix.store.queries import list_studies


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("studies", help="list stored studies")
    add_config_option(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=int, default=1000)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    _, sessions = open_current(settings_from(args).node.db_url)
    with sessions() as s:
        rows = list_studies(s, limit=args.limit)
    if args.json:
        print(json.dumps([r.to_json() for r in rows], ensure_ascii=False, indent=2))
        return 0
    print(f"{'STUDY UID':<64}  {'PATIENT ID':<12} {'PATIENT':<24} {'MODALITIES':<10} "
          f"{'SERIES':>6} {'INSTANCES':>9}  STATE")
    for r in rows:
        print(f"{r.study_uid:<64}  {r.patient_id:<12.12} {r.patient_name:<24.24} "
              f"{'/'.join(r.modalities):<10} {r.series:>6} {r.instances:>9}  {r.state}")
    return 0
