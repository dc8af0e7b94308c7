"""De-identification of whole objects as a site sends them: a PET/CT header (from the synthetic scanner,
identifiers added where scanners and RIS put them) and a structured report whose content tree is full of
them. The output's bytes are scanned for every identifying value and every original instance UID."""
from __future__ import annotations

import copy
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from neuropetrix.engine.transforms import TransformError, build
from neuropetrix.engine.transforms.deidentify import basic_profile
from tests.support.synthetic import StudySpec, write_pet_series

SECRET = "site-secret"
NAME, FAMILY, GIVEN = "YILMAZ^AYŞE", "YILMAZ", "AYŞE"
IDENTIFIERS = [
    FAMILY, GIVEN, "10000000146", "19650314", "081500", "ACC2026001", "Çankaya", "+90 312 555 0101",
    "KAYA^MEHMET", "KAYA", "DEMIR^ALI", "DEMIR", "ÖZTÜRK^ZEYNEP", "ÖZTÜRK", "Ankara Şehir Hastanesi", "Şehir",
    "PETCT-ANK-01", "SN-884422", "RP-7731", "SPS-7731", "OTHER-ID-55", "ANNE^FATMA", "FATMA", "İzmir",
    "diabetic since 2019", "private note", "STUDY-42", "ADM-9001", "Ankara Nükleer Tıp",
]


def with_identifiers(ds: Dataset) -> Dataset:
    ds.PatientName = NAME
    ds.PatientBirthTime = "081500"
    ds.PatientAddress = "Çankaya, Ankara"
    ds.PatientTelephoneNumbers = "+90 312 555 0101"
    ds.PatientMotherBirthName = "ANNE^FATMA"
    ds.OtherPatientIDs = "OTHER-ID-55"
    other = Dataset()
    other.PatientID, other.IssuerOfPatientID = "OTHER-ID-55", "İzmir"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.AdditionalPatientHistory = "diabetic since 2019"
    ds.ReferringPhysicianName = "KAYA^MEHMET"
    ds.PerformingPhysicianName = "DEMIR^ALI"
    ds.OperatorsName = "ÖZTÜRK^ZEYNEP"
    ds.InstitutionAddress = "Ankara Nükleer Tıp"
    ds.StationName = "PETCT-ANK-01"
    ds.DeviceSerialNumber = "SN-884422"
    ds.StudyID = "STUDY-42"
    ds.AdmissionID = "ADM-9001"
    request = Dataset()
    request.RequestedProcedureID, request.ScheduledProcedureStepID = "RP-7731", "SPS-7731"
    request.AccessionNumber = "ACC2026001"
    ds.RequestAttributesSequence = Sequence([request])
    ds.add_new((0x0009, 0x0010), "LO", "GEMS_PETD_01")
    ds.add_new((0x0009, 0x1001), "LO", "private note")
    philips = ds.private_block(0x7053, "Philips PET Private Group", create=True)
    philips.add_new(0x00, "DS", "0.000123")                    # SUV scale factor: safe, kept
    return ds


