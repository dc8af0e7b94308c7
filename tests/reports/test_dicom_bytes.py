"""`dicom_bytes` writes what pydicom's `save_as` writes, byte for byte (reports/dicombytes.py): for the
report objects, and for the cases its own sequence encoding must get right (shared items, nested
character sets, undefined lengths, implicit VR, ambiguous VRs resolved from an ancestor)."""
from __future__ import annotations

import copy
import dataclasses
import io
from datetime import UTC, datetime

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from neuropetrix.reports.dicombytes import dicom_bytes
from neuropetrix.reports.encapsulated import build_encapsulated_pdf
from neuropetrix.reports.seg import build_seg
from neuropetrix.reports.source import study_info
from neuropetrix.reports.sr import build_sr


def _saved(ds: Dataset) -> bytes:
    """What pydicom writes, for a copy (its writer corrects VRs in place)."""
    buffer = io.BytesIO()
    copy.deepcopy(ds).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _objects(result, datasets) -> dict[str, Dataset]:
    now = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    seg = build_seg(result, datasets, now)
    sr = build_sr(result, datasets, study_info(result, datasets), seg, now)
    pdf = build_encapsulated_pdf(result, datasets[0], b"%PDF-1.4\n%%EOF\n", [sr, seg], now)
    return {"seg": seg, "sr": sr, "pdf": pdf}


@pytest.mark.parametrize("charset, name", [(None, None), ("ISO_IR 148", "ŞAHİN^IŞIL"),
                                           ("ISO_IR 100", "MÜLLER^JÜRGEN")])
def test_report_objects_are_written_as_pydicom_writes_them(result, renamed, charset, name):
    datasets = renamed(SpecificCharacterSet=charset, PatientName=name) if charset else renamed()
    if charset == "ISO_IR 100":        # text Latin-1 cannot hold: the SR and SEG go UTF-8
        result = dataclasses.replace(result, segmentation=dataclasses.replace(result.segmentation,
                                                                               algorithm_name="Eşik SUV"))
    for kind, ds in _objects(result, datasets).items():
        expected = _saved(ds)
        ours = dicom_bytes(ds)
        assert ours == expected, kind
        assert pydicom.dcmread(io.BytesIO(ours)).SOPInstanceUID == ds.SOPInstanceUID
    assert dicom_bytes(ds) == expected       # the dataset is left as it was: a second write is the same


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "99TEST", meaning
    return item


def _tree(syntax: str) -> Dataset:
    """A dataset exercising every path of the sequence encoding."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.34"
    ds.SOPInstanceUID = generate_uid()
    ds.SpecificCharacterSet = "ISO_IR 148"
    ds.PatientName = "ÇELİK^ŞÜKRÜ"
    ds.PixelRepresentation = 1                          # resolves the nested 'US or SS' below to SS
    shared = _code("1", "ölçüm")
    nested = Dataset()
    nested.SpecificCharacterSet = "ISO_IR 192"          # an item in its own character set
    nested.TextValue = "Ağrı 中"
    nested.ConceptNameCodeSequence = [shared]
    deep = Dataset()
    deep.add_new(0x00280106, "US or SS", -5)            # SmallestImagePixelValue: VR from the ancestor
    deep.ConceptNameCodeSequence = [shared]             # the same item object again
    undefined = Dataset()
    undefined.is_undefined_length_sequence_item = True
    undefined.CodeMeaning = "undefined-length item"
    deep.ContentSequence = [undefined, shared]
    ds.ContentSequence = Sequence([nested, deep, shared])
    ds["ContentSequence"].is_undefined_length = True
    ds.ReferencedSOPSequence = []                        # an empty sequence
    return ds


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_sequences_are_framed_as_pydicom_frames_them(syntax):
    ds = _tree(syntax)
    expected = _saved(ds)
    assert dicom_bytes(ds) == expected
    read = pydicom.dcmread(io.BytesIO(expected))
    assert read.ContentSequence[0].TextValue == "Ağrı 中"
    if syntax != ImplicitVRLittleEndian:      # implicit VR: a reader cannot tell SS from US
        assert read.ContentSequence[1][0x00280106].value == -5


def test_elements_read_from_a_file_are_reencoded_in_the_objects_character_set(pet_study):
    """A raw (undecoded) element copied from a source image is written as pydicom writes it."""
    source = pydicom.dcmread(sorted(pet_study.folder.glob("PT*.dcm"))[0])
    ds = _tree(ExplicitVRLittleEndian)
    item = Dataset()
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesDescription"):
        tag = pydicom.datadict.tag_for_keyword(keyword)
        assert source.get_item(tag).is_raw, keyword
        item[tag] = source.get_item(tag)
    ds.ReferencedSOPSequence = [item]
    assert dicom_bytes(ds) == _saved(ds)
