"""Our SEG and SR read by the software hospitals run, none of it written here: OHIF's SEG loader
(@cornerstonejs/adapters, on dcmjs), dcmjs's SR parse, QIICR's dcmqi (segimage2itkimage, tid1500reader),
highdicom's readers and Orthanc's DICOMweb frames — for a 64×64 PET and for a 155×155 one, whose 1-bit
frames would not fill whole bytes."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import urllib.request
from email import message_from_bytes
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from neuropetrix.reports import seg as seg_module
from neuropetrix.reports.measures import lesion_measures
from neuropetrix.reports.seg import build_seg, lesion_tracking_uid, segment_color
from neuropetrix.reports.source import study_info
from neuropetrix.reports.sr import build_sr
from tests.reports.consumers import consumer
from tests.support.peers import DICOMWEB_PLUGIN, orthanc, upload

SUVBW = "126401"
DERIVATIONS = {"suv_max": "56851009", "suv_mean": "373098007", "suv_peak": "126031"}


@pytest.fixture(params=["64x64", "155x155"])
def study(request):
    """(PET study, analysis) for each matrix."""
    if request.param == "64x64":
        return request.getfixturevalue("pet_study"), request.getfixturevalue("result")
    return request.getfixturevalue("odd_pet_study"), request.getfixturevalue("odd_result")


def _save(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _ohif_labels(document: dict, shape: tuple[int, int, int]) -> np.ndarray:
    """The label map OHIF's adapter built, one slice per PET image in instance order."""
    labels = np.zeros((shape[0], shape[1] * shape[2]), dtype=np.int32)
    for k, voxels in enumerate(document["slices"]):
        for index, value in voxels:
            labels[k, index] = value
    return labels.reshape(shape)


def _dcmqi(tool: str) -> str:
    """A dcmqi program: on the PATH or beside this Python (pip installs it into the venv's bin)."""
    exe = shutil.which(tool) or shutil.which(tool, path=str(Path(sys.executable).parent))
    assert exe, f"dcmqi's {tool} is not installed (pip dcmqi, in the test extra)"
    return exe


def _two_frame_result(result):
    """One small lesion on two slices: a SEG of two frames."""
    labels = np.zeros_like(result.label_map)
    labels[12:14, 30:33, 20:23] = 1
    return dataclasses.replace(result, label_map=labels, lesions=[dataclasses.replace(result.lesions[0], label=1)])


def test_ohif_seg_loader_reads_our_masks_and_colours(study, tmp_path):
    pet, result = study
    seg = build_seg(result, pet.datasets)
    document = consumer("seg", _save(seg, tmp_path / "seg.dcm"), pet.folder)
    rows = int(pet.datasets[0].Rows)
    assert (document["segmentation_type"], document["bits_allocated"]) == \
        (("BINARY", 1) if rows == 64 else ("FRACTIONAL", 8))
    np.testing.assert_array_equal(_ohif_labels(document, result.label_map.shape), result.label_map)
    assert document["content_creator"] == [{"Alphabetic": "NeuroPETRIX^"}]
    for k, segment in enumerate(document["segments"]):
        assert segment["label"] == f"Lesion {k + 1}"
        assert segment["tracking_uid"] == lesion_tracking_uid(result, k + 1)
        assert segment["color"] == list(segment_color(k).value)
    assert len({tuple(s["color"]) for s in document["segments"]}) == 3


def test_a_1bit_seg_whose_frames_split_bytes_is_misread_by_ohif_and_ours_is_not(odd_pet_study, odd_result,
                                                                                tmp_path, monkeypatch):
    """Two 155×155 1-bit frames are 6006.25 bytes, padded to 6008 = twice 3004: OHIF's adapter then unpacks
    them frame by frame and shifts the second frame's mask. Our SEG of the same lesion reads right."""
    two = _two_frame_result(odd_result)
    ours = consumer("seg", _save(build_seg(two, odd_pet_study.datasets), tmp_path / "ours.dcm"), odd_pet_study.folder)
    np.testing.assert_array_equal(_ohif_labels(ours, two.label_map.shape), two.label_map)
    monkeypatch.setattr(seg_module, "segmentation_type", lambda rows, columns: hd.seg.SegmentationTypeValues.BINARY)
    packed = consumer("seg", _save(build_seg(two, odd_pet_study.datasets), tmp_path / "1bit.dcm"),
                      odd_pet_study.folder)
    assert packed["bits_allocated"] == 1
    assert not np.array_equal(_ohif_labels(packed, two.label_map.shape), two.label_map)


