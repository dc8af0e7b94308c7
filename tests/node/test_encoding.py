"""The two things the SCP encodes by hand, decoded by pydicom: file meta headers and responses."""
from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.filereader import read_file_meta_info
from pynetdicom.dsutils import decode

from neuropetrix.node.scp.wire import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
    encode_response,
    file_header,
)


@pytest.mark.parametrize("source_ae", ["STORESCU", "PETCT1", "ODD", ""])
def test_file_header_reads_back_with_pydicom(tmp_path, source_ae):
    sop = "1.2.826.0.1.3680043.8.498.5831227215335296671389725963205797238"   # odd length: padded
    path = tmp_path / "x.dcm"
    path.write_bytes(file_header("1.2.840.10008.5.1.4.1.1.128", sop, "1.2.840.10008.1.2.4.90", source_ae))
    meta = read_file_meta_info(path)
    assert meta.FileMetaInformationVersion == b"\0\1"
    assert meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.128"
    assert meta.MediaStorageSOPInstanceUID == sop
    assert meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION
    assert meta.get("SourceApplicationEntityTitle", "") == source_ae
    group_length = meta.FileMetaInformationGroupLength
    assert len(path.read_bytes()) == 132 + 12 + group_length


@pytest.mark.parametrize("status, comment, sop_instance", [
    (0x0000, "", "1.2.3.4"), (0xA900, "SOPInstanceUID 1.2 differs from the request's", "1.2.345"),
    (0xC000, "odd", ""),
])
def test_response_decodes_with_pydicom(status, comment, sop_instance):
    raw = encode_response(0x8001, "1.2.840.10008.5.1.4.1.1.2", 42, status, sop_instance, comment)
    cmd = decode(BytesIO(raw), True, True)
    assert cmd.CommandGroupLength == len(raw) - 12
    assert (cmd.CommandField, cmd.MessageIDBeingRespondedTo, cmd.CommandDataSetType, cmd.Status) == (
        0x8001, 42, 0x0101, status)
    assert cmd.AffectedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert cmd.get("AffectedSOPInstanceUID", "") == sop_instance
    assert cmd.get("ErrorComment", "") == comment
    assert [int(e.tag) for e in cmd] == sorted(int(e.tag) for e in cmd)
