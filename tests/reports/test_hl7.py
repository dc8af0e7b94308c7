"""The ORU^R01 read by python-hl7 (not hl7apy, which wrote it): same patient, order and values, in v2.3.1
and v2.5, UTF-8 and Latin-5, with Turkish letters and HL7 delimiters in the data; each observation
identified by OBX-3 + OBX-4 alone, as an HBYS files it."""
from __future__ import annotations

import dataclasses
from collections import Counter

import hl7
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from neuropetrix.config.settings import MllpOut
from neuropetrix.reports.errors import ReportError
from neuropetrix.reports.hl7 import oru_bytes
from neuropetrix.reports.measures import measures, summary
from neuropetrix.reports.source import study_info
from tests.reports.consumers import consumer

# MSH-18 → codec, as a receiver maps it (UNICODE: v2.3.1's name for ISO/IEC 10646, sent as UTF-8)
CODECS = {"UNICODE UTF-8": "utf-8", "UNICODE": "utf-8", "8859/9": "iso8859_9"}
MSH18 = {("2.3.1", "UNICODE UTF-8"): "UNICODE", ("2.5", "UNICODE UTF-8"): "UNICODE UTF-8",
         ("2.5.1", "UNICODE UTF-8"): "UNICODE UTF-8", ("2.3.1", "8859/9"): "8859/9", ("2.5", "8859/9"): "8859/9",
         ("2.5.1", "8859/9"): "8859/9"}
HOSTILE = "A|26^1&2~3\\4"                        # every HL7 delimiter, the escape character too
PATIENT_ID = "2024/17 A+B&C"
REFERRING = "ÖZTÜRK^Şükrü İlhan"
TURKISH_FAMILY = "ŞAHİN-ÇELİK&ÖZ|GÜL~TÜRK"      # PN allows & | ~ (not ^ or \, its own separators)
TURKISH_GIVEN = "Işıl Ağça Gülümsü"
ALGORITHM = r"Eşik|SUV^4 & PERCIST~v\2"        # all five delimiters, backslash included


def _parse(data: bytes) -> hl7.Message:
    """Decode by the charset MSH-18 declares (read from the raw bytes, as a receiver must), then parse."""
    msh = data.split(b"\r", 1)[0].split(b"|")
    charset = msh[17].decode("ascii")
    return hl7.parse(data.decode(CODECS[charset]))


def _text(msg: hl7.Message, field: str) -> str:
    """A field read by python-hl7's accessor, which unescapes it (unescaping twice would eat a backslash)."""
    return str(msg[field])


def _hostile_order(renamed, **more) -> list[Dataset]:
    request = Dataset()
    request.RequestedProcedureID = "RP-77"
    request.PlacerOrderNumberImagingServiceRequest = "P" + HOSTILE
    request.FillerOrderNumberImagingServiceRequest = "F" + HOSTILE
    request.AccessionNumber = HOSTILE
    return renamed(RequestAttributesSequence=Sequence([request]), AdmissionID="V" + HOSTILE,
                   AccessionNumber=HOSTILE, **more)


def observation_keys(msg: hl7.Message) -> list[tuple[str, str, str]]:
    """(OBX-3 identifier, OBX-3 coding system, OBX-4) of every OBX: what identifies it under its OBR."""
    return [(str(obx[3][0][0]), str(obx[3][0][2]), str(obx[4])) for obx in msg.segments("OBX")]


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
    assert str(msg["MSH.F12"]) == version and str(msg["MSH.F18"]) == MSH18[version, charset]
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
    expected = {(m.code.value, str(m.lesion or 0)): m for m in measures(result)}
    seen = {}
    obx_segments = msg.segments("OBX")
    for obx in obx_segments[:-1]:
        assert str(obx[2]) == "NM"
        key = (str(obx[3][0][0]), str(obx[4]))
        m = expected[key]
        assert str(obx[3][0][2]) == "99NPX"
        assert str(obx[3][0][3]) == m.concept.value and str(obx[3][0][5]) == m.concept.scheme_designator
        assert str(obx[6][0][0]) == m.unit.value and str(obx[6][0][2]) == "UCUM"
        seen[key] = str(obx[5])
        assert seen[key] == m.reported and float(seen[key]) == pytest.approx(m.value, rel=1e-5)
    assert set(seen) == set(expected) and len(seen) == 6 + 3 * 5
    text = obx_segments[-1]
    assert str(text[2]) == "TX" and str(text[3][0][0]) == "121111"
    lines = [msg.unescape(str(rep)) for rep in text[5]]
    assert " ".join(lines) == summary(result)
    assert ALGORITHM in " ".join(lines)


