"""What the SCP codes by hand, checked against pydicom: file meta headers, responses, requests' command sets."""
from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pynetdicom.dsutils import decode

from neuropetrix.node.scp.wire import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
    Command,
    decode_command,
    encode_response,
    file_header,
)
from tests.support.rawdicom import encode_command


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


def command(**elements) -> bytes:
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return encode_command(ds)


@pytest.mark.parametrize("raw, expected", [
    (command(AffectedSOPClassUID="1.2.840.10008.5.1.4.1.1.128", CommandField=0x0001, MessageID=7, Priority=0,
             CommandDataSetType=0x0000, AffectedSOPInstanceUID="1.2.826.0.1.3680043.8.498.1"),
     Command(0x0001, 7, True, "1.2.840.10008.5.1.4.1.1.128", "1.2.826.0.1.3680043.8.498.1")),
    (command(RequestedSOPClassUID="1.2.840.10008.3.1.2.3.3", CommandField=0x0120, MessageID=65535,
             CommandDataSetType=0x0102, RequestedSOPInstanceUID="1.2.3.4"),
     Command(0x0120, 65535, True, "1.2.840.10008.3.1.2.3.3", "1.2.3.4")),
    (command(CommandField=0x0FFF, MessageIDBeingRespondedTo=9, CommandDataSetType=0x0101),
     Command(0x0FFF, 9, False, "", "")),
    (command(AffectedSOPClassUID="1.2.840.10008.1.1", CommandField=0x0030, MessageID=1, CommandDataSetType=0x0101),
     Command(0x0030, 1, False, "1.2.840.10008.1.1", "")),
])
def test_commands_encoded_by_pydicom_decode_the_same(raw, expected):
    assert decode_command(raw) == expected


@pytest.mark.parametrize("raw", [
    command(CommandField=0x0001)[:-1],                                     # cut inside an element
    command(MessageID=1, CommandDataSetType=0x0101),                       # no Command Field
    command(CommandField=0x0001, CommandDataSetType=0x0101),               # no Message ID
    command(CommandField=0x0001, MessageID=1) + b"\x08\x00\x18\x00\x00\x00\x00\x00",   # not group 0000
])
def test_what_is_not_a_command_set_is_refused(raw):
    with pytest.raises(ValueError):
        decode_command(raw)
