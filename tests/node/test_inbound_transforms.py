"""A peer's inbound transforms change what is stored from it; other callers' instances stay as sent."""
from __future__ import annotations

import json

import pydicom

from tests.conftest import storescu
from tests.support.dicomfiles import dataset_bytes
from tests.support.nodeproc import SCANNER_AE, free_port, run_cli, running_node


def test_inbound_coercion_for_one_peer_only(tmp_path, small_study):
    spec, files = small_study
    peers = [{"name": "scanner", "ae_title": SCANNER_AE, "host": "127.0.0.1", "port": free_port(),
              "transforms_in": [{"set": {"InstitutionName": "NEUROPETRIX PET/CT"}},
                                {"remove": ["ReferringPhysicianName"]}]},
             {"name": "pacs", "ae_title": "OLDPACS", "host": "127.0.0.1", "port": free_port()}]
    with running_node(tmp_path, {"peers": peers}) as node:
        assert storescu(node.dicom_port, *files[:4]).returncode == 0
        assert storescu(node.dicom_port, *files[4:], aet="OLDPACS").returncode == 0
        stored = {p.stem: p for p in (node.data_dir / "storage").rglob("*.dcm")}
        rows = json.loads(node.cli("studies", "--json").stdout)
    assert rows[0]["instances"] == len(files)
    for i, f in enumerate(files):
        sent = pydicom.dcmread(f)
        kept = pydicom.dcmread(stored[sent.SOPInstanceUID])
        assert kept.PixelData == sent.PixelData
        if i < 4:
            assert kept.InstitutionName == "NEUROPETRIX PET/CT" and "ReferringPhysicianName" not in kept
            assert kept.PatientName == spec.patient_name
        else:
            assert dataset_bytes(stored[sent.SOPInstanceUID]) == dataset_bytes(f)   # untouched


def test_a_bad_inbound_transform_is_refused_at_start_naming_the_peer(tmp_path):
    config = tmp_path / "node.yaml"
    config.write_text(json.dumps({"node": {"data_dir": str(tmp_path / "var"), "dicom_port": free_port(),
                                           "api_port": free_port()},
                                  "peers": [{"name": "scanner", "ae_title": SCANNER_AE, "host": "127.0.0.1",
                                             "port": 104, "transforms_in": ["shuffle_pixels"]}]}))
    result = run_cli("serve", "--config", str(config))
    assert result.returncode != 0
    assert "peers 'scanner': transforms_in: unknown step 'shuffle_pixels'" in result.stderr
