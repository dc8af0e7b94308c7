"""write_reports: every file written and valid, nothing written when one object cannot be made, a negative
study reported without a SEG, and SEG/SR/PDF stored in a real PACS (Orthanc) and read back over REST."""
from __future__ import annotations

import dataclasses
import io
import json
import re
import resource
import signal

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image

from neuropetrix.config.settings import HbysSettings, MllpOut
from neuropetrix.dicom_uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, UUID_ROOT
from neuropetrix.reports.errors import ReportError
from neuropetrix.reports.source import study_info
from neuropetrix.reports.writer import FILES, delivery_refusals, write_reports
from tests.reports.conftest import dciodvfy
from tests.support.peers import orthanc, upload


def _pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type /Page\b(?!s)", pdf))


def test_write_reports_writes_every_file_valid(result, pet_study, tmp_path):
    settings = HbysSettings(mllp=MllpOut(version="2.3.1", charset="8859/9"))
    written = write_reports(result, pet_study.datasets, tmp_path, settings)
    assert {k: p.name for k, p in written.items()} == FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES.values())    # no temporary files left
    for name in ("seg", "sr", "report_dcm"):
        print(f"dciodvfy {FILES[name]} warnings:", dciodvfy(written[name]))
        ds = pydicom.dcmread(written[name])          # written by the node, named so, under its UID policy
        assert ds.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
        assert ds.file_meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
        assert ds.SOPInstanceUID.startswith(UUID_ROOT) and ds.SeriesInstanceUID.startswith(UUID_ROOT)
    oru = written["oru"].read_bytes()
    assert b"|2.3.1|" in oru and oru.split(b"\r")[0].endswith(b"|8859/9")
    assert "AYŞE".encode("iso8859_9") in oru
    bundle = json.loads(written["fhir_bundle"].read_text("utf-8"))
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    pdf = written["report_pdf"].read_bytes()
    assert pdf.startswith(b"%PDF-") and _pages(pdf) == 1
    assert pydicom.dcmread(written["report_dcm"]).EncapsulatedDocument[:len(pdf)] == pdf
    with Image.open(written["mip"]) as mip:
        assert mip.format == "PNG" and mip.width >= 300 and mip.height >= 200
        pixels = np.asarray(mip.convert("RGB")).reshape(-1, 3)
    # The outlines are drawn in colour over a grey-scale MIP: count the strongly coloured pixels.
    colourful = np.ptp(pixels.astype(int), axis=1) > 80
    assert colourful.sum() > 50


def test_a_rerun_writes_the_same_objects(result, pet_study, tmp_path):
    first = write_reports(result, pet_study.datasets, tmp_path / "a", HbysSettings())
    again = write_reports(result, pet_study.datasets, tmp_path / "b", HbysSettings())
    for kind in ("seg", "sr", "report_dcm"):
        a, b = pydicom.dcmread(first[kind]), pydicom.dcmread(again[kind])
        assert (a.SOPInstanceUID, a.SeriesInstanceUID) == (b.SOPInstanceUID, b.SeriesInstanceUID)
    assert first["report_pdf"].read_bytes() == again["report_pdf"].read_bytes()


def test_nothing_is_written_when_one_object_cannot_be_made(result, renamed, tmp_path):
    (tmp_path / "sr.dcm").write_bytes(b"earlier")
    with pytest.raises(ReportError, match="PatientID"):
        write_reports(result, renamed(PatientID=""), tmp_path, HbysSettings())
    with pytest.raises(ReportError, match="8859/1"):
        write_reports(result, renamed(), tmp_path, HbysSettings(mllp=MllpOut(charset="8859/1")))
    without_suv = dataclasses.replace(result, suv_volume=None)
    with pytest.raises(ReportError, match="suv_volume"):
        write_reports(without_suv, renamed(), tmp_path, HbysSettings())
    assert [p.name for p in tmp_path.iterdir()] == ["sr.dcm"] and (tmp_path / "sr.dcm").read_bytes() == b"earlier"


def test_without_an_accession_all_but_the_order_deliveries_are_written(result, renamed, tmp_path):
    """No AccessionNumber (a phantom, a QC scan, an import): SEG, SR, PDF, MIP are made; the ORU and the
    FHIR bundle, which file a result against an order, are not, and one left from an earlier run goes."""
    (tmp_path / "oru.hl7").write_bytes(b"from an earlier run")
    written = write_reports(result, renamed(AccessionNumber=""), tmp_path, HbysSettings())
    assert {"seg", "sr", "mip", "report_pdf", "report_dcm"} <= set(written)
    assert not {"oru", "fhir_bundle"} & set(written) and not (tmp_path / "oru.hl7").exists()
    assert set(delivery_refusals(renamed(AccessionNumber=""))) == {"oru", "fhir_bundle"}
    assert delivery_refusals(renamed()) == {}
    dciodvfy(written["sr"])


def test_a_negative_study_is_reported_without_a_seg(result, pet_study, tmp_path):
    (tmp_path / "seg.dcm").write_bytes(b"from an earlier run")
    negative = dataclasses.replace(result, lesions=[], label_map=np.zeros_like(result.label_map))
    written = write_reports(negative, pet_study.datasets, tmp_path, HbysSettings())
    assert "seg" not in written and not (tmp_path / "seg.dcm").exists()
    dciodvfy(written["sr"])
    dciodvfy(written["report_dcm"])
    assert b"|0 lesion(s) segmented" in written["oru"].read_bytes()