@pytest.fixture(scope="module")
def pet(tmp_path_factory) -> Dataset:
    spec = StudySpec(ct_slices=1, pet_slices=1, pet_matrix=8)
    path = write_pet_series(spec, tmp_path_factory.mktemp("pet"))[0]
    ds = with_identifiers(pydicom.dcmread(path))
    ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def item(relationship: str, value_type: str, code: tuple[str, str, str], **values) -> Dataset:
    ds = Dataset()
    ds.RelationshipType, ds.ValueType = relationship, value_type
    name = Dataset()
    name.CodeValue, name.CodingSchemeDesignator, name.CodeMeaning = code
    ds.ConceptNameCodeSequence = Sequence([name])
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def report(pet: Dataset) -> Dataset:
    """A Comprehensive SR about `pet`, with identifiers in observer context, text, dates and references."""
    sr = Dataset()
    sr.SpecificCharacterSet = "ISO_IR 192"
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    sr.SOPInstanceUID = generate_uid()
    sr.StudyInstanceUID, sr.SeriesInstanceUID = pet.StudyInstanceUID, generate_uid()
    sr.Modality, sr.PatientName, sr.PatientID = "SR", NAME, pet.PatientID
    sr.PatientBirthDate, sr.AccessionNumber = "19650314", "ACC2026001"
    sr.ContentDate, sr.ContentTime = "20261124", "113000"
    sr.ValueType, sr.CompletionFlag, sr.VerificationFlag = "CONTAINER", "COMPLETE", "VERIFIED"
    observer = Dataset()
    observer.VerifyingObserverName, observer.VerificationDateTime = "DEMIR^ALI", "20261124120000"
    observer.VerifyingOrganization = "Ankara Şehir Hastanesi"
    sr.VerifyingObserverSequence = Sequence([observer])
    ref_sop = Dataset()
    ref_sop.ReferencedSOPClassUID, ref_sop.ReferencedSOPInstanceUID = pet.SOPClassUID, pet.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID, series.ReferencedSOPSequence = pet.SeriesInstanceUID, Sequence([ref_sop])
    evidence = Dataset()
    evidence.StudyInstanceUID, evidence.ReferencedSeriesSequence = pet.StudyInstanceUID, Sequence([series])
    sr.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    image = item("CONTAINS", "IMAGE", ("121233", "DCM", "Source image for segmentation"))
    image_ref = Dataset()
    image_ref.ReferencedSOPClassUID, image_ref.ReferencedSOPInstanceUID = pet.SOPClassUID, pet.SOPInstanceUID
    image.ReferencedSOPSequence = Sequence([image_ref])
    findings = item("CONTAINS", "CONTAINER", ("121070", "DCM", "Findings"), ContinuityOfContent="SEPARATE")
    findings.ContentSequence = Sequence([
        item("CONTAINS", "TEXT", ("121071", "DCM", "Finding"),
             TextValue=f"Patient {FAMILY} {GIVEN} (10000000146), born 19650314, referred by KAYA^MEHMET"),
        item("CONTAINS", "DATE", ("111536", "DCM", "Date of last evaluation"), Date="19650314"),
        item("CONTAINS", "UIDREF", ("121018", "DCM", "Procedure Study Instance UID"), UID=pet.StudyInstanceUID),
        image,
    ])
    sr.ContentSequence = Sequence([
        item("HAS OBS CONTEXT", "PNAME", ("121008", "DCM", "Person Observer Name"), PersonName="ÖZTÜRK^ZEYNEP"),
        item("HAS OBS CONTEXT", "TEXT", ("121010", "DCM", "Device Observer Name"), TextValue="PETCT-ANK-01"),
        findings,
    ])
    return sr


