"""Prognosis from a cohort table: a Cox proportional-hazards model (lifelines) with its validation.

Pure: a table of patients (time to event in days, event 0/1, baseline features) in, the fitted hazard
ratios with their 95 % confidence intervals, the number of patients and events, and Harrell's
concordance index under k-fold cross-validation out; or Kaplan–Meier estimates of two groups split at a
feature's threshold, with the log-rank test between them. A model is never reported without that
validation beside it, and never as one patient's prediction (`CoxReport.text`). Also the baseline
feature the export computes from the lesions: Dmax, the largest distance between two lesions'
centroids (Cottereau et al., J Nucl Med 2020).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test
from lifelines.utils import k_fold_cross_validation

from neuropetrix.analysis.errors import AnalysisError

DURATION, EVENT = "time_days", "event"
MIN_EVENTS_PER_FEATURE = 10      # the usual rule of thumb below which a Cox model overfits


@dataclass(frozen=True)
class HazardRatio:
    feature: str
    hazard_ratio: float          # per unit of the feature
    ci_low: float                # 95 % confidence interval
    ci_high: float
    p: float


@dataclass(frozen=True)
class CoxReport:
    patients: int
    events: int
    ratios: tuple[HazardRatio, ...]
    concordance_train: float
    concordance_cv: tuple[float, ...]        # one per fold
    folds: int

    @property
    def concordance_cv_mean(self) -> float:
        return float(np.mean(self.concordance_cv))

    def text(self) -> str:
        """What a researcher reads: every ratio with its interval, n and events, and the validation."""
        lines = [f"Cox proportional hazards: {self.patients} patients, {self.events} events"]
        lines += [f"  {r.feature}: HR {r.hazard_ratio:.4g} per unit (95 % CI {r.ci_low:.4g}–{r.ci_high:.4g}), "
                  f"p = {r.p:.3g}" for r in self.ratios]
        spread = float(np.std(self.concordance_cv))
        lines += [f"  concordance index: {self.concordance_train:.3f} on the fitted data, "
                  f"{self.concordance_cv_mean:.3f} ± {spread:.3f} under {self.folds}-fold cross-validation",
                  "  A cohort model: not a prediction for one patient."]
        return "\n".join(lines)


def dmax_mm(centroids: list[tuple[float, float, float]]) -> float | None:
    """The largest distance between two lesion centroids (mm); None with fewer than two lesions."""
    if len(centroids) < 2:
        return None
    return max(math.dist(a, b) for a, b in combinations(centroids, 2))


def fit_cox(table: pd.DataFrame, features: list[str], folds: int = 5, seed: int = 0) -> CoxReport:
    """Fit on the patients with every feature known; AnalysisError names what is missing or too few."""
    missing = [f for f in (DURATION, EVENT, *features) if f not in table.columns]
    if missing:
        raise AnalysisError(f"the cohort has no column(s) {', '.join(missing)} (has: {', '.join(table.columns)})")
    data = table[[DURATION, EVENT, *features]].apply(pd.to_numeric, errors="coerce").dropna()
    data = data[data[DURATION] > 0]
    events = int(data[EVENT].sum())
    if events < MIN_EVENTS_PER_FEATURE * len(features):
        raise AnalysisError(f"{events} events among {len(data)} patients with {', '.join(features)} known: a Cox "
                            f"model needs at least {MIN_EVENTS_PER_FEATURE} events per feature")
    if len(data) < 2 * folds:
        raise AnalysisError(f"{len(data)} patients: too few for {folds}-fold cross-validation")
    fitter = CoxPHFitter().fit(data, duration_col=DURATION, event_col=EVENT)
    summary = fitter.summary
    ratios = tuple(HazardRatio(f, float(summary.loc[f, "exp(coef)"]), float(summary.loc[f, "exp(coef) lower 95%"]),
                               float(summary.loc[f, "exp(coef) upper 95%"]), float(summary.loc[f, "p"]))
                   for f in features)
    cv = k_fold_cross_validation(CoxPHFitter(), data, duration_col=DURATION, event_col=EVENT, k=folds,
                                 scoring_method="concordance_index", seed=seed)
    return CoxReport(len(data), events, ratios, float(fitter.concordance_index_), tuple(float(c) for c in cv),
                     folds)


@dataclass(frozen=True)
class KmGroup:
    label: str
    patients: int
    events: int
    median_days: float | None                # None: the curve never falls to one half
    curve: tuple[tuple[float, float], ...]   # (day, survival) at each event time


@dataclass(frozen=True)
class KmReport:
    feature: str
    threshold: float
    groups: tuple[KmGroup, KmGroup]          # ≤ threshold, > threshold
    logrank_p: float

    def text(self) -> str:
        lines = [f"Kaplan–Meier by {self.feature} at {self.threshold:g}:"]
        for g in self.groups:
            median = "not reached" if g.median_days is None else f"{g.median_days:g} days"
            lines.append(f"  {g.label}: {g.patients} patients, {g.events} events, median {median}")
        lines += [f"  log-rank p = {self.logrank_p:.3g}", "  A cohort description: not a prediction for one patient."]
        return "\n".join(lines)


def kaplan_meier(table: pd.DataFrame, feature: str, threshold: float) -> KmReport:
    """The two groups' Kaplan–Meier curves, medians and the log-rank p; AnalysisError when one group is empty."""
    if feature not in table.columns:
        raise AnalysisError(f"the cohort has no column {feature} (has: {', '.join(table.columns)})")
    data = table[[DURATION, EVENT, feature]].apply(pd.to_numeric, errors="coerce").dropna()
    low, high = data[data[feature] <= threshold], data[data[feature] > threshold]
    if low.empty or high.empty:
        raise AnalysisError(f"{feature} at {threshold:g} leaves a group empty ({len(low)} ≤, {len(high)} >)")
    groups = []
    for label, part in ((f"{feature} ≤ {threshold:g}", low), (f"{feature} > {threshold:g}", high)):
        km = KaplanMeierFitter().fit(part[DURATION], part[EVENT])
        median = float(km.median_survival_time_)
        estimate = km.survival_function_.iloc[:, 0]
        times = sorted(set(part.loc[part[EVENT] == 1, DURATION]))
        groups.append(KmGroup(label, len(part), int(part[EVENT].sum()), None if math.isinf(median) else median,
                              tuple((float(t), float(estimate.loc[t])) for t in times)))
    test = logrank_test(low[DURATION], high[DURATION], low[EVENT], high[EVENT])
    return KmReport(feature, threshold, (groups[0], groups[1]), float(test.p_value))