@pytest.mark.parametrize("version", ["2.3.1", "2.5"])
def test_each_observation_has_its_own_obx3_and_obx4(result, pet_study, version):
    """An HBYS files an observation under its OBR by OBX-3 + OBX-4: no two may share them, and SUVmax,
    SUVmean and SUVpeak of one lesion carry their CID 7464 derivation in OBX-17."""
    msg = _parse(oru_bytes(result, study_info(result, pet_study.datasets), MllpOut(version=version)))
    keys = observation_keys(msg)
    assert [k for k, n in Counter(keys).items() if n > 1] == [] and len(keys) == 6 + 3 * 5 + 1
    by_key = {(str(o[3][0][0]), str(o[4])): o for o in msg.segments("OBX")}
    lesion = result.lesions[1]
    for code, derivation in (("suv_max.SUVbw", "56851009^Maximum^SCT"), ("suv_mean.SUVbw", "373098007^Mean^SCT"),
                             ("suv_peak.SUVbw", "126031^Peak Value Within ROI^DCM")):
        obx = by_key[code, str(lesion.label)]
        assert str(obx[17]) == derivation
        assert str(obx[3][0][3]) == "126401"                      # the DICOM concept, SUVbw, as alternate
        assert float(str(obx[5])) == pytest.approx(getattr(lesion, code.split(".")[0]), rel=1e-5)
    assert float(str(by_key["suv_max.SUVbw", "0"][5])) == pytest.approx(result.suv_max, rel=1e-5)
    assert float(str(by_key["liver_suv_mean.SUVbw", "0"][5])) == pytest.approx(result.liver.suv_mean)
    assert float(str(by_key["liver_suv_sd.SUVbw", "0"][5])) == pytest.approx(result.liver.suv_sd)


def test_the_observation_ids_differ_by_suv_type(result, pet_study):
    info = study_info(result, pet_study.datasets)
    lbm = dataclasses.replace(result, suv=dataclasses.replace(result.suv, suv_type="lbm_james"))
    bw_keys = set(observation_keys(_parse(oru_bytes(result, info, MllpOut()))))
    lbm_keys = observation_keys(_parse(oru_bytes(lbm, info, MllpOut())))
    assert ("suv_max.SUVlbm(James128)", "99NPX", "1") in lbm_keys
    assert bw_keys & set(lbm_keys) == {("lesion_count", "99NPX", "0"), ("tmtv_ml", "99NPX", "0"),
                                       ("volume_ml", "99NPX", "1"), ("volume_ml", "99NPX", "2"),
                                       ("volume_ml", "99NPX", "3"), ("121111", "DCM", "0")}


def test_summary_repetitions_are_whole_phrases(result, pet_study):
    long_name = "Segmentation " + " ".join(f"step{k}" for k in range(60))       # one phrase over 199 characters
    result = dataclasses.replace(result, segmentation=dataclasses.replace(result.segmentation,
                                                                           algorithm_name=long_name))
    msg = _parse(oru_bytes(result, study_info(result, pet_study.datasets), MllpOut()))
    raw = [str(rep) for rep in msg.segments("OBX")[-1][5]]
    lines = [msg.unescape(rep) for rep in raw]
    assert " ".join(lines) == summary(result) and all(len(rep) <= 199 for rep in raw)
    words = set(summary(result).split())
    assert all(word in words for line in lines for word in line.split())          # no word cut in two
    short = [line for line in lines if long_name.split()[0] not in line and "step" not in line]
    assert short and all(line.endswith((";", ".")) for line in short)            # a phrase per repetition
    assert "1 lesion(s) segmented;".replace("1", "3") in lines


