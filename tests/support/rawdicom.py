"""A deliberately minimal DICOM requestor on a raw socket, to send what no well-behaved SCU would:
undecodable datasets, half a dataset followed by an abort."""
from __future__ import annotations

import socket
import struct
from io import BytesIO

import pydicom
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context

from neuropetrix.node.scp.wire import ABORT, ASSOCIATE_AC, P_DATA_TF


def encode_command(ds: pydicom.Dataset) -> bytes:
    """A command set in Implicit VR Little Endian, preceded by its group length (PS3.7 E.1)."""
    body = encode(ds, True, True)
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


class RawAssociation:
    def __init__(self, port: int, sop_class: str, transfer_syntax: str, calling: str = "PYNETDICOM",
                 called: str = "NEUROPETRIX") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sop_class = sop_class
        rq = A_ASSOCIATE()
        rq.application_context_name = "1.2.840.10008.3.1.1.1"
        rq.calling_ae_title, rq.called_ae_title = calling, called
        cx = build_context(sop_class, [transfer_syntax])
        cx.context_id = 1
        rq.presentation_context_definition_list = [cx]
        max_length = MaximumLengthNotification()
        max_length.maximum_length_received = 0
        rq.user_information = [max_length]
        pdu = A_ASSOCIATE_RQ()
        pdu.from_primitive(rq)
        self.sock.sendall(pdu.encode())
        pdu_type, body = self.read_pdu()
        assert pdu_type == ASSOCIATE_AC, f"association not accepted (PDU type {pdu_type})"

    def read_pdu(self) -> tuple[int, bytes]:
        header = self._exact(6)
        pdu_type, _, length = struct.unpack(">BBI", header)
        return pdu_type, self._exact(length)

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed by the node")
            data += chunk
        return data

    def send_store(self, sop_instance: str, encoded: bytes, last: bool = True) -> None:
        cmd = pydicom.Dataset()
        cmd.AffectedSOPClassUID = self.sop_class
        cmd.CommandField, cmd.MessageID, cmd.Priority, cmd.CommandDataSetType = 0x0001, 1, 0, 0x0000
        cmd.AffectedSOPInstanceUID = sop_instance
        command = encode_command(cmd)
        pdv = struct.pack(">IBB", len(command) + 2, 1, 0x03) + command
        pdv += struct.pack(">IBB", len(encoded) + 2, 1, 0x02 if last else 0x00) + encoded
        self.sock.sendall(struct.pack(">BBI", P_DATA_TF, 0, len(pdv)) + pdv)

    def store_status(self, sop_instance: str, encoded: bytes) -> int:
        self.send_store(sop_instance, encoded)
        pdu_type, body = self.read_pdu()
        assert pdu_type == P_DATA_TF
        return int(decode(BytesIO(body[6:]), True, True).Status)

    def abort(self) -> None:
        self.sock.sendall(struct.pack(">BBIBBBB", ABORT, 0, 4, 0, 0, 0, 0))
        self.sock.close()
