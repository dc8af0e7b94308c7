"""`neuropetrix storage prune [--dry-run] [--json]`: what storage.retention deletes now, and what it
keeps and why. Without --dry-run the prune jobs are queued; the running node's engine does them."""
from __future__ import annotations

import argparse
import json

from neuropetrix.cli import CommandError, add_config_option, settings_from
from neuropetrix.engine import retention
from neuropetrix.engine.result_store import ResultStore
from neuropetrix.store.db import open_current, utcnow


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("storage", help="storage retention: `storage prune --dry-run` lists what would go")
    add_config_option(p)
    p.add_argument("action", choices=["prune"])
    p.add_argument("--dry-run", action="store_true", help="list only; delete nothing, queue nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    rules = settings.storage.retention
    if rules.images_days is None and rules.results_days is None:
        raise CommandError("storage.retention has no rule (images_days, results_days): nothing is ever pruned")
    _, sessions = open_current(settings.node.db_url)
    results = ResultStore(settings.node.data_dir / "results")
    now = utcnow()
    with sessions() as s:
        decisions = retention.assess(s, rules, results, now)
    queued = [] if args.dry_run else retention.make_jobs(sessions, rules, results, now,
                                                         settings.engine.retry.max_attempts)
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "decisions": [d.as_dict() for d in decisions],
                          "jobs": [j.id for j in queued]}, indent=2))
        return 0
    for d in decisions:
        verdict = "PRUNE" if d.kept_because is None else f"KEEP  ({d.kept_because})"
        print(f"{d.what:<8} {d.study_uid:<64} last received {d.last_received_at:%Y-%m-%d}  {verdict}")
    due = sum(d.kept_because is None for d in decisions)
    print(f"{due} to prune, {len(decisions) - due} kept" + (" (dry run: nothing deleted)" if args.dry_run
                                                           else f"; {len(queued)} prune job(s) queued"))
    return 0