def test_hostile_identifiers_and_a_turkish_referrer_reach_the_second_parser(result, renamed):
    datasets = _hostile_order(renamed, PatientID=PATIENT_ID, ReferringPhysicianName=REFERRING)
    for version, charset in (("2.3.1", "8859/9"), ("2.5", "UNICODE UTF-8"), ("2.3.1", "UNICODE UTF-8")):
        msg = _parse(oru_bytes(result, study_info(result, datasets), MllpOut(version=version, charset=charset)))
        assert _text(msg, "PID.F3.R1.C1") == PATIENT_ID and str(msg["PID.F3.R1.C5"]) == "PI"
        assert _text(msg, "ORC.F2") == _text(msg, "OBR.F2") == "P" + HOSTILE
        assert _text(msg, "ORC.F3") == _text(msg, "OBR.F3") == "F" + HOSTILE
        assert _text(msg, "OBR.F18") == HOSTILE and _text(msg, "PV1.F19") == "V" + HOSTILE
        assert _text(msg, "PV1.F8.R1.C2") == "ÖZTÜRK" and _text(msg, "PV1.F8.R1.C3") == "Şükrü İlhan"
        assert len(msg.segments("OBX")) == 6 + 3 * 5 + 1


def test_msh_sender_and_receiver_are_configured(result, pet_study):
    destination = MllpOut(sending_application="NPX^1.2.792.999^ISO", sending_facility="NUKLEER TIP",
                          receiving_application="HBYS", receiving_facility="HASTANE^1.2.792.1^ISO")
    data = oru_bytes(result, study_info(result, pet_study.datasets), destination)
    msh = _parse(data).segment("MSH")
    assert [str(msh[k]) for k in (3, 4, 5, 6)] == ["NPX^1.2.792.999^ISO", "NUKLEER TIP", "HBYS",
                                                    "HASTANE^1.2.792.1^ISO"]
    assert data.startswith(b"MSH|^~\\&|NPX^1.2.792.999^ISO|NUKLEER TIP|HBYS|HASTANE^1.2.792.1^ISO|")
    assert str(_parse(oru_bytes(result, study_info(result, pet_study.datasets), MllpOut()))["MSH.F3"]) \
        == "NEUROPETRIX"


def test_obr4_is_the_ordered_procedure_when_the_images_carry_it(result, renamed, pet_study):
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "803170", "SUT", "PET/BT tüm vücut"
    msg = _parse(oru_bytes(result, study_info(result, renamed(ProcedureCodeSequence=Sequence([code]))),
                           MllpOut(charset="8859/9")))
    assert str(msg.segment("OBR")[4]) == "803170^PET/BT tüm vücut^SUT"
    plain = _parse(oru_bytes(result, study_info(result, pet_study.datasets), MllpOut()))
    assert str(plain["OBR.F4.R1.C3"]) == "SCT"                 # no ordered code: the procedure reported


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


@pytest.mark.parametrize("version, charset", [("2.3.1", "8859/9"), ("2.5", "UNICODE UTF-8")])
def test_a_second_independent_parser_files_every_observation_once(result, renamed, tmp_path, version, charset):
    """hl7-standard (npm) reads the same OBX-3 + OBX-4 keys, values and derivations."""
    datasets = _hostile_order(renamed, PatientID=PATIENT_ID, ReferringPhysicianName=REFERRING)
    path = tmp_path / "oru.hl7"
    path.write_bytes(oru_bytes(result, study_info(result, datasets), MllpOut(version=version, charset=charset)))
    read = consumer("hl7", path)
    assert read["charset"] == MSH18[version, charset]
    keys = [(o["id"], o["system"], o["sub_id"]) for o in read["obx"]]
    assert len(keys) == len(set(keys)) == 6 + 3 * 5 + 1
    expected = {(m.code.value, str(m.lesion or 0)): m for m in measures(result)}
    numeric = [o for o in read["obx"] if o["type"] == "NM"]
    assert {(o["id"], o["sub_id"]) for o in numeric} == set(expected)
    for o in numeric:
        m = expected[o["id"], o["sub_id"]]
        assert o["value"] == m.reported
        assert o["method"] == ("" if m.derivation is None else m.derivation.value)
