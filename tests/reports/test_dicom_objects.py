"""SEG, SR and Encapsulated PDF: valid per dciodvfy, and reading them back gives what the analysis said."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from neuropetrix.reports.encapsulated import build_encapsulated_pdf
from neuropetrix.reports.errors import ReportError
from neuropetrix.reports.measures import lesion_measures
from neuropetrix.reports.seg import build_seg, lesion_tracking_uid
from neuropetrix.reports.source import study_info
from neuropetrix.reports.sr import build_sr
from tests.reports.conftest import dciodvfy

SUVBW = Code("126401", "DCM", "SUVbw")


def _save(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def test_seg_is_valid_and_gives_back_the_masks(result, pet_study, tmp_path):
    path = _save(build_seg(result, pet_study.datasets), tmp_path / "seg.dcm")
    warnings = dciodvfy(path)
    print("dciodvfy SEG warnings:", warnings)
    seg = hd.seg.segread(path)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.FrameOfReferenceUID == result.frame_of_reference_uid
    assert seg.StudyInstanceUID == result.study_instance_uid
    assert str(seg.PatientName) == "YILMAZ^AYŞE" and seg.PatientID == "10000000146"
    assert seg.AccessionNumber == "ACC2026001"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == result.pet_series_instance_uid
    assert seg.SeriesInstanceUID != result.pet_series_instance_uid
    assert len(seg.SegmentSequence) == len(result.lesions) == 3
    for number, lesion in enumerate(sorted(result.lesions, key=lambda les: les.label), start=1):
        item = seg.get_segment_description(number)
        assert item.tracking_uid == lesion_tracking_uid(result, lesion.label)
        assert item.tracking_id == f"Lesion {lesion.label}"
        assert item.SegmentAlgorithmName == "NeuroPETRIX SUV threshold"
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Lesion.value
    # The masks, frame by frame on the PET instances they were drawn on (empty frames are omitted).
    labels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=result.pet_sop_instance_uids, combine_segments=True,
        assert_missing_frames_are_empty=True)
    assert labels.shape == result.label_map.shape
    np.testing.assert_array_equal(labels, result.label_map)
    assert [int((labels == les.label).sum()) for les in result.lesions] == [les.voxel_count for les in result.lesions]


def test_seg_numbers_segments_in_label_order_when_labels_have_gaps(result, pet_study):
    gappy = dataclasses.replace(result, label_map=np.where(result.label_map == 3, 7, result.label_map),
                                lesions=[dataclasses.replace(les, label=7) if les.label == 3 else les
                                         for les in result.lesions])
    seg = build_seg(gappy, pet_study.datasets)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Lesion 1", "Lesion 2", "Lesion 7"]
    mask = seg.get_pixels_by_source_instance(result.pet_sop_instance_uids, segment_numbers=[3],
                                             assert_missing_frames_are_empty=True)[..., 0]
    np.testing.assert_array_equal(mask.astype(bool), gappy.label_map == 7)


def test_uids_are_stable_for_a_rerun_and_new_for_another_analysis(result, pet_study):
    first, again = build_seg(result, pet_study.datasets), build_seg(result, pet_study.datasets)
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (again.SOPInstanceUID, again.SeriesInstanceUID)
    pet_uids = {str(ds.SOPInstanceUID) for ds in pet_study.datasets} | {result.pet_series_instance_uid}
    assert first.SOPInstanceUID not in pet_uids and first.SeriesInstanceUID not in pet_uids
    other = dataclasses.replace(result, segmentation=dataclasses.replace(result.segmentation, threshold=2.5))
    changed = build_seg(other, pet_study.datasets)
    assert changed.SOPInstanceUID != first.SOPInstanceUID
    assert changed.SegmentSequence[0].TrackingUID != first.SegmentSequence[0].TrackingUID


def test_more_images_make_a_new_analysis_with_new_uids(result):
    from neuropetrix.reports.uids import derived_uid
    again = dataclasses.replace(result, pet_sop_instance_uids=list(reversed(result.pet_sop_instance_uids)))
    assert derived_uid(again, "seg") == derived_uid(result, "seg")            # the same images, any order
    grown = dataclasses.replace(result, pet_sop_instance_uids=[*result.pet_sop_instance_uids, "1.2.3.4.5"])
    assert derived_uid(grown, "seg") != derived_uid(result, "seg")


def _sr_value(group, concept, derivation=None) -> float:
    for m in group.get_measurements(name=concept):
        if derivation is None or (m.derivation is not None and m.derivation.value == derivation.value):
            return float(m.value)
    raise AssertionError(f"no {concept.meaning} {derivation} in the group")


def test_sr_is_valid_and_gives_back_the_values(result, pet_study, tmp_path):
    info = study_info(result, pet_study.datasets)
    seg = build_seg(result, pet_study.datasets)
    path = _save(build_sr(result, pet_study.datasets, info, seg), tmp_path / "sr.dcm")
    warnings = dciodvfy(path)
    print("dciodvfy SR warnings:", warnings)
    sr = hd.sr.srread(path)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"      # Comprehensive 3D SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.StudyInstanceUID == result.study_instance_uid and str(sr.PatientName) == "YILMAZ^AYŞE"
    report = sr.content
    assert len(report.get_volumetric_roi_measurement_groups()) == 3
    for lesion in result.lesions:
        tracking = lesion_tracking_uid(result, lesion.label)
        [group] = report.get_volumetric_roi_measurement_groups(tracking_uid=tracking)
        reference = group.referenced_segment[0].ReferencedSOPSequence[0]
        assert reference.ReferencedSOPInstanceUID == seg.SOPInstanceUID
        segment = seg.SegmentSequence[int(reference.ReferencedSegmentNumber) - 1]
        assert segment.TrackingUID == tracking and segment.SegmentLabel == f"Lesion {lesion.label}"
        for m in lesion_measures(result, lesion):
            assert _sr_value(group, m.concept, m.derivation) == float(m.reported), m.key     # HL7's digits
            assert float(m.reported) == pytest.approx(m.value, rel=1e-5)
        assert group.get_measurements(name=codes.DCM.TotalLesionGlycolysis)[0].unit.value == "g{SUVbw}"
        assert group.get_measurements(name=codes.SCT.Volume)[0].unit.value == "ml"
        assert {m.unit.value for m in group.get_measurements(name=SUVBW)} == {"g/ml{SUVbw}"}
    [liver] = report.get_image_measurement_groups(finding_site=codes.SCT.Liver)
    assert _sr_value(liver, SUVBW, codes.SCT.Mean) == pytest.approx(result.liver.suv_mean)
    [totals] = [g for g in report.get_image_measurement_groups() if not g.finding_sites]
    assert _sr_value(totals, codes.DCM.MetabolicVolume) == pytest.approx(result.tmtv_ml, rel=1e-5)
    assert _sr_value(totals, codes.DCM.TotalLesionGlycolysis) == pytest.approx(result.tlg_total, rel=1e-5)
    assert _sr_value(totals, codes.SCT.NumberOfLesions) == 3
    assert _sr_value(totals, SUVBW, codes.SCT.Maximum) == pytest.approx(result.suv_max)


def test_sr_values_that_round_up_to_an_extra_digit_stay_valid_ds(result, pet_study, tmp_path):
    lesions = [dataclasses.replace(les, suv_max=9.999999999999998, volume_ml=99.99999999999999)
               for les in result.lesions]
    tricky = dataclasses.replace(result, lesions=lesions)
    info = study_info(tricky, pet_study.datasets)
    path = _save(build_sr(tricky, pet_study.datasets, info, build_seg(tricky, pet_study.datasets)), tmp_path / "sr.dcm")
    dciodvfy(path)
    group = hd.sr.srread(path).content.get_volumetric_roi_measurement_groups()[0]
    assert _sr_value(group, SUVBW, codes.SCT.Maximum) == pytest.approx(10.0)


@pytest.mark.parametrize("suv_type, unit", [("lbm_james", "g/ml{SUVlbm(James128)}"),
                                             ("lbm_janmahasatian", "g/ml{SUVlbm(Janma)}"),
                                             ("bsa", "cm2/ml{SUVbsa}")])
def test_sr_is_valid_for_every_suv_type(result, pet_study, tmp_path, suv_type, unit):
    other = dataclasses.replace(result, suv=dataclasses.replace(result.suv, suv_type=suv_type))
    info = study_info(other, pet_study.datasets)
    path = _save(build_sr(other, pet_study.datasets, info, build_seg(other, pet_study.datasets)), tmp_path / "sr.dcm")
    dciodvfy(path)
    units = {elem.value[0].get("CodeValue") or elem.value[0].get("LongCodeValue")   # > 16 characters
             for elem in pydicom.dcmread(path).iterall() if elem.keyword == "MeasurementUnitsCodeSequence"}
    assert unit in units and unit.replace("/ml", "") in units   # SUV and TLG units of this SUV type


def test_sr_of_a_negative_study_has_totals_and_no_lesion_groups(result, pet_study, tmp_path):
    negative = dataclasses.replace(result, lesions=[], label_map=np.zeros_like(result.label_map))
    with pytest.raises(ReportError, match="at least one segment"):
        build_seg(negative, pet_study.datasets)
    info = study_info(negative, pet_study.datasets)
    path = _save(build_sr(negative, pet_study.datasets, info, None), tmp_path / "sr.dcm")
    dciodvfy(path)
    report = hd.sr.srread(path).content
    assert report.get_volumetric_roi_measurement_groups() == []
    [totals] = [g for g in report.get_image_measurement_groups() if not g.finding_sites]
    assert _sr_value(totals, codes.SCT.NumberOfLesions) == 0
    assert _sr_value(totals, codes.DCM.MetabolicVolume) == 0


def test_encapsulated_pdf_is_valid_and_carries_the_pdf(result, pet_study, tmp_path):
    pdf = b"%PDF-1.4\n% a minimal body for the DICOM wrapper test\n%%EOF\n"
    seg = build_seg(result, pet_study.datasets)
    path = _save(build_encapsulated_pdf(result, pet_study.datasets[0], pdf, [seg]), tmp_path / "report.dcm")
    warnings = dciodvfy(path)
    print("dciodvfy Encapsulated PDF warnings:", warnings)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1" and ds.Modality == "DOC"
    assert ds.EncapsulatedDocument[:ds.EncapsulatedDocumentLength] == pdf
    assert ds.StudyInstanceUID == result.study_instance_uid and str(ds.PatientName) == "YILMAZ^AYŞE"
    assert ds.SourceInstanceSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
    with pytest.raises(ReportError, match="not a PDF"):
        build_encapsulated_pdf(result, pet_study.datasets[0], b"<html>", [])


@pytest.mark.parametrize("change, message", [
    (lambda r, ds: (dataclasses.replace(r, label_map=r.label_map[:-1]), ds), "label_map is shaped"),
    (lambda r, ds: (r, ds[::-1]), "pet_sop_instance_uids order"),
    (lambda r, ds: (dataclasses.replace(r, lesions=r.lesions[:2]), ds), r"label_map holds labels \[1, 2, 3\]"),
    (lambda r, ds: (dataclasses.replace(r, frame_of_reference_uid=None), ds), "frame of reference"),
    (lambda r, ds: (dataclasses.replace(r, label_map=r.label_map.astype(float)), ds), "integers"),
])
def test_seg_refuses_an_analysis_that_does_not_match_the_pet(result, pet_study, change, message):
    bad_result, datasets = change(result, pet_study.datasets)
    with pytest.raises(ReportError, match=message):
        build_seg(bad_result, list(datasets))


def test_sr_refuses_non_finite_values_and_lesions_without_seg(result, pet_study):
    info = study_info(result, pet_study.datasets)
    with pytest.raises(ReportError, match="without a SEG"):
        build_sr(result, pet_study.datasets, info, None)
    broken = dataclasses.replace(result, lesions=[dataclasses.replace(result.lesions[0], suv_peak=float("nan")),
                                                  *result.lesions[1:]])
    with pytest.raises(ReportError, match="lesion-1/suv_peak"):
        build_sr(broken, pet_study.datasets, info, build_seg(result, pet_study.datasets))


def test_study_info_refuses_a_study_without_accession(result, renamed):
    with pytest.raises(ReportError, match="AccessionNumber"):
        study_info(result, renamed(AccessionNumber=""))


def test_seg_names_a_model_and_its_weights(result, pet_study, tmp_path):
    model = dataclasses.replace(result, segmentation=dataclasses.replace(
        result.segmentation, method="model", threshold=None, algorithm_name="SegResNet lesions",
        algorithm_version="2.1", model_file="/srv/models/petct-lesions-v2.pt"))
    path = _save(build_seg(model, pet_study.datasets), tmp_path / "seg.dcm")
    dciodvfy(path)
    algorithm = pydicom.dcmread(path).SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "SegResNet lesions" and algorithm.AlgorithmVersion == "2.1"
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    assert "petct-lesions-v2.pt" in algorithm.AlgorithmParameters
    assert build_seg(model, pet_study.datasets).SOPInstanceUID != build_seg(result, pet_study.datasets).SOPInstanceUID


def _three_objects(result, datasets, now):
    seg = build_seg(result, datasets, now)
    sr = build_sr(result, datasets, study_info(result, datasets), seg, now)
    pdf = build_encapsulated_pdf(result, datasets[0], b"%PDF-1.4\n%%EOF\n", [sr, seg], now)
    return {"seg": seg, "sr": sr, "pdf": pdf}


def test_creation_times_are_in_the_study_zone_with_its_offset(result, pet_study, tmp_path):
    from datetime import datetime, timezone
    now = datetime(2026, 12, 1, 21, 30, 15, tzinfo=timezone.utc)           # 00:30 the next day in Ankara
    for name, ds in _three_objects(result, pet_study.datasets, now).items():
        path = _save(ds, tmp_path / f"{name}.dcm")
        dciodvfy(path)
        read = pydicom.dcmread(path)
        assert read.TimezoneOffsetFromUTC == "+0300", name
        assert (read.InstanceCreationDate, read.InstanceCreationTime) == ("20261202", "003015"), name
        assert (read.ContentDate, read.ContentTime) == ("20261202", "003015"), name


@pytest.mark.parametrize("charset, name, algorithm, expected, expected_pdf", [
    ("ISO_IR 148", "ŞAHİN^IŞIL", "Eşik SUV", "ISO_IR 148", "ISO_IR 148"),     # Latin-5 holds it all
    # Latin-1 cannot hold the algorithm's ş: UTF-8 where it is written; the PDF object does not name it
    ("ISO_IR 100", "MÜLLER^JÜRGEN", "Eşik SUV", "ISO_IR 192", "ISO_IR 100"),
])
def test_seg_sr_and_pdf_follow_one_character_set_rule(result, renamed, tmp_path, charset, name, algorithm,
                                                      expected, expected_pdf):
    """Each object declares the PET's set when that set holds all of the object's text, else UTF-8."""
    datasets = renamed(SpecificCharacterSet=charset, PatientName=name)
    result = dataclasses.replace(result, segmentation=dataclasses.replace(result.segmentation,
                                                                           algorithm_name=algorithm))
    for kind, ds in _three_objects(result, datasets, None).items():
        path = _save(ds, tmp_path / f"{kind}.dcm")
        raw = pydicom.dcmread(path)
        assert raw.SpecificCharacterSet == (expected_pdf if kind == "pdf" else expected), kind
        assert str(raw.PatientName) == name, kind
        texts = [e.value for e in raw.iterall() if e.keyword in ("SegmentAlgorithmName", "TextValue")]
        assert kind == "pdf" or algorithm in texts, kind          # SEG: SegmentAlgorithmName, SR: TEXT items