def test_highdicom_and_dcmqi_read_our_seg(study, tmp_path):
    pet, result = study
    path = _save(build_seg(result, pet.datasets), tmp_path / "seg.dcm")
    seg = hd.seg.segread(path)
    for number in (1, 2, 3):
        mask = seg.get_pixels_by_source_instance(result.pet_sop_instance_uids, segment_numbers=[number],
                                                 assert_missing_frames_are_empty=True)[..., 0]
        np.testing.assert_array_equal(mask > 0, result.label_map == number)
    proc = subprocess.run([_dcmqi("segimage2itkimage"), "--inputDICOM", str(path), "--outputDirectory", str(tmp_path),
                           "--outputType", "nrrd"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["ContentCreatorName"] == "NeuroPETRIX^"
    for number, lesion in enumerate(sorted(result.lesions, key=lambda les: les.label), start=1):
        [attributes] = [a for group in meta["segmentAttributes"] for a in group if a["labelID"] == number]
        assert attributes["TrackingUniqueIdentifier"] == lesion_tracking_uid(result, lesion.label)
        assert attributes["recommendedDisplayRGBValue"] == list(segment_color(number - 1).to_rgb())
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"{number}.nrrd")))
        assert int((image > 0).sum()) == lesion.voxel_count


def test_orthanc_dicomweb_serves_each_frame_of_our_155_seg(odd_pet_study, odd_result, tmp_path):
    seg = build_seg(odd_result, odd_pet_study.datasets)
    path = _save(seg, tmp_path / "seg.dcm")
    frame_bytes = int(seg.Rows) * int(seg.Columns)            # 8-bit frames: one byte per pixel
    with orthanc(tmp_path / "orthanc", plugins=[DICOMWEB_PLUGIN]) as server:
        upload(server, path)
        base = (f"{server.url}/dicom-web/studies/{seg.StudyInstanceUID}/series/{seg.SeriesInstanceUID}"
                f"/instances/{seg.SOPInstanceUID}/frames")
        for number in (1, int(seg.NumberOfFrames)):
            request = urllib.request.Request(f"{base}/{number}", headers={
                "Accept": 'multipart/related; type="application/octet-stream"'})
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
                content_type = response.headers["Content-Type"]
            parts = message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body).get_payload()
            assert len(parts) == 1
            served = parts[0].get_payload(decode=True)
            assert served == seg.PixelData[(number - 1) * frame_bytes:number * frame_bytes]


def test_sr_read_by_dcmjs_and_dcmqi_has_the_image_library_and_distinct_derivations(study, tmp_path):
    pet, result = study
    seg = build_seg(result, pet.datasets)
    path = _save(build_sr(result, pet.datasets, study_info(result, pet.datasets), seg), tmp_path / "sr.dcm")
    document = consumer("sr", path)
    assert document["image_library"] == result.pet_sop_instance_uids        # OHIF's SR handler needs it
    assert document["timezone"] == "+0300"
    groups = {g["tracking_uid"]: g for g in document["groups"] if g["tracking_uid"]}
    for lesion in result.lesions:
        group = groups[lesion_tracking_uid(result, lesion.label)]
        suv = {m["derivation"]: m for m in group["measurements"] if m["concept"] == SUVBW}
        assert set(suv) == set(DERIVATIONS.values())           # max, mean, peak: one each, told apart
        for m in lesion_measures(result, lesion):
            if m.key in DERIVATIONS:
                assert suv[DERIVATIONS[m.key]]["value"] == float(m.reported)
                assert suv[DERIVATIONS[m.key]]["unit"] == "g/ml{SUVbw}"
    proc = subprocess.run([_dcmqi("tid1500reader"), "--inputDICOM", str(path),
                           "--outputMetadata", str(tmp_path / "sr.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    read = json.loads((tmp_path / "sr.json").read_text())
    by_tracking = {m["TrackingUniqueIdentifier"]: m for m in read["Measurements"]}
    lesion = result.lesions[0]
    items = by_tracking[lesion_tracking_uid(result, lesion.label)]["measurementItems"]
    suv = {i["derivationModifier"]["CodeValue"]: float(i["value"]) for i in items
           if i["quantity"]["CodeValue"] == SUVBW}
    assert suv == {DERIVATIONS["suv_max"]: float(lesion_measures(result, lesion)[0].reported),
                   DERIVATIONS["suv_mean"]: float(lesion_measures(result, lesion)[1].reported),
                   DERIVATIONS["suv_peak"]: float(lesion_measures(result, lesion)[2].reported)}
