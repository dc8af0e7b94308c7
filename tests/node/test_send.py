"""`neuropetrix send`: the node's own C-STORE SCU, to a real PACS (Orthanc)."""
from __future__ import annotations

import json

import yaml

from tests.support.nodeproc import run_cli
from tests.support.peers import orthanc


def test_send_a_folder_to_orthanc_and_refuse_an_unknown_destination(tmp_path, small_study):
    spec, files = small_study
    with orthanc(tmp_path / "pacs") as pacs:
        config = tmp_path / "node.yaml"
        config.write_text(yaml.safe_dump({
            "node": {"data_dir": str(tmp_path / "var")},
            "peers": [{"name": "pacs", "ae_title": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port}]}))
        sent = run_cli("send", "pacs", str(files[0].parent.parent), "--config", str(config))
        assert sent.returncode == 0, sent.stderr
        assert f"sent {len(files)} file(s) to pacs, 0 failed" in sent.stdout
        found = pacs.request("POST", "/tools/find", json.dumps(
            {"Level": "Instance", "Query": {"StudyInstanceUID": spec.study_uid}}).encode())
        assert len(json.loads(found)) == len(files)
        unknown = run_cli("send", "elsewhere", str(files[0]), "--config", str(config))
        assert unknown.returncode != 0
        assert unknown.stderr.strip() == "neuropetrix: no peer named 'elsewhere' (configured: pacs)"
        missing = run_cli("send", "pacs", str(tmp_path / "nothing-here"), "--config", str(config))
        assert missing.returncode != 0 and "no such file or folder" in missing.stderr
