"""The SR's Image Library is what highdicom's own `ImageLibrary` makes, byte for byte, however the
slices' geometry varies; only faster (reports/imagelibrary.py)."""
from __future__ import annotations

import copy
from datetime import UTC, datetime

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from neuropetrix.reports import sr as sr_module
from neuropetrix.reports.dicombytes import dicom_bytes
from neuropetrix.reports.imagelibrary import image_library
from neuropetrix.reports.seg import build_seg
from neuropetrix.reports.source import study_info
from neuropetrix.reports.sr import build_sr


def _encoded(item: Dataset) -> bytes:
    holder = Dataset()
    holder.ContentSequence = [item]
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, holder)
    return buffer.getvalue()


def test_sr_bytes_equal_those_with_highdicoms_image_library(result, pet_study, monkeypatch):
    info = study_info(result, pet_study.datasets)
    now = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    seg = build_seg(result, pet_study.datasets, now)
    ours = build_sr(result, pet_study.datasets, info, seg, now)

    report = hd.sr.MeasurementReport
    monkeypatch.setattr(sr_module, "add_image_library", lambda sr, datasets: None)
    monkeypatch.setattr(sr_module.hd.sr, "MeasurementReport",
                        lambda **kw: report(**kw, referenced_images=pet_study.datasets))
    theirs = build_sr(result, pet_study.datasets, info, seg, now)
    for mine, its in zip(ours.ContributingEquipmentSequence, theirs.ContributingEquipmentSequence, strict=True):
        if "ContributionDateTime" in mine:             # highdicom stamps itself with its own clock
            its.ContributionDateTime = mine.ContributionDateTime
    assert b"Image Library" in dicom_bytes(ours)
    assert dicom_bytes(ours) == dicom_bytes(theirs)


def test_library_equals_highdicoms_for_mixed_geometry(pet_study):
    datasets = [copy.deepcopy(ds) for ds in pet_study.datasets]
    for k, ds in enumerate(datasets):
        if k % 3 == 1:
            ds.SliceThickness = "4.25"                # a second geometry, interleaved
        if k >= len(datasets) - 5:
            ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"    # a second group
        if k == 7:
            del ds.FrameOfReferenceUID                 # an image without one (its own group)
    ours = image_library(datasets)
    assert [len(group.ContentSequence) for group in ours.ContentSequence] == [
        len(group.ContentSequence) for group in hd.sr.ImageLibrary(datasets)[0].ContentSequence]
    assert _encoded(ours) == _encoded(hd.sr.ImageLibrary(datasets)[0])
