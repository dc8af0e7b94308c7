"""Talking to a running node's API from synchronous tests, and reading what the peers received."""
from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from typing import Any

import hl7
import pydicom

from tests.support.nodeproc import NodeProcess
from tests.support.peers import Orthanc

PASSWORD = "correct horse battery"


class Api:
    """JSON over HTTP to a node's API, as one user (or nobody)."""

    def __init__(self, node: NodeProcess, username: str | None = None) -> None:
        self.base = f"http://127.0.0.1:{node.api_port}"
        self.token = None
        if username is not None:
            status, body = self.call("POST", "/api/auth/login", {"username": username, "password": PASSWORD})
            assert status == 200, body
            self.token = body["access_token"]

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw, status = response.read(), response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode("utf-8", "replace")


def add_user(node: NodeProcess, name: str, role: str, *extra: str) -> None:
    done = node.cli("users", "add", name, "--role", role, *extra, input=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr


def pacs_objects(pacs: Orthanc, sop_class: str) -> list[pydicom.Dataset]:
    """Every instance of `sop_class` the PACS holds, read from the bytes it stored."""
    out = []
    for instance in pacs.get("/instances"):
        ds = pydicom.dcmread(io.BytesIO(pacs.request("GET", f"/instances/{instance}/file")))
        if ds.SOPClassUID == sop_class:
            out.append(ds)
    return sorted(out, key=lambda ds: int(ds.InstanceNumber))


def oru_statuses(message: str) -> tuple[str, list[str], list[str]]:
    """(OBR-25, every OBX-11, every OBX-4 of the NM observations) of an ORU, read by python-hl7."""
    parsed = hl7.parse(message)
    obx = list(parsed.segments("OBX"))
    return (str(parsed.segment("OBR")(25)), [str(o(11)) for o in obx],
            [str(o(4)) for o in obx if str(o(2)) == "NM"])


def report_of(bundle: dict) -> dict:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")


def observation_statuses(bundle: dict) -> set[str]:
    return {e["resource"]["status"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"}
