"""`neuropetrix cohort export` (baseline features joined with outcomes, CSV), `neuropetrix cohort cox`
(a Cox model on such a file, with its cross-validated concordance) and `neuropetrix cohort km`
(Kaplan–Meier curves split at a feature's threshold, with the log-rank test)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from neuropetrix.analysis.errors import AnalysisError
from neuropetrix.analysis.survival import fit_cox, kaplan_meier
from neuropetrix.cli import CommandError, add_config_option, settings_from
from neuropetrix.engine.cohort import ENDPOINTS, CohortError, cohort_rows, read_outcomes, write_csv
from neuropetrix.engine.transforms.deidentify import Deidentifier, pseudonym_key
from neuropetrix.store.db import open_current


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cohort", help="research cohorts: export features with outcomes, fit a Cox model")
    commands = p.add_subparsers(dest="cohort_command", required=True, metavar="COMMAND")
    export = commands.add_parser("export", help="each patient's baseline features and outcome, as CSV")
    add_config_option(export)
    export.add_argument("--outcomes", type=Path, required=True,
                        help="CSV with patient_id, event (progression|death|censored), date (YYYY-MM-DD), issuer")
    export.add_argument("--out", type=Path, required=True, help="the cohort CSV to write")
    export.add_argument("--endpoint", choices=sorted(ENDPOINTS), default="pfs",
                        help="pfs: progression or death; os: death (default pfs)")
    export.add_argument("--deidentify", action="store_true",
                        help="keyed pseudonyms instead of Patient IDs; no names, dates or UIDs")
    export.set_defaults(handler=run_export)
    cox = commands.add_parser("cox", help="Cox proportional hazards on an exported cohort")
    add_config_option(cox)                 # accepted like every command's; the model reads only the file
    cox.add_argument("cohort", type=Path, help="a CSV from `cohort export`")
    cox.add_argument("--features", required=True, help="comma-separated columns, e.g. tmtv_ml,suv_max")
    cox.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    cox.set_defaults(handler=run_cox)
    km = commands.add_parser("km", help="Kaplan–Meier curves of two groups split at a feature's threshold")
    add_config_option(km)
    km.add_argument("cohort", type=Path, help="a CSV from `cohort export`")
    km.add_argument("--feature", required=True, help="the column to split on, e.g. tmtv_ml")
    km.add_argument("--threshold", type=float, required=True, help="≤ threshold against > threshold")
    km.set_defaults(handler=run_km)


def run_export(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    try:
        outcomes = read_outcomes(args.outcomes)
    except CohortError as exc:
        raise CommandError(str(exc)) from None
    pseudonym = Deidentifier(pseudonym_key(settings)).pseudonym if args.deidentify else None
    _, sessions = open_current(settings.node.db_url)
    with sessions() as s:
        rows = cohort_rows(s, settings.node.data_dir / "results", outcomes, args.endpoint, pseudonym)
    write_csv(rows, args.out)
    events = sum(row["event"] for row in rows)
    print(f"{len(rows)} patients, {events} events ({args.endpoint}) written to {args.out}"
          f"{' (de-identified)' if args.deidentify else ''}")
    return 0


def _table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as exc:       # pandas' parser and empty-file errors are ValueErrors
        raise CommandError(f"{path}: {exc}") from None


def run_cox(args: argparse.Namespace) -> int:
    try:
        report = fit_cox(_table(args.cohort), [f.strip() for f in args.features.split(",") if f.strip()], args.folds)
    except AnalysisError as exc:
        raise CommandError(f"{args.cohort}: {exc}") from None
    print(report.text())
    return 0


def run_km(args: argparse.Namespace) -> int:
    try:
        report = kaplan_meier(_table(args.cohort), args.feature, args.threshold)
    except AnalysisError as exc:
        raise CommandError(f"{args.cohort}: {exc}") from None
    print(report.text())
    return 0