def test_seg_sr_and_pdf_stored_in_orthanc_and_read_back(result, pet_study, tmp_path):
    written = write_reports(result, pet_study.datasets, tmp_path / "out", HbysSettings())
    rerun = write_reports(result, pet_study.datasets, tmp_path / "rerun", HbysSettings())
    with orthanc(tmp_path / "orthanc") as pacs:
        ids = {}
        for kind, modality in (("seg", "SEG"), ("sr", "SR"), ("report_dcm", "DOC")):
            answer = upload(pacs, written[kind])
            assert answer["Status"] == "Success"
            ids[kind] = answer["ID"]
            tags = pacs.get(f"/instances/{answer['ID']}/simplified-tags")
            source = pydicom.dcmread(written[kind])
            assert tags["SOPInstanceUID"] == source.SOPInstanceUID and tags["Modality"] == modality
            assert tags["StudyInstanceUID"] == result.study_instance_uid
            assert tags["PatientID"] == "10000000146" and tags["PatientName"] == "YILMAZ^AYŞE"
            assert tags["AccessionNumber"] == "ACC2026001"
        # A re-run of the same analysis replaces, never adds: same instances, nothing new stored.
        for kind in ids:
            assert upload(pacs, rerun[kind])["ID"] == ids[kind]
        assert sorted(pacs.get("/instances")) == sorted(ids.values())
        assert len(pacs.get("/studies")) == 1 and len(pacs.get("/series")) == 3
        # Read back through REST: the SEG gives the same masks, the SR the same values.
        seg = hd.seg.Segmentation.from_dataset(
            pydicom.dcmread(io.BytesIO(pacs.request("GET", f"/instances/{ids['seg']}/file"))))
        labels = seg.get_pixels_by_source_instance(result.pet_sop_instance_uids, combine_segments=True,
                                                   assert_missing_frames_are_empty=True)
        np.testing.assert_array_equal(labels, result.label_map)
        sr = hd.sr.Comprehensive3DSR.from_dataset(
            pydicom.dcmread(io.BytesIO(pacs.request("GET", f"/instances/{ids['sr']}/file"))))
        groups = sr.content.get_volumetric_roi_measurement_groups()
        values = sorted(m.value for g in groups for m in g.get_measurements() if m.derivation is not None
                        and m.derivation.value == "56851009")
        assert values == pytest.approx(sorted(les.suv_max for les in result.lesions))


def test_a_failed_write_replaces_nothing(result, pet_study, tmp_path):
    """A file the disk cannot take (here: over the process's file-size limit, as a full disk would
    refuse it) leaves every file of the earlier set as it was and no temporary file behind."""
    earlier = write_reports(result, pet_study.datasets, tmp_path / "out", HbysSettings())
    sizes = sorted(p.stat().st_size for p in earlier.values())
    for path in earlier.values():
        path.write_bytes(b"earlier " + path.name.encode())
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    limit = sizes[1] + 1                    # the two smallest files fit, the larger ones do not
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with pytest.raises(OSError, match="File too large"):
            write_reports(result, pet_study.datasets, tmp_path / "out", HbysSettings())
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


@pytest.mark.parametrize("charset, name, algorithm", [
    ("ISO_IR 100", "MÜLLER^JÜRGEN", "Eşik SUV"),        # Latin-1 cannot hold ş: SEG and SR go UTF-8
    ("ISO_IR 148", "ŞAHİN^IŞIL", "SUV ≥ 4"),           # nor Latin-5 ≥
])
def test_a_name_read_from_files_in_another_character_set_survives(result, renamed, tmp_path, charset, name,
                                                                   algorithm):
    """PET files read from disk hold their text as raw bytes in the PET's character set; objects that
    declare another set (UTF-8 here) must carry the name decoded, not those bytes re-read as UTF-8."""
    folder = tmp_path / "pet"
    folder.mkdir()
    for i, ds in enumerate(renamed(SpecificCharacterSet=charset, PatientName=name, InstitutionName="Ankara")):
        ds.save_as(folder / f"{i:04d}.dcm", enforce_file_format=True)
    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    assert datasets[0].get_item("PatientName").__class__.__name__ == "RawDataElement"
    result = dataclasses.replace(result, segmentation=dataclasses.replace(result.segmentation,
                                                                           algorithm_name=algorithm))
    written = write_reports(result, datasets, tmp_path / "out", HbysSettings())
    for kind in ("seg", "sr", "report_dcm"):
        ds = pydicom.dcmread(written[kind])
        assert str(ds.PatientName) == name, kind
        if kind != "report_dcm":
            assert ds.SpecificCharacterSet == "ISO_IR 192", kind
        texts = [e.value for e in ds.iterall() if e.keyword in ("SegmentAlgorithmName", "TextValue")]
        assert kind == "report_dcm" or algorithm in texts, kind
    family, given = name.split("^")
    info = study_info(result, datasets, require_accession=True)        # what the PDF's patient row prints
    assert (info.patient_family_name, info.patient_given_name) == (family, given)
    oru = written["oru"].read_bytes().decode("utf-8")
    assert f"|{family}^{given}|" in oru
    bundle = json.loads(written["fhir_bundle"].read_text("utf-8"))
    patients = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert patients[0]["name"][0]["family"] == family
