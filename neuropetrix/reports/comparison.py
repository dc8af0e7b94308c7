"""The prior study a report compares the current one with: its analysis and the headers of its PET.

`analysis.response` carries the numbers of the comparison; the reports need more of the prior than
numbers: the SR references its images (Pertinent Other Evidence, and the slice of its target lesion),
the PDF shows its MIP beside the current one. `PriorStudy` is that, handed to the writers beside the
current study.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from neuropetrix.analysis.results import AnalysisResult
from neuropetrix.reports.errors import require


@dataclass(frozen=True)
class PriorStudy:
    """The prior's analysis and its PET datasets (`pet_datasets[k]` is the source of slice k)."""

    result: AnalysisResult
    pet_datasets: list[Dataset]

    @property
    def study_date(self) -> str:
        """The prior's StudyDate as YYYY-MM-DD ('unknown' without one)."""
        raw = str(self.pet_datasets[0].get("StudyDate", "") or "") if self.pet_datasets else ""
        return f"{raw[:4]}-{raw[4:6]}-{raw[6:8]}" if len(raw) == 8 else "unknown"

    @property
    def description(self) -> str:
        """The prior as a physician finds it in the PACS: its date and, when it has one, its accession
        number ('the prior study of 2026-06-02 (accession A123)'), not its Study Instance UID."""
        accession = str(self.pet_datasets[0].get("AccessionNumber", "") or "").strip() if self.pet_datasets else ""
        return f"the prior study of {self.study_date}" + (f" (accession {accession})" if accession else "")


def check_prior(result: AnalysisResult, prior: PriorStudy | None) -> None:
    """Refuses a prior that is not the study the response was computed against (or one without a response)."""
    if prior is None:
        return
    require(result.response is not None, "a prior study was given but the analysis has no response to it")
    require(prior.result.study_instance_uid == result.response.prior_study_uid,
            f"the prior given is study {prior.result.study_instance_uid}, the response was computed against "
            f"{result.response.prior_study_uid}")
    require(len(prior.pet_datasets) == len(prior.result.pet_sop_instance_uids),
            "the prior's PET datasets do not match its analysis slice for slice")


def hottest_slice(label_map: np.ndarray, volume: np.ndarray, label: int) -> int:
    """The slice index holding lesion `label`'s hottest voxel in `volume` (where its SUVmax was read)."""
    mask = np.asarray(label_map) == label
    require(mask.any(), f"lesion {label} has no voxels in the label map")
    return int(np.argwhere(mask)[int(np.argmax(np.asarray(volume)[mask]))][0])
