"""Sending our SEG, SR and Encapsulated PDF onward: stock dcmtk storescu cannot (no presentation context
for Segmentation or Comprehensive 3D SR Storage), storescu with config/storescu-neuropetrix.cfg can, and so
can `neuropetrix send`; a dcmtk storescp receives them byte for byte."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
import yaml

from neuropetrix.dicom_uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from neuropetrix.reports.encapsulated import build_encapsulated_pdf
from neuropetrix.reports.seg import build_seg
from neuropetrix.reports.source import study_info
from neuropetrix.reports.sr import build_sr
from tests.support.nodeproc import ROOT, run_cli
from tests.support.peers import storescp

PROFILE = ROOT / "config" / "storescu-neuropetrix.cfg"
ENV = {**os.environ, "TCP_NODELAY": "1"}       # dcmtk stalls on delayed ACKs without it (FACTS.md)


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} (Debian package dcmtk) is not installed: run `make peers`")
    return exe


@pytest.fixture
def objects(result, pet_study, tmp_path) -> list[Path]:
    seg = build_seg(result, pet_study.datasets)
    sr = build_sr(result, pet_study.datasets, study_info(result, pet_study.datasets), seg)
    pdf = build_encapsulated_pdf(result, pet_study.datasets[0], b"%PDF-1.4\n%%EOF\n", [sr, seg])
    paths = []
    for name, ds in (("seg.dcm", seg), ("sr.dcm", sr), ("report.dcm", pdf)):
        paths.append(tmp_path / name)
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def _by_uid(paths: list[Path]) -> dict[str, pydicom.Dataset]:
    """SOP Instance UID → dataset (without the file meta, which is each writer's own)."""
    return {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, paths)}


def test_stock_storescu_cannot_send_seg_or_sr_and_the_profile_can(objects, tmp_path):
    seg, sr, pdf = objects
    with storescp(tmp_path / "stock") as port:
        for path in (seg, sr):
            stock = subprocess.run([_tool("storescu"), "-aec", "PACS", "127.0.0.1", str(port), str(path)], env=ENV,
                                   capture_output=True, text=True, timeout=60)
            assert stock.returncode != 0 and "No presentation context" in stock.stdout + stock.stderr
    assert list((tmp_path / "stock").iterdir()) == []
    with storescp(tmp_path / "profile") as port:
        sent = subprocess.run([_tool("storescu"), "-xf", str(PROFILE), "NeuroPETRIX", "-aec", "PACS", "127.0.0.1",
                               str(port), *map(str, objects)], env=ENV, capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stdout + sent.stderr
    received = _by_uid(list((tmp_path / "profile").iterdir()))
    assert received == _by_uid(objects)


def test_neuropetrix_send_offers_seg_sr_and_pdf(objects, tmp_path):
    with storescp(tmp_path / "pacs", log=tmp_path / "storescp.log") as port:
        config = tmp_path / "node.yaml"
        config.write_text(yaml.safe_dump({"node": {"data_dir": str(tmp_path / "var")}, "peers": [
            {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": port}]}))
        sent = run_cli("send", "pacs", *map(str, objects), "--config", str(config))
        assert sent.returncode == 0, sent.stderr
        assert "sent 3 file(s) to pacs, 0 failed" in sent.stdout
    assert _by_uid(list((tmp_path / "pacs").iterdir())) == _by_uid(objects)
    # the association speaks as the node, not as pynetdicom
    log = (tmp_path / "storescp.log").read_text()
    assert re.search(rf"Their Implementation Class UID: +{re.escape(IMPLEMENTATION_CLASS_UID)}$", log, re.M), log
    assert re.search(rf"Their Implementation Version Name: +{IMPLEMENTATION_VERSION_NAME}$", log, re.M), log
