"""`neuropetrix cohort export` joins each patient's analysed baseline with the outcomes CSV (de-identified
on request), and `neuropetrix cohort cox` fits a Cox model: on a cohort simulated from a known model the
fitted hazard ratio's confidence interval holds the truth, and the concordance index is reported under
cross-validation with the number of patients and events."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from neuropetrix.analysis.errors import AnalysisError
from neuropetrix.analysis.survival import dmax_mm, fit_cox, kaplan_meier
from tests.api.conftest import accounts_db, make_env  # noqa: F401  (fixtures)

BASELINE_A, FOLLOW_UP_A, BASELINE_B = "1.2.826.0.1.3680043.10.30.1", "1.2.826.0.1.3680043.10.30.2", \
    "1.2.826.0.1.3680043.10.30.3"
LESIONS_A = [{"centroid_mm": [0.0, 0.0, 0.0]}, {"centroid_mm": [30.0, 40.0, 0.0]}, {"centroid_mm": [0.0, 0.0, 120.0]}]


def _analysis(env, study_uid: str, **doc) -> None:
    folder = env.data_dir / "results" / study_uid
    folder.mkdir(parents=True)
    (folder / "analysis.json").write_text(json.dumps({"study_instance_uid": study_uid, **doc}), encoding="utf-8")


def _cli(env, *args: str) -> subprocess.CompletedProcess:
    config = env.data_dir.parent / "node.yaml"
    config.write_text(yaml.safe_dump({"node": {"data_dir": str(env.data_dir)}}), encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "neuropetrix", *args, *(["--config", str(config)]
                                                                       if args[1] == "export" else [])],
                          capture_output=True, text=True, timeout=300)


def _outcomes(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["patient_id", "event", "date"])
        writer.writerows(rows)
    return path


@pytest.fixture
def cohort_env(make_env):  # noqa: F811
    """A: baseline and a follow-up compared with it (PMR); B: one analysed study; C: never analysed;
    D: analysed, no outcome recorded."""
    env = make_env()
    for uid, pid, day in ((BASELINE_A, "HST-A1", "20250110"), (FOLLOW_UP_A, "HST-A1", "20250410"),
                          (BASELINE_B, "HST-B2", "20250301"), ("1.2.826.0.1.3680043.10.30.4", "HST-C3", "20250301"),
                          ("1.2.826.0.1.3680043.10.30.5", "HST-D4", "20250301")):
        env.add_instance(uid, "PT", 1, patient_id=pid, patient_name=f"HASTA^{pid}", study_date=day)
    _analysis(env, BASELINE_A, suv_max=14.5, tmtv_ml=210.0, tlg_total=1500.0, lesion_count=3, lesions=LESIONS_A)
    _analysis(env, FOLLOW_UP_A, suv_max=6.0, tmtv_ml=40.0, tlg_total=200.0, lesion_count=1, lesions=[],
              response={"category": "PMR", "prior_study_uid": BASELINE_A, "percent_change": -55.5})
    _analysis(env, BASELINE_B, suv_max=5.5, tmtv_ml=12.0, tlg_total=50.0, lesion_count=1,
              lesions=[{"centroid_mm": [1.0, 2.0, 3.0]}])
    _analysis(env, "1.2.826.0.1.3680043.10.30.5", suv_max=8.0, tmtv_ml=30.0, tlg_total=90.0, lesion_count=1)
    return env


def test_export_joins_the_baseline_with_the_outcomes(cohort_env, tmp_path):
    outcomes = _outcomes(tmp_path / "outcomes.csv", [
        ("HST-A1", "censored", "2025-06-01"), ("HST-A1", "progression", "2025-09-01"),
        ("HST-A1", "death", "2026-01-01"),
        ("HST-B2", "censored", "2025-12-31"), ("HST-C3", "censored", "2025-12-31")])
    for endpoint, a_row in (("pfs", ("234", "1")), ("os", ("356", "1"))):
        out = tmp_path / f"{endpoint}.csv"
        done = _cli(cohort_env, "cohort", "export", "--outcomes", str(outcomes), "--out", str(out),
                    "--endpoint", endpoint)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"2 patients, 1 events ({endpoint})")
        rows = {r["patient_id"]: r for r in csv.DictReader(open(out, encoding="utf-8"))}
        assert set(rows) == {"HST-A1", "HST-B2"}            # HST-C3 never analysed, HST-D4 has no outcome
        a, b = rows["HST-A1"], rows["HST-B2"]
        assert (a["time_days"], a["event"]) == a_row
        assert (b["time_days"], b["event"]) == (str((date(2025, 12, 31) - date(2025, 3, 1)).days), "0")
    assert (a["baseline_study_uid"], a["baseline_date"], a["suv_max"], a["tmtv_ml"], a["lesion_count"]) == \
        (BASELINE_A, "2025-01-10", "14.5", "210.0", "3")
    assert float(a["dmax_mm"]) == pytest.approx(math.dist((30.0, 40.0, 0.0), (0.0, 0.0, 120.0)))
    assert (a["response_category"], a["sul_peak_change_percent"]) == ("PMR", "-55.5")
    assert (b["dmax_mm"], b["response_category"]) == ("", "")         # one lesion; no follow-up


def test_deidentified_export_has_pseudonyms_and_no_identifiers(cohort_env, tmp_path):
    outcomes = _outcomes(tmp_path / "outcomes.csv", [("HST-A1", "progression", "2025-09-01"),
                                                     ("HST-B2", "censored", "2025-12-31")])
    texts = []
    for run in ("one", "two"):
        out = tmp_path / f"{run}.csv"
        done = _cli(cohort_env, "cohort", "export", "--outcomes", str(outcomes), "--out", str(out), "--deidentify")
        assert done.returncode == 0, done.stderr
        texts.append(out.read_text(encoding="utf-8"))
    assert texts[0] == texts[1]                                # keyed: the same pseudonym every time
    rows = list(csv.DictReader(texts[0].splitlines()))
    assert all(r["patient"].startswith("ANON") for r in rows) and len({r["patient"] for r in rows}) == 2
    for identifier in ("HST-", "HASTA", BASELINE_A, "2025", "baseline_date", "patient_id"):
        assert identifier not in texts[0]


def test_a_bad_outcomes_file_is_refused_naming_the_line(cohort_env, tmp_path):
    outcomes = _outcomes(tmp_path / "outcomes.csv", [("HST-A1", "progression", "2025-09-01"),
                                                     ("HST-B2", "relapse", "2025-12-31")])
    done = _cli(cohort_env, "cohort", "export", "--outcomes", str(outcomes), "--out", str(tmp_path / "x.csv"))
    assert done.returncode == 2
    assert "line 3: event 'relapse' is not one of progression, death, censored" in done.stderr


TRUE_LOG_HR = 0.1            # per SUVmax unit: HR 1.105; TMTV has no effect (HR 1)


@pytest.mark.slow
def test_cox_recovers_a_known_hazard_ratio_with_cross_validated_concordance(make_env, tmp_path):  # noqa: F811
    """300 patients simulated from an exponential proportional-hazards model, through the node's index,
    results folder and the export, then the Cox command."""
    env = make_env()
    rng = np.random.default_rng(7)
    n, base_rate = 300, 1 / 1500.0                      # per day
    suv = rng.uniform(2.0, 20.0, n)
    tmtv = rng.lognormal(3.0, 1.0, n)
    event_day = rng.exponential(1.0 / (base_rate * np.exp(TRUE_LOG_HR * suv)))
    censor_day = rng.uniform(200.0, 1500.0, n)
    start = date(2024, 1, 1)
    rows = []
    for i in range(n):
        uid = f"1.2.826.0.1.3680043.10.31.{i + 1}"
        baseline = start + timedelta(days=int(i))
        env.add_instance(uid, "PT", 1, patient_id=f"S{i:04d}", patient_name="SIM^HASTA",
                         study_date=baseline.strftime("%Y%m%d"))
        _analysis(env, uid, suv_max=float(suv[i]), tmtv_ml=float(tmtv[i]), tlg_total=float(tmtv[i] * 5),
                  lesion_count=1)
        progressed = event_day[i] <= censor_day[i]
        rows.append((f"S{i:04d}", "progression" if progressed else "censored",
                     (baseline + timedelta(days=max(1, round(min(event_day[i], censor_day[i]))))).isoformat()))
    out = tmp_path / "cohort.csv"
    done = _cli(env, "cohort", "export", "--outcomes", str(_outcomes(tmp_path / "outcomes.csv", rows)),
                "--out", str(out), "--deidentify")
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out)
    assert len(table) == n
    report = fit_cox(table, ["suv_max", "tmtv_ml"])
    suv_hr, tmtv_hr = report.ratios
    assert suv_hr.ci_low < math.exp(TRUE_LOG_HR) < suv_hr.ci_high
    assert tmtv_hr.ci_low < 1.0 < tmtv_hr.ci_high
    assert report.patients == n and report.events == int(table["event"].sum()) > 100
    assert len(report.concordance_cv) == 5 and 0.6 < report.concordance_cv_mean < 0.8

    printed = subprocess.run([sys.executable, "-m", "neuropetrix", "cohort", "cox", str(out),
                              "--features", "suv_max,tmtv_ml"], capture_output=True, text=True, timeout=300)
    assert printed.returncode == 0, printed.stderr
    print(printed.stdout)
    assert f"{n} patients, {report.events} events" in printed.stdout
    assert f"{report.concordance_cv_mean:.3f}" in printed.stdout and "5-fold cross-validation" in printed.stdout
    assert f"suv_max: HR {suv_hr.hazard_ratio:.4g} per unit (95 % CI {suv_hr.ci_low:.4g}" in printed.stdout

    km = kaplan_meier(table, "suv_max", 11.0)                # the hazard rises with SUVmax: the split shows it
    low, high = km.groups
    assert low.patients + high.patients == n and km.logrank_p < 1e-3
    assert high.median_days is not None and (low.median_days is None or high.median_days < low.median_days)
    printed = subprocess.run([sys.executable, "-m", "neuropetrix", "cohort", "km", str(out), "--feature", "suv_max",
                              "--threshold", "11"], capture_output=True, text=True, timeout=300)
    assert printed.returncode == 0, printed.stderr
    print(printed.stdout)
    assert f"suv_max > 11: {high.patients} patients, {high.events} events, median {high.median_days:g} days" \
        in printed.stdout


def test_kaplan_meier_of_a_table_worked_by_hand():
    """A: deaths at 2, 4, 6, 8 → S 0.75, 0.5, 0.25, 0, median 4; B: deaths at 3, 7, 9 and one censored at
    5 → S(3) 0.75, S(7) 0.75 × 1/2 = 0.375, S(9) 0, median 7."""
    table = pd.DataFrame({"time_days": [2, 4, 6, 8, 3, 5, 7, 9], "event": [1, 1, 1, 1, 1, 0, 1, 1],
                          "tmtv_ml": [10, 20, 30, 40, 100, 110, 120, 130]})
    a, b = kaplan_meier(table, "tmtv_ml", 50).groups
    assert (a.patients, a.events, a.median_days) == (4, 4, 4.0)
    assert np.allclose(a.curve, [(2, 0.75), (4, 0.5), (6, 0.25), (8, 0.0)])
    assert (b.patients, b.events, b.median_days) == (4, 3, 7.0)
    assert np.allclose(b.curve, [(3, 0.75), (7, 0.375), (9, 0.0)])
    with pytest.raises(AnalysisError, match="leaves a group empty"):
        kaplan_meier(table, "tmtv_ml", 500)


def test_too_few_events_or_a_missing_feature_are_refused_and_dmax_needs_two_lesions():
    table = pd.DataFrame({"time_days": [100, 200, 300] * 10, "event": [1, 0, 0] * 10, "suv_max": range(30),
                          "tmtv_ml": range(30)})
    with pytest.raises(AnalysisError, match="10 events among 30 patients with suv_max, tmtv_ml known: a Cox "
                                            "model needs at least 10 events per feature"):
        fit_cox(table, ["suv_max", "tmtv_ml"])
    with pytest.raises(AnalysisError, match="no column[(]s[)] dmax_mm"):
        fit_cox(table, ["dmax_mm"])
    assert dmax_mm([(0.0, 0.0, 0.0)]) is None
