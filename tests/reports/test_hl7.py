"""The ORU^R01 read by python-hl7 (not hl7apy, which wrote it): same patient, order and values, in v2.3.1
and v2.5, UTF-8 and Latin-5, with Turkish letters and HL7 delimiters in the data."""
from __future__ import annotations

import dataclasses

import hl7
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from neuropetrix.config.settings import MllpOut
from neuropetrix.reports.errors import ReportError
from neuropetrix.reports.hl7 import oru_bytes
from neuropetrix.reports.measures import measures, summary
from neuropetrix.reports.source import study_info

CODECS = {"UNICODE UTF-8": "utf-8", "8859/9": "iso8859_9"}
TURKISH_FAMILY = "ŞAHİN-ÇELİK&ÖZ|GÜL~TÜRK"      # PN allows & | ~ (not ^ or \, its own separators)
TURKISH_GIVEN = "Işıl Ağça Gülümsü"
ALGORITHM = r"Eşik|SUV^4 & PERCIST~v\2"        # all five delimiters, backslash included


def _parse(data: bytes) -> hl7.Message:
    """Decode by the charset MSH-18 declares (read from the raw bytes, as a receiver must), then parse."""
    msh = data.split(b"\r", 1)[0].split(b"|")
    charset = msh[17].decode("ascii")
    return hl7.parse(data.decode(CODECS[charset]))


def _text(msg: hl7.Message, field: str) -> str:
    return msg.unescape(str(msg[field]))


@pytest.mark.parametrize("version", ["2.3.1", "2.5", "2.5.1"])
@pytest.mark.parametrize("charset", ["UNICODE UTF-8", "8859/9"])
def test_oru_parsed_by_python_hl7_gives_the_same_patient_order_and_values(result, renamed, version, charset):
    datasets = renamed(PatientName=f"{TURKISH_FAMILY}^{TURKISH_GIVEN}", AccessionNumber="A|26^1&2~3")
    result = dataclasses.replace(result, segmentation=dataclasses.replace(result.segmentation,
                                                                           algorithm_name=ALGORITHM))
    info = study_info(result, datasets)
    data = oru_bytes(result, info, MllpOut(version=version, charset=charset))
    assert data.endswith(b"\r") and b"\n" not in data
    msg = _parse(data)
    assert str(msg.segment("MSH")[9]).startswith("ORU^R01")
    assert str(msg["MSH.F12"]) == version and str(msg["MSH.F18"]) == charset
    assert str(msg["PID.F3.R1.C1"]) == "10000000146"
    assert str(msg["PID.F3.R1.C5"]) == "NNTUR"
    assert _text(msg, "PID.F5.R1.C1") == TURKISH_FAMILY
    assert _text(msg, "PID.F5.R1.C2") == TURKISH_GIVEN
    assert str(msg["PID.F7"]) == "19650314" and str(msg["PID.F8"]) == "F"
    assert _text(msg, "PV1.F8.R1.C2") == "KAYA"
    assert _text(msg, "OBR.F18") == "A|26^1&2~3"            # accession, IHE: OBR-18
    assert _text(msg, "ORC.F3") == "A|26^1&2~3"             # filler order number
    assert _text(msg, "OBR.F3") == "A|26^1&2~3"
    assert str(msg["OBR.F25"]) == "P"             # automatic results are preliminary until signed
    expected = {(m.key, str(m.lesion or 0)): m for m in measures(result)}
    seen = {}
    obx_segments = msg.segments("OBX")
    for obx in obx_segments[:-1]:
        assert str(obx[2]) == "NM"
        key = (str(obx[3][0][3]), str(obx[4]))
        m = expected[key]
        assert str(obx[3][0][0]) == m.concept.value and str(obx[3][0][2]) == m.concept.scheme_designator
        assert str(obx[6][0][0]) == m.unit.value and str(obx[6][0][2]) == "UCUM"
        seen[key] = float(str(obx[5]))
        assert seen[key] == pytest.approx(m.value, rel=1e-5)
    assert set(seen) == set(expected) and len(seen) == 6 + 3 * 5
    text = obx_segments[-1]
    assert str(text[2]) == "TX" and str(text[3][0][0]) == "121111"
    lines = [msg.unescape(str(rep)) for rep in text[5]]
    assert " ".join(lines) == summary(result)
    assert ALGORITHM in " ".join(lines)


def test_turkish_letters_survive_in_latin5_bytes(result, renamed):
    info = study_info(result, renamed(PatientName="IĞDIR^İSMAİL Şükrü Çağrı Öz"))
    data = oru_bytes(result, info, MllpOut(version="2.3.1", charset="8859/9"))
    assert "IĞDIR^İSMAİL Şükrü Çağrı Öz".encode("iso8859_9") in data
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")              # really Latin-5 bytes, not UTF-8 labelled as Latin-5


def test_a_charset_that_cannot_hold_the_name_is_refused(result, pet_study):
    info = study_info(result, pet_study.datasets)
    with pytest.raises(ReportError, match="8859/1"):
        oru_bytes(result, info, MllpOut(version="2.5", charset="8859/1"))


def test_the_same_analysis_gives_the_same_control_id(result, pet_study):
    info = study_info(result, pet_study.datasets)
    first = _parse(oru_bytes(result, info, MllpOut(version="2.5")))
    again = _parse(oru_bytes(result, info, MllpOut(version="2.5")))
    assert str(first["MSH.F10"]) == str(again["MSH.F10"]) and len(str(first["MSH.F10"])) == 20


def test_order_and_visit_identifiers_from_the_dicom_request(result, renamed):
    request = Dataset()
    request.RequestedProcedureID = "RP-77"
    request.PlacerOrderNumberImagingServiceRequest = "HBYS-ORD-5501"
    request.FillerOrderNumberImagingServiceRequest = "RIS-9001"
    request.AccessionNumber = "ACC2026001"
    datasets = renamed(RequestAttributesSequence=Sequence([request]), AdmissionID="YAT-2026-42")
    msg = _parse(oru_bytes(result, study_info(result, datasets), MllpOut(version="2.3.1")))
    assert str(msg["ORC.F2"]) == str(msg["OBR.F2"]) == "HBYS-ORD-5501"      # placer order number
    assert str(msg["ORC.F3"]) == str(msg["OBR.F3"]) == "RIS-9001"           # filler order number
    assert str(msg["OBR.F18"]) == "ACC2026001" and str(msg["OBR.F19"]) == "RP-77"
    assert str(msg["PV1.F19"]) == "YAT-2026-42"
