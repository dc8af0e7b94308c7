"""`neuropetrix jobs [--json] [--state S]` lists durable jobs; `neuropetrix jobs retry ID` requeues one."""
from __future__ import annotations

import argparse
import json

from neuropetrix.cli import CommandError, add_config_option, settings_from
from neuropetrix.engine.jobs import JobQueue, job_json, list_jobs
from neuropetrix.store.db import open_current
from neuropetrix.store.jobs_models import COMMITTING, DONE, FAILED, QUEUED, RUNNING


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="list jobs, or `jobs retry ID` to requeue a failed one")
    add_config_option(p)
    p.add_argument("action", nargs="?", choices=["retry"], help="retry: queue job ID again now")
    p.add_argument("id", nargs="?", type=int, metavar="ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--state", choices=[QUEUED, RUNNING, COMMITTING, DONE, FAILED], default=None)
    p.add_argument("--limit", type=int, default=1000)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    _, sessions = open_current(settings.node.db_url)
    if args.action == "retry":
        if args.id is None:
            raise CommandError("jobs retry: give the job ID")
        queue = JobQueue(sessions, settings.engine.retry, settings.engine.lease_seconds)
        try:
            job = queue.requeue(args.id)
        except KeyError as exc:
            raise CommandError(exc.args[0]) from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        print(f"job {job.id} ({job.kind} → {job.destination}) queued again")
        return 0
    if args.id is not None:
        raise CommandError("jobs: an ID only goes with retry")
    with sessions() as s:
        rows = [job_json(j) for j in list_jobs(s, args.state, args.limit)]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    print(f"{'ID':>5} {'STATE':<8} {'KIND':<8} {'DESTINATION':<18} {'TRIES':>5}  {'STUDY UID':<40}  DETAIL")
    for r in rows:
        detail = r["last_error"] if r["state"] in (QUEUED, FAILED) and r["last_error"] else ""
        if r["state"] == QUEUED and r["after"]:
            detail = f"after job {r['after']}" + (f"; {detail}" if detail else "")
        if r["state"] == QUEUED and r["attempts"]:
            detail = f"next {r['next_attempt_at'][:19]}Z; {detail}"
        print(f"{r['id']:>5} {r['state']:<8} {r['kind']:<8} {r['destination']:<18.18} "
              f"{r['attempts']:>2}/{r['max_attempts']:<2}  {r['study_uid']:<40.40}  {detail[:120]}")
    return 0
