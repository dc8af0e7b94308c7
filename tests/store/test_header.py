"""The SCP's own reader of the five index keys agrees with pydicom on every kind of file we have,
and hands anything it does not handle back to pydicom; its completeness walk finds every cut."""
from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from neuropetrix.store.header import keys_of, scan_keys, truncation
from tests.support.dicomfiles import dataset_bytes
from tests.support.synthetic import StudySpec, write_petct_study


def encoded(ds: Dataset, syntax: str, path: Path) -> bytes:
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian)
    return dataset_bytes(path)


def with_sequences(undefined: bool) -> Dataset:
    """A header with nested sequences before the keys, in defined or undefined lengths."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.128", generate_uid()
    inner = Dataset()
    inner.ReferencedSOPClassUID, inner.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
    inner.PurposeOfReferenceCodeSequence = Sequence([Dataset()])
    inner.PurposeOfReferenceCodeSequence[0].CodeValue = "121311"
    ds.ReferencedImageSequence = Sequence([inner, inner])
    ds.PatientName = "ŞAHİN^IŞIL"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.InstanceNumber = "12"
    ds.ImagePositionPatient = [0, 0, 0]
    if undefined:
        ds["ReferencedImageSequence"].is_undefined_length = True
        for item in ds.ReferencedImageSequence:
            item.is_undefined_length_sequence_item = True
            item["PurposeOfReferenceCodeSequence"].is_undefined_length = True
    return ds


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("undefined", [False, True])
def test_keys_behind_nested_sequences_match_pydicom(tmp_path, syntax, undefined):
    raw = encoded(with_sequences(undefined), syntax, tmp_path / "x.dcm")
    assert scan_keys(raw, syntax, whole=True) == keys_of(pydicom.dcmread(tmp_path / "x.dcm"))
    assert scan_keys(raw, syntax) is None        # it may go on: the element after group 0020 is not in hand


def test_keys_of_scanner_files_match_pydicom(tmp_path):
    _, files = write_petct_study(tmp_path, StudySpec(ct_slices=3, pet_slices=3, ct_matrix=64, pet_matrix=32))
    for f in files:
        ds = pydicom.dcmread(f)
        keys = scan_keys(dataset_bytes(f)[:65536], ds.file_meta.TransferSyntaxUID)
        assert keys == keys_of(ds) and keys.instance_number == ds.InstanceNumber


def test_what_the_reader_does_not_handle_goes_back_to_pydicom(tmp_path):
    raw = encoded(with_sequences(True), ExplicitVRLittleEndian, tmp_path / "x.dcm")
    cut = raw.index(b"\x20\x00\x0d\x00")                         # inside the header
    assert scan_keys(raw[:cut + 4], ExplicitVRLittleEndian, whole=True) is None   # ends inside an element
    assert scan_keys(b"", ExplicitVRLittleEndian, whole=True) is None          # nothing in hand
    assert scan_keys(raw, "1.2.840.10008.1.2.1.99") is None                   # deflated
    assert scan_keys(raw, "1.2.840.10008.1.2.2") is None                      # big endian
    assert scan_keys(raw[:40] + b"\x08\x00\x20\x00UN\x00\x00\xff\xff\xff\xff", ExplicitVRLittleEndian) is None


def with_pixels(encapsulated: bool) -> Dataset:
    """`with_sequences(True)` with Pixel Data after it: native, or encapsulated in fragments."""
    ds = with_sequences(True)
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 16, 16, 16, 1
    if encapsulated:
        ds.PixelData = encapsulate([b"\x01\x02" * 100, b"\x03\x04" * 77])
        ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    else:
        ds.PixelData = b"\x05\x06" * 256
    return ds


def whole_or_why(raw: bytes, syntax: str, head: int = 65536) -> str | None:
    return truncation(raw[:head], len(raw), lambda pos, n: raw[pos:pos + n], syntax)


@pytest.mark.parametrize("syntax, encapsulated", [(ExplicitVRLittleEndian, False), (ImplicitVRLittleEndian, False),
                                                   (ExplicitVRLittleEndian, True)])
@pytest.mark.parametrize("head", [65536, 100])    # all in memory, or mostly read back from the file
def test_a_whole_dataset_is_whole_and_every_cut_inside_an_element_is_found(tmp_path, syntax, encapsulated, head):
    ds = with_pixels(encapsulated)
    raw = encoded(ds, syntax, tmp_path / "x.dcm")
    assert whole_or_why(raw, syntax, head) is None
    ends = set()                                       # where a top-level element ends: a cut there is whole
    fp = pydicom.filebase.DicomBytesIO(raw)
    fp.is_implicit_VR, fp.is_little_endian = syntax == ImplicitVRLittleEndian, True
    for elem in pydicom.filereader.data_element_generator(fp, fp.is_implicit_VR, True):
        ends.add(fp.tell())
    cuts = [n for n in range(1, len(raw)) if n not in ends]
    assert all(whole_or_why(raw[:n], syntax, head) is not None for n in cuts)
    assert "(7FE0,0010)" in (whole_or_why(raw[:-3], syntax, head) or "") or encapsulated
