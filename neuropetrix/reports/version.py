"""Which version of a study's results a report is, and who signed it: one value every writer reads.

An automatic result leaves the node as version 1, preliminary (ORU `P`, FHIR `preliminary`, SR
PARTIAL/UNVERIFIED, "PRELIMINARY" on the PDF). A physician's signature makes the next version final
(`F`, `final`, COMPLETE/VERIFIED with the signer as verifying observer and the preliminary SR as
predecessor); a change after that is a correction (`C`, `amended`). Version 1 keeps the UIDs an
unversioned analysis always had; later versions get new SOP Instance UIDs and a new MSH-10
(`uid_suffix`), while lesion tracking UIDs and FHIR identifiers stay, so each lesion and the
DiagnosticReport remain the same thing across versions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from neuropetrix.analysis.results import Lesion

Status = Literal["preliminary", "final", "amended"]
STATUSES: tuple[Status, ...] = ("preliminary", "final", "amended")
_HL7 = {"preliminary": "P", "final": "F", "amended": "C"}


@dataclass(frozen=True)
class Signer:
    """The physician who verified the result, as the SR's Verifying Observer names them."""

    username: str
    display_name: str
    organisation: str

    @property
    def person_name(self) -> str:
        """The display name as a DICOM PN (Family^Given): "Ayşe Yılmaz" → "Yılmaz^Ayşe"; a name that
        already holds ^ is taken as written."""
        name = (self.display_name or self.username).strip()
        if "^" in name:
            return name
        given, _, family = name.rpartition(" ")
        return f"{family}^{given}" if given else family


@dataclass(frozen=True)
class ResultVersion:
    """Status and version of one set of result files; the default is the automatic first delivery."""

    status: Status = "preliminary"
    version: int = 1
    signer: Signer | None = None
    predecessor_sr_uid: str | None = None     # the SR this version replaces (PredecessorDocumentsSequence)
    impression: str | None = None             # the physician's free text
    signed_at: str | None = None              # ISO 8601, when the signer signed
    # lesions the physician took out (rejected, or physiological uptake): the FHIR Observations an
    # earlier version posted for them are marked entered-in-error
    withdrawn: tuple[Lesion, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status: one of {', '.join(STATUSES)}, not {self.status!r}")
        if self.version < 1:
            raise ValueError(f"version: 1 or more, not {self.version}")
        if self.status == "preliminary" and self.signer is not None:
            raise ValueError("a preliminary result has no signer")

    @property
    def hl7_status(self) -> str:
        """OBR-25 and OBX-11 (HL7 table 0123 / 0085): P preliminary, F final, C corrected."""
        return _HL7[self.status]

    @property
    def fhir_status(self) -> str:
        """DiagnosticReport.status and Observation.status."""
        return self.status

    @property
    def verified(self) -> bool:
        """Signed by a person; a route's automatic final (research use) is final but unverified."""
        return self.signer is not None

    @property
    def uid_suffix(self) -> tuple[str, ...]:
        """Extra derivation inputs for the UIDs of a new version's objects (none for version 1)."""
        return () if self.version == 1 else ("version", str(self.version))


AUTOMATIC = ResultVersion()
