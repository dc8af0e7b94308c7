"""A result as the physician kept it, and the order to make one: what the analysis child needs to
write a new version of a study's results.

The analysis runs again on the same images with the same settings (it is deterministic, so the labels
are the same), the physician's decisions are applied to its result, and every report is written with
the version's status and signer. Rejected lesions and lesions the physician called physiological
uptake leave the lesion list and the label map, so the SEG, the SR, the ORU, the FHIR bundle and the
totals (TMTV is the sum of what was kept) all show what the physician confirmed.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neuropetrix.analysis.errors import AnalysisError
from neuropetrix.analysis.results import AnalysisResult
from neuropetrix.reports.version import AUTOMATIC, ResultVersion, Signer

LESION, REJECTED, PHYSIOLOGICAL = "lesion", "rejected", "physiological"
DECISIONS = (LESION, REJECTED, PHYSIOLOGICAL)
# analysis settings a physician may change before running the analysis again
REANALYSIS_KEYS = ("method", "threshold", "min_volume_ml", "seed_threshold")


@dataclass(frozen=True)
class VersionOrder:
    """Which version to write, with which decisions and analysis settings; travels in the job's params."""

    version: ResultVersion = AUTOMATIC
    decisions: dict[int, str] = field(default_factory=dict)      # label → decision, only the non-lesions
    analysis: dict[str, Any] = field(default_factory=dict)       # REANALYSIS_KEYS overrides
    fresh: bool = False          # a re-analysis: the review starts over with this version's findings

    def to_json(self) -> dict[str, Any]:
        v = self.version
        return {"status": v.status, "version": v.version, "predecessor_sr_uid": v.predecessor_sr_uid,
                "impression": v.impression, "signed_at": v.signed_at,
                "signer": None if v.signer is None else dataclasses.asdict(v.signer),
                "decisions": {str(k): d for k, d in self.decisions.items()}, "analysis": dict(self.analysis),
                "fresh": self.fresh}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> VersionOrder:
        signer = doc.get("signer")
        version = ResultVersion(status=doc["status"], version=int(doc["version"]),
                                signer=None if signer is None else Signer(**signer),
                                predecessor_sr_uid=doc.get("predecessor_sr_uid"), impression=doc.get("impression"),
                                signed_at=doc.get("signed_at"))
        return cls(version, {int(k): d for k, d in (doc.get("decisions") or {}).items()},
                   dict(doc.get("analysis") or {}), bool(doc.get("fresh")))


def order_of(params: Mapping[str, Any]) -> VersionOrder:
    """The version an analyze job writes: its review order, else version 1 — preliminary, or final
    for a route that opted into automatic sign-off (`{analyze: {sign: auto}}`, research use)."""
    if params.get("review"):
        return VersionOrder.from_json(params["review"])
    if params.get("sign") == "auto":
        return VersionOrder(ResultVersion(status="final"))
    return VersionOrder()


def reviewed(result: AnalysisResult, order: VersionOrder) -> tuple[AnalysisResult, ResultVersion]:
    """The result with the order's decisions applied, and the version naming the lesions taken out."""
    kept = apply_decisions(result, order.decisions)
    labels = {les.label for les in kept.lesions}
    withdrawn = tuple(les for les in result.lesions if les.label not in labels)
    return kept, dataclasses.replace(order.version, withdrawn=withdrawn) if withdrawn else order.version


def apply_decisions(result: AnalysisResult, decisions: Mapping[int, str]) -> AnalysisResult:
    """`result` without the lesions the physician rejected or called physiological; refused when a
    decision names a label this analysis does not have (the images changed since the review)."""
    dropped = {label for label, decision in decisions.items() if decision != LESION}
    if not dropped:
        return result
    labels = {les.label for les in result.lesions}
    missing = sorted(dropped - labels)
    if missing:
        raise AnalysisError(f"the review decided on lesion(s) {missing}, which this analysis does not find: "
                            "the study changed since it was reviewed; review it again")
    label_map = np.asarray(result.label_map)
    return dataclasses.replace(result, lesions=[les for les in result.lesions if les.label not in dropped],
                               label_map=np.where(np.isin(label_map, sorted(dropped)), 0, label_map))
