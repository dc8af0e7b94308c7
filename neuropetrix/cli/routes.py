"""`neuropetrix routes test STUDY_DIR [--calling-ae AE]`: which rules would fire for a study, and why."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from neuropetrix.cli import CommandError, add_config_option, settings_from
from neuropetrix.engine.routes.facts import facts_from_folder
from neuropetrix.engine.routes.rules import compile_routes, matching_rules


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("routes", help="check routing rules")
    rsub = p.add_subparsers(dest="routes_command", required=True, metavar="ACTION")
    test = rsub.add_parser("test", help="show which rules fire for a folder of DICOM files, and why")
    add_config_option(test)
    test.add_argument("study_dir", metavar="STUDY_DIR", type=Path)
    test.add_argument("--calling-ae", default="", help="the AE title the study would arrive from")
    test.add_argument("--json", action="store_true", help="machine-readable output")
    test.set_defaults(handler=run_test)


def run_test(args: argparse.Namespace) -> int:
    rules = compile_routes(settings_from(args))
    folder = args.study_dir
    if not folder.is_dir():
        raise CommandError(f"{folder}: not a folder")
    series = facts_from_folder(folder, args.calling_ae)
    if not series:
        raise CommandError(f"{folder}: no DICOM series found")
    verdicts = matching_rules(rules, series)
    if args.json:
        print(json.dumps([{"rule": v.rule.name, "fires": v.fired, "series": v.series_uid, "reasons": v.reasons,
                           "actions": [{"kind": a.kind, "destination": a.destination, "objects": list(a.objects)}
                                       for a in v.rule.actions] if v.fired else []}
                          for v in verdicts], indent=2))
        return 0
    print(f"{folder}: {len(series)} series")
    for f in series:
        print(f"  {f.series_uid}  {f.value('modality') or '?'}  {f.instances} instance(s)")
    for v in verdicts:
        print(f"rule {v.rule.name}: {'FIRES' if v.fired else 'does not fire'}")
        for reason in v.reasons:
            print(f"  {reason}")
        if v.fired:
            for a in v.rule.actions:
                objects = f" ({', '.join(a.objects)})" if a.objects else ""
                print(f"  → {a.kind} {a.destination}{objects}")
    return 0
