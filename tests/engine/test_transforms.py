"""Transforms: coercion, PS3.15 basic-profile de-identification with consistent pseudonyms, UTF-8."""
from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset

from neuropetrix.engine.transforms import TransformError, build

SECRET = "site-secret"


def header(patient_id: str = "10000000146", study_uid: str = "1.2.3.4", sop_uid: str = "1.2.3.4.5.6") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.SourceApplicationEntityTitle = "PETCT1"
    ds.SpecificCharacterSet = "ISO_IR 148"                     # Latin-5
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.128"
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = study_uid + ".1"
    ds.FrameOfReferenceUID = study_uid + ".9"
    ds.PatientName = "YILMAZ^AYŞE"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19650314"
    ds.PatientWeight = "72"
    ds.PatientAddress = "Çankaya, Ankara"
    ds.InstitutionName = "Ankara Şehir Hastanesi"
    ds.StationName = "PETCT1"
    ds.AccessionNumber = "ACC1"
    ds.StudyID = "S1"
    ds.StudyDate = "20261124"
    ds.Modality = "PT"
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ref.ReferencedSOPInstanceUID = "1.2.3.4.7"
    ds.ReferencedImageSequence = [ref]
    ds.add_new((0x0009, 0x0010), "LO", "GEMS_PETD_01")
    ds.add_new((0x0009, 0x1001), "LO", "private")
    return ds


def apply(steps: list, ds: Dataset) -> Dataset:
    transform = build(steps, SECRET)
    assert transform is not None
    transform(ds)
    return ds


def test_coercion_set_copy_remove_map() -> None:
    ds = apply([{"set": {"InstitutionName": "NeuroPETRIX Research"}},
                {"copy": {"StudyID": "AccessionNumber"}},
                {"remove": ["StationName", "PatientAddress"]},
                {"map": {"SourceApplicationEntityTitle": {"PETCT1": "SCANNER_A"}, "Modality": {"CT": "XX"}}}],
               header())
    assert ds.InstitutionName == "NeuroPETRIX Research"
    assert ds.StudyID == "ACC1"
    assert "StationName" not in ds and "PatientAddress" not in ds
    assert ds.file_meta.SourceApplicationEntityTitle == "SCANNER_A"   # AE title in the file meta
    assert ds.Modality == "PT"                                        # not in the table: kept


def test_deidentify_basic_profile() -> None:
    ds = apply(["deidentify"], header())
    for gone in ("PatientAddress", "InstitutionName", "StationName", "PatientWeight"):
        assert gone not in ds
    for empty in ("PatientBirthDate", "AccessionNumber", "StudyDate", "StudyID"):
        assert ds[empty].value in ("", None)
    assert not any(elem.tag.is_private for elem in ds)
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert str(ds.PatientID).startswith("ANON") and str(ds.PatientName) == str(ds.PatientID)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.128"                     # a class, kept
    assert ds.ReferencedImageSequence[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID,
                ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID):
        assert uid.startswith("2.25.") and len(uid) <= 64
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_pseudonyms_are_consistent_and_keyed() -> None:
    a1 = apply(["deidentify"], header(sop_uid="1.2.3.4.5.1"))
    a2 = apply(["deidentify"], header(sop_uid="1.2.3.4.5.2"))
    again = apply(["deidentify"], header(sop_uid="1.2.3.4.5.1"))
    other = apply(["deidentify"], header(patient_id="20000000000", study_uid="1.2.3.8"))
    assert a1.PatientID == a2.PatientID == again.PatientID != other.PatientID      # same patient, same name
    assert a1.StudyInstanceUID == a2.StudyInstanceUID != other.StudyInstanceUID    # the study stays one study
    assert a1.SOPInstanceUID == again.SOPInstanceUID != a2.SOPInstanceUID          # a retry: the same object
    other_key = header()
    build(["deidentify"], "another-secret")(other_key)
    assert other_key.PatientID != a1.PatientID


def test_deidentify_keep_retains_what_a_protocol_needs() -> None:
    ds = apply([{"deidentify": {"keep": ["PatientWeight", "StudyDate"]}}], header())
    assert ds.PatientWeight == 72 and ds.StudyDate == "20261124"


def test_charset_to_utf8(tmp_path: Path) -> None:
    ds = header()
    path = tmp_path / "latin5.dcm"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    assert "Ş".encode("iso8859_9") in raw
    ds = pydicom.dcmread(path)
    apply(["charset_utf8"], ds)
    out = tmp_path / "utf8.dcm"
    ds.save_as(out)
    assert "Şehir".encode("utf-8") in out.read_bytes()
    back = pydicom.dcmread(out)
    assert back.SpecificCharacterSet == "ISO_IR 192" and back.PatientName == "YILMAZ^AYŞE"


@pytest.mark.parametrize("steps, message", [
    (["shuffle"], "unknown step 'shuffle'"),
    ([{"set": {"NoSuchKeyword": 1}}], "'NoSuchKeyword' is not a DICOM keyword"),
    ([{"set": {"ReferencedImageSequence": 1}}], "is a sequence"),
    ([{"remove": "StationName"}], "remove: give a list of keywords"),
    ([{"map": {"InstitutionName": "x"}}], "map: InstitutionName needs a table"),
    ([{"deidentify": {"keep": ["PatientWeight"], "dates": "shift"}}], "the only option is keep"),
    ([{"set": {"A": 1}, "remove": ["B"]}], "a step is a name or a one-key mapping"),
])
def test_bad_steps_refused(steps: list, message: str) -> None:
    with pytest.raises(TransformError, match=message.replace("(", r"\(").replace("'", "'")):
        build(steps, SECRET)
