"""The embedded default configuration (config/node.yaml) moved to free loopback ports: what a newcomer
runs with `make run`, so the first-run tests exercise its demo peer and route, not a test's own."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from neuropetrix.config.loader import default_config_text
from tests.support.nodeproc import free_port


def default_config(data_dir: Path, **node: Any) -> dict[str, Any]:
    config = yaml.safe_load(default_config_text())
    config["node"].update({"dicom_host": "127.0.0.1", "dicom_port": free_port(), "api_port": free_port(),
                           "data_dir": str(data_dir), **node})
    for peer in config["peers"]:
        if peer["name"] == "demo":
            peer["port"] = free_port()
    return config
