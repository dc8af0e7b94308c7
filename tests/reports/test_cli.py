"""End to end through the command line: `neuropetrix analyze STUDY_DIR --out OUT_DIR` on the analysis
phantom writes analysis.json and every report, and the reports agree with analysis.json."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import hl7
import numpy as np
import pydicom
import pytest

from neuropetrix.reports.writer import FILES
from tests.reports.conftest import dciodvfy
from tests.support.phantom import standard_phantom, write_phantom


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["siemens_bqml", "enhanced"])
def test_analyze_writes_every_report(tmp_path, variant):
    study = tmp_path / "study"
    write_phantom(standard_phantom(), study, variant=variant)
    out = tmp_path / "out"
    cli = Path(sys.executable).parent / "neuropetrix"
    proc = subprocess.run([str(cli), "analyze", str(study), "--out", str(out)], capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(["analysis.json", *FILES.values()])
    analysis = json.loads((out / "analysis.json").read_text("utf-8"))
    assert analysis["lesion_count"] >= 4
    for name in ("seg.dcm", "sr.dcm", "report.dcm"):
        print(f"{variant} dciodvfy {name} warnings:", dciodvfy(out / name))
    seg = hd.seg.segread(out / "seg.dcm")
    assert len(seg.SegmentSequence) == analysis["lesion_count"]
    # The masks where the analysis found the lesions: voxel counts and centroids in patient space.
    volume = seg.get_volume(combine_segments=True)
    by_label = sorted(analysis["lesions"], key=lambda les: les["label"])
    for number, lesion in enumerate(by_label, start=1):
        index = np.argwhere(volume.array == number)
        assert len(index) == lesion["voxel_count"]
        centroid = (volume.affine @ np.append(index.mean(axis=0), 1.0))[:3]
        np.testing.assert_allclose(centroid, lesion["centroid_mm"], atol=0.5)
    sr = hd.sr.srread(out / "sr.dcm")
    groups = sr.content.get_volumetric_roi_measurement_groups()
    sr_max = sorted(m.value for g in groups for m in g.get_measurements() if m.derivation is not None
                    and m.derivation.value == "56851009")
    assert sr_max == pytest.approx(sorted(les["suv_max"] for les in analysis["lesions"]), rel=1e-5)
    msg = hl7.parse((out / "oru.hl7").read_bytes().decode("utf-8"))
    hl7_max = sorted(float(str(obx[5])) for obx in msg.segments("OBX")
                     if str(obx[2]) == "NM" and str(obx[3][0][0]) == "suv_max.SUVbw" and str(obx[4]) != "0")
    assert np.allclose(hl7_max, sorted(les["suv_max"] for les in analysis["lesions"]), rtol=1e-5)
    assert str(msg["PID.F3.R1.C1"]) == "10000000146"
    bundle = json.loads((out / "fhir_bundle.json").read_text("utf-8"))
    resources = [e["resource"] for e in bundle["entry"]]
    tmtv = [r["valueQuantity"]["value"] for r in resources
            if r["resourceType"] == "Observation" and r["code"]["coding"][1]["code"] == "126032"]
    assert tmtv == pytest.approx([analysis["tmtv_ml"]], rel=1e-5)
    # ImagingStudy lists each PET instance once, under the SOP class it was stored with
    pet = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(study.rglob("*")) if p.is_file()]
    pet = {str(ds.SOPInstanceUID): str(ds.SOPClassUID) for ds in pet if ds.Modality == "PT"}
    imaging = next(r for r in resources if r["resourceType"] == "ImagingStudy")
    assert {i["uid"]: i["sopClass"]["code"] for i in imaging["series"][0]["instance"]} == \
        {uid: f"urn:oid:{cls}" for uid, cls in pet.items()}
