"""The research cohort: each patient's baseline features joined with the outcomes a site recorded.

Outcomes come from a CSV the site keeps (`patient_id`, optional `issuer`, `event` = progression | death
| censored, `date` = YYYY-MM-DD; several rows per patient: the last follow-up, a progression, a death).
The baseline is the patient's earliest study with an analysis; its features come from its analysis.json
(SUVmax, TMTV, TLG, lesion count, Dmax) and the response of the first later study compared with it
(PERCIST category, SULpeak change). The endpoint is progression-free survival (progression or death,
whichever comes first) or overall survival (death), in days from the baseline study, censored at the
last date known. De-identified on request: the keyed pseudonym of the de-identification transform
instead of the Patient ID, and no name, date or UID in the file (times are days from the baseline).
"""
from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from neuropetrix.analysis.survival import DURATION, EVENT, dmax_mm
from neuropetrix.store.models import Patient, Study

log = logging.getLogger("neuropetrix.cohort")

ENDPOINTS = {"pfs": ("progression", "death"), "os": ("death",)}
OUTCOME_EVENTS = ("progression", "death", "censored")
FEATURES = ("suv_max", "tmtv_ml", "tlg_total", "lesion_count", "dmax_mm")


class CohortError(Exception):
    """The outcomes file or the request cannot be used; the message names the line or the value."""


@dataclass(frozen=True)
class Outcome:
    event: str
    on: date


def read_outcomes(path: Path) -> dict[tuple[str, str], list[Outcome]]:
    """{(patient_id, issuer or ''): outcomes}; CohortError names the line that is wrong."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = {"patient_id", "event", "date"} - set(reader.fieldnames or ())
            if missing:
                raise CohortError(f"{path}: no column(s) {', '.join(sorted(missing))} "
                                  "(patient_id, event, date; issuer optional)")
            out: dict[tuple[str, str], list[Outcome]] = {}
            for line, row in enumerate(reader, start=2):
                event = (row["event"] or "").strip().lower()
                if event not in OUTCOME_EVENTS:
                    raise CohortError(f"{path} line {line}: event {row['event']!r} is not one of "
                                      f"{', '.join(OUTCOME_EVENTS)}")
                try:
                    on = date.fromisoformat((row["date"] or "").strip())
                except ValueError:
                    raise CohortError(f"{path} line {line}: date {row['date']!r} is not YYYY-MM-DD") from None
                key = ((row["patient_id"] or "").strip(), (row.get("issuer") or "").strip())
                out.setdefault(key, []).append(Outcome(event, on))
            return out
    except OSError as exc:
        raise CohortError(f"{path}: {exc.strerror}") from None


def survival(outcomes: list[Outcome], baseline: date, endpoint: str) -> tuple[int, int] | None:
    """(days from the baseline, 1 for the endpoint's event or 0 censored at the last date), None
    without a date after the baseline."""
    after = sorted((o for o in outcomes if o.on >= baseline), key=lambda o: o.on)
    hit = next((o for o in after if o.event in ENDPOINTS[endpoint]), None)
    if hit is not None:
        return (hit.on - baseline).days, 1
    return ((after[-1].on - baseline).days, 0) if after else None


def _analysis(results: Path, study_uid: str) -> dict[str, Any] | None:
    path = results / study_uid / "analysis.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _features(doc: dict[str, Any]) -> dict[str, Any]:
    centroids = [(float(x), float(y), float(z)) for les in doc.get("lesions", []) if les.get("centroid_mm")
                 for x, y, z in [les["centroid_mm"]]]
    return {"suv_max": doc.get("suv_max"), "tmtv_ml": doc.get("tmtv_ml"), "tlg_total": doc.get("tlg_total"),
            "lesion_count": doc.get("lesion_count"), "dmax_mm": dmax_mm(centroids)}


def _day(dicom_date: str) -> date | None:
    try:
        return date(int(dicom_date[:4]), int(dicom_date[4:6]), int(dicom_date[6:8]))
    except (ValueError, IndexError):
        return None


def cohort_rows(s: Session, results: Path, outcomes: dict[tuple[str, str], list[Outcome]], endpoint: str,
                pseudonym: Callable[[str], str] | None = None) -> list[dict[str, Any]]:
    """One row per patient with an analysed baseline and an outcome after it; `pseudonym` de-identifies."""
    if endpoint not in ENDPOINTS:
        raise CohortError(f"endpoint {endpoint!r}: one of {', '.join(ENDPOINTS)}")
    rows, unmatched = [], 0
    studies = s.execute(select(Patient, Study).join(Study, Study.patient_pk == Patient.id)
                        .order_by(Patient.id, Study.study_date, Study.study_time, Study.id)).all()
    by_patient: dict[int, list[tuple[Patient, Study]]] = {}
    for patient, study in studies:
        by_patient.setdefault(patient.id, []).append((patient, study))
    for visits in by_patient.values():
        patient = visits[0][0]
        analysed = [(day, st, doc) for _, st in visits
                    if (day := _day(st.study_date)) is not None and (doc := _analysis(results, st.study_uid))]
        if not analysed:
            continue
        (baseline_day, baseline, doc), later = analysed[0], analysed[1:]
        recorded = outcomes.get((patient.patient_id, patient.issuer)) or outcomes.get((patient.patient_id, ""))
        outcome = survival(recorded or [], baseline_day, endpoint)
        if outcome is None:
            unmatched += 1
            continue
        response = next((d["response"] for _, _, d in later
                         if (d.get("response") or {}).get("prior_study_uid") == baseline.study_uid), None) or {}
        who = ({"patient": pseudonym(patient.patient_id)} if pseudonym is not None else
               {"patient_id": patient.patient_id, "issuer": patient.issuer, "baseline_study_uid": baseline.study_uid,
                "baseline_date": baseline_day.isoformat()})
        rows.append({**who, DURATION: outcome[0], EVENT: outcome[1], **_features(doc),
                     "response_category": response.get("category"),
                     "sul_peak_change_percent": response.get("percent_change")})
    if unmatched:
        log.warning("cohort: %d patient(s) with an analysed baseline have no outcome after it", unmatched)
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """The cohort as CSV (empty cells for unknown values)."""
    columns = list(rows[0]) if rows else [DURATION, EVENT, *FEATURES]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
