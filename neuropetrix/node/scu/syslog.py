"""Audit messages to a syslog collector, as IHE ATNA asks: DICOM PS3.15 A.5 (RFC 3881) XML in an
RFC 5424 syslog message, one UDP datagram each (RFC 5426) or octet-counted over TCP (RFC 6587).

The node/scu side only frames and sends; what is recorded, and when, is store/audit.py's."""
from __future__ import annotations

import logging
import socket
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

log = logging.getLogger("neuropetrix.audit.syslog")

PRI = 10 * 8 + 5          # facility authpriv (10), severity notice (5), as IHE ATNA uses
MSGID = "IHE+RFC-3881"
BOM = b"\xef\xbb\xbf"

# action → (EventID (DCM code, meaning), EventActionCode, EventTypeCode or None); PS3.16 CID 400–403
_EVENTS: dict[str, tuple[tuple[str, str], str, tuple[str, str] | None]] = {
    "association": (("110114", "User Authentication"), "E", ("110122", "Login")),
    "association-refused": (("110113", "Security Alert"), "E", ("110126", "Node Authentication")),
    "login": (("110114", "User Authentication"), "E", ("110122", "Login")),
    "query": (("110112", "Query"), "E", None),
    "forward": (("110106", "Export"), "R", None),
    "read": (("110103", "DICOM Instances Accessed"), "R", None),
    "download": (("110103", "DICOM Instances Accessed"), "R", None),
    "subscribe": (("110110", "Patient Record"), "R", None),
    "review": (("110103", "DICOM Instances Accessed"), "U", None),
    "sign": (("110103", "DICOM Instances Accessed"), "U", None),
    "prune": (("110105", "DICOM Study Deleted"), "D", None),
    "audit": (("110101", "Audit Log Used"), "R", None),
}
_OTHER = (("110100", "Application Activity"), "E", None)


class AuditRow(Protocol):
    id: int
    at: datetime
    user: str
    user_kind: str
    action: str
    patient_id: str
    study_uid: str
    address: str
    outcome: str
    detail: str


def _code(parent: ET.Element, tag: str, code: tuple[str, str], system: str = "DCM") -> None:
    ET.SubElement(parent, tag, {"csd-code": code[0], "codeSystemName": system, "originalText": code[1]})


def audit_message(row: AuditRow, source_id: str) -> bytes:
    """The PS3.15 A.5 AuditMessage for one audit row (UTF-8 XML)."""
    refused = row.action == "association" and row.outcome != "success"
    event_id, action_code, event_type = _EVENTS.get("association-refused" if refused else row.action, _OTHER)
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": action_code, "EventDateTime": row.at.isoformat(timespec="milliseconds") + "Z",
        "EventOutcomeIndicator": "0" if row.outcome == "success" else "4"})
    _code(ident, "EventID", event_id)
    if event_type is not None:
        _code(ident, "EventTypeCode", event_type)
    requestor = {"UserID": row.user or "?", "UserIsRequestor": "true"}
    if row.user_kind == "ae":
        requestor["AlternativeUserID"] = f"AETITLES={row.user}"
    if row.address:
        requestor["NetworkAccessPointID"] = row.address.rsplit(":", 1)[0] if row.address.count(":") == 1 \
            else row.address
        requestor["NetworkAccessPointTypeCode"] = "2"          # an IP address
    ET.SubElement(root, "ActiveParticipant", requestor)
    ET.SubElement(root, "ActiveParticipant", {"UserID": source_id, "AlternativeUserID": f"AETITLES={source_id}",
                                              "UserIsRequestor": "false"})
    ET.SubElement(root, "AuditSourceIdentification", {"AuditSourceID": source_id})
    if row.patient_id:
        patient = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": row.patient_id, "ParticipantObjectTypeCode": "1",
            "ParticipantObjectTypeCodeRole": "1"})
        _code(patient, "ParticipantObjectIDTypeCode", ("2", "Patient Number"), "RFC-3881")
    if row.study_uid:
        study = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": row.study_uid, "ParticipantObjectTypeCode": "2",
            "ParticipantObjectTypeCodeRole": "3"})
        _code(study, "ParticipantObjectIDTypeCode", ("110180", "Study Instance UID"))
        if row.detail:
            ET.SubElement(study, "ParticipantObjectDetail", {"type": "Description", "value": row.detail})
    elif row.detail:
        query = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": row.detail, "ParticipantObjectTypeCode": "2", "ParticipantObjectTypeCodeRole": "24"})
        _code(query, "ParticipantObjectIDTypeCode", ("110181", "SOP Class UID") if row.action == "query"
              else ("12", "URI"), "DCM" if row.action == "query" else "RFC-3881")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def syslog_frame(row: AuditRow, source_id: str, hostname: str, app_name: str = "neuropetrix") -> bytes:
    """One RFC 5424 message: header, no structured data, BOM + the XML."""
    stamp = row.at.isoformat(timespec="milliseconds") + "Z"
    header = f"<{PRI}>1 {stamp} {hostname or '-'} {app_name} - {MSGID} - "
    return header.encode("ascii", "replace") + BOM + audit_message(row, source_id)


@dataclass
class SyslogExporter:
    """Sends each audit row to host:port (UDP, or TCP on one kept connection, reconnecting)."""

    host: str
    port: int
    protocol: Literal["udp", "tcp"]
    source_id: str
    timeout: float = 5.0

    def __post_init__(self) -> None:
        self.hostname = socket.gethostname()
        self._lock = threading.Lock()
        self._tcp: socket.socket | None = None

    def __call__(self, row: AuditRow) -> None:
        message = syslog_frame(row, self.source_id, self.hostname)
        with self._lock:
            if self.protocol == "udp":
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.sendto(message, (self.host, self.port))
                return
            framed = str(len(message)).encode() + b" " + message      # RFC 6587 octet counting
            for attempt in (1, 2):     # a kept connection the collector closed: one fresh try
                try:
                    if self._tcp is None:
                        self._tcp = socket.create_connection((self.host, self.port), timeout=self.timeout)
                    self._tcp.sendall(framed)
                    return
                except OSError:
                    if self._tcp is not None:
                        self._tcp.close()
                    self._tcp = None
                    if attempt == 2:
                        raise

    def close(self) -> None:
        with self._lock:
            if self._tcp is not None:
                self._tcp.close()
                self._tcp = None
