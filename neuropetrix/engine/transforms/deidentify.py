"""De-identification by the DICOM PS3.15 Basic Application Level Confidentiality Profile.

Identifying attributes are removed or emptied, private attributes are removed, and every instance UID
is replaced. Replacements are keyed HMACs of the original value, so the same patient or UID always gets
the same pseudonym: a retry, a second series or a later study of the same patient stay linked at the
research destination without the destination learning who it is. `keep` retains attributes a study
protocol needs (e.g. PatientWeight for SUV), as the profile's retain options allow.
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from neuropetrix.config.secrets import load_secret
from neuropetrix.config.settings import Settings
from neuropetrix.engine.transforms.coerce import check_keyword
from neuropetrix.engine.transforms.errors import TransformError

# Table E.1-1 actions, the attributes a PET/CT header carries: X remove, Z empty.
REMOVE = (
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers", "PhysiciansOfRecord",
    "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "OperatorsName", "RequestingPhysician",
    "IssuerOfPatientID", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
    "PatientBirthName", "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers",
    "PatientAge", "PatientSize", "PatientWeight", "MilitaryRank", "EthnicGroup", "Occupation",
    "AdditionalPatientHistory", "PatientComments", "MedicalRecordLocator", "DeviceSerialNumber",
    "PlateID", "AdmissionID", "AdmittingDiagnosesDescription", "RequestAttributesSequence",
    "SeriesDate", "AcquisitionDate", "ContentDate", "SeriesTime", "AcquisitionTime", "ContentTime",
    "AcquisitionDateTime", "InstanceCreationDate", "InstanceCreationTime", "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "PerformedProcedureStepDescription", "ScheduledProcedureStepID", "RequestedProcedureID",
    "FillerOrderNumberImagingServiceRequest", "PlacerOrderNumberImagingServiceRequest",
    "ReferencedPatientSequence", "ReferencedStudySequence", "PatientInsurancePlanCodeSequence",
    "ReferringPhysicianIdentificationSequence", "InstitutionCodeSequence", "TextComments",
    "ImageComments", "StudyComments", "DerivationDescription", "ProtocolName",
)
EMPTY = ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber",
         "ReferringPhysicianName", "StudyID")
# UI attributes that name a class or a syntax rather than an instance: never replaced.
KEEP_UIDS = frozenset({
    "SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID",
    "ImplementationClassUID", "CodingSchemeUID", "ContextGroupExtensionCreatorUID", "ContextUID",
    "RelatedGeneralSOPClassUID", "OriginalSpecializedSOPClassUID", "SOPClassesInStudy",
    "ReferencedSOPClassUIDInFile", "ReferencedTransferSyntaxUIDInFile", "MappingResourceUID",
    "TemplateExtensionOrganizationUID", "TemplateExtensionCreatorUID", "PrivateInformationCreatorUID",
    "ReferencedRelatedGeneralSOPClassUIDInFile", "AbstractSyntaxUID",
})
METHOD = "PS3.15 Basic Profile; keyed pseudonyms"


def pseudonym_key(settings: Settings) -> str:
    """The pseudonym key: `engine.pseudonym_secret`, else one generated once into
    `<data_dir>/pseudonym.key` (0600), so no two sites share a built-in key."""
    return load_secret(settings.engine.pseudonym_secret, settings.node.data_dir / "pseudonym.key")


class Deidentifier:
    def __init__(self, secret: str, keep: Iterable[str] = ()) -> None:
        if not secret:
            raise TransformError("deidentify: engine.pseudonym_secret is empty")
        self.key = secret.encode("utf-8")
        self.keep = frozenset(check_keyword(k) for k in keep)

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self.key, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def uid(self, value: str) -> str:
        """The replacement for one UID: under 2.25 (a UUID-derived root), the same every time."""
        return "2.25." + str(int.from_bytes(self._digest("uid", value)[:16], "big"))

    def pseudonym(self, patient_id: str) -> str:
        return "ANON" + self._digest("patient", patient_id).hex()[:12].upper()

    def _uids(self, ds: Dataset) -> None:
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    self._uids(item)
            elif elem.VR == "UI" and elem.keyword not in KEEP_UIDS and elem.value:
                if elem.VM > 1:
                    elem.value = [self.uid(str(v)) for v in elem.value]
                else:
                    elem.value = self.uid(str(elem.value))

    def _clean(self, ds: Dataset) -> None:
        for keyword in REMOVE:
            if keyword in ds and keyword not in self.keep:
                delattr(ds, keyword)
        for keyword in EMPTY:
            if keyword in ds and keyword not in self.keep:
                ds[keyword].value = ""
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    self._clean(item)

    def __call__(self, ds: Dataset) -> None:
        pseudonym = self.pseudonym(str(ds.get("PatientID", "")))
        ds.remove_private_tags()
        self._clean(ds)
        self._uids(ds)
        ds.PatientID = pseudonym
        ds.PatientName = pseudonym
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = METHOD
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
        code.CodeMeaning = "Basic Application Confidentiality Profile"
        ds.DeidentificationMethodCodeSequence = Sequence([code])
        if hasattr(ds, "file_meta") and "SOPInstanceUID" in ds:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