def written(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def identifying(data: bytes, uids: list[str]) -> list[str]:
    return [v for v in [*IDENTIFIERS, *uids] if v.encode("utf-8") in data]


def test_pet_header_and_report_carry_no_identifier(pet: Dataset) -> None:
    pet_in, sr_in = copy.deepcopy(pet), report(pet)
    uids = [str(u) for u in (pet.StudyInstanceUID, pet.SeriesInstanceUID, pet.SOPInstanceUID,
                              pet.FrameOfReferenceUID, sr_in.SOPInstanceUID, sr_in.SeriesInstanceUID)]
    assert identifying(written(pet_in), uids) and identifying(written(sr_in), uids)    # the inputs do
    deidentify = build(["deidentify"], SECRET)
    deidentify(pet_in)
    deidentify(sr_in)
    assert identifying(written(pet_in), uids) == []
    assert identifying(written(sr_in), uids) == []
    for gone in ("PatientBirthTime", "OtherPatientIDsSequence", "RequestAttributesSequence", "InstitutionAddress"):
        assert gone not in pet_in
    # the same patient, and references that still resolve inside the de-identified set
    assert pet_in.PatientID == sr_in.PatientID and str(pet_in.PatientID).startswith("ANON")
    assert sr_in.StudyInstanceUID == pet_in.StudyInstanceUID
    evidence = sr_in.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == pet_in.SeriesInstanceUID
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == pet_in.SOPInstanceUID
    findings = sr_in.ContentSequence[2].ContentSequence
    assert findings[2].UID == pet_in.StudyInstanceUID
    assert findings[3].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == pet_in.SOPInstanceUID
    assert findings[3].ReferencedSOPSequence[0].ReferencedSOPClassUID == pet.SOPClassUID
    assert [str(c.ConceptNameCodeSequence[0].CodeValue) for c in findings] == ["121071", "111536", "121018", "121233"]
    # what analysis needs and identifies no one stays: pixels, geometry, the Philips SUV factor
    assert pet_in.PixelData == pet.PixelData and pet_in.ImagePositionPatient == pet.ImagePositionPatient
    assert pet_in.private_block(0x7053, "Philips PET Private Group")[0x00].value == "0.000123"
    assert not any(e.tag.group == 0x0009 for e in pet_in)
    assert pet_in.DeidentificationMethodCodeSequence[0].CodeValue == "113100"


def test_keep_retains_attributes_and_private_ones(pet: Dataset) -> None:
    ds = copy.deepcopy(pet)
    ds.private_block(0x0011, "SITE PROTOCOL", create=True).add_new(0x01, "LT", "arm B")
    build([{"deidentify": {"keep": ["PatientWeight", "RadiopharmaceuticalInformationSequence",
                                    "GEMS_PETD_01:0009,xx01", "SITE PROTOCOL:0011,xx01"]}}], SECRET)(ds)
    assert ds.private_block(0x0011, "SITE PROTOCOL")[0x01].value == "arm B"     # kept text stays text
    assert ds.PatientWeight == pet.PatientWeight
    assert ds.RadiopharmaceuticalInformationSequence == pet.RadiopharmaceuticalInformationSequence
    assert ds.private_block(0x0009, "GEMS_PETD_01")[0x01].value == "private note"
    assert list(ds.DeidentificationMethod)[1:] == ["kept PatientWeight", "kept RadiopharmaceuticalInformationSequence",
                                                   "kept GEMS_PETD_01:0009,xx01",
                                                   "kept SITE PROTOCOL:0011,xx01"]


def test_the_table_is_the_standards() -> None:
    """Spot checks against PS3.15 Table E.1-1 (Basic Profile column)."""
    actions = basic_profile().actions
    assert len(actions) > 600
    assert actions[0x00100032] == "X"           # Patient's Birth Time
    assert actions[0x00100030] == "Z"           # Patient's Birth Date
    assert actions[0x00080018] == "U"           # SOP Instance UID
    assert actions[0x00081140] == "U*"          # Referenced Image Sequence (X/Z/U*)
    assert actions[0x00080080] == "X"           # Institution Name (X/Z/D: removed)
    assert basic_profile().action(0x60223000) == "X"     # Overlay Data, a repeating group


@pytest.mark.parametrize("keep, message", [
    (["NoSuchKeyword"], "'NoSuchKeyword' is not a DICOM keyword"),
    (["Vendor:0008,xx01"], "odd group"),
])
def test_bad_keep_refused(keep: list, message: str) -> None:
    with pytest.raises(TransformError, match=message):
        build([{"deidentify": {"keep": keep}}], SECRET)


def test_written_file_round_trips(pet: Dataset, tmp_path: Path) -> None:
    ds = copy.deepcopy(pet)
    build(["deidentify"], SECRET)(ds)
    path = tmp_path / "out.dcm"
    ds.save_as(path, enforce_file_format=True)
    back = pydicom.dcmread(path)
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID == ds.SOPInstanceUID
