"""A Turkish HBYS's messages, as such systems send them: HL7 v2.3.1 ORM^O01 and ADT in Latin-5
(`8859/9`) or UTF-8 (`UNICODE UTF-8`, and the non-standard `UTF-8`), v2.5.1 OMG^O19, LOINC and SUT
codes in OBR-4/OBR-44, the T.C. Kimlik No in PID-3 with NNTUR, a Z-segment carrying the Study
Instance UID. Each function returns the bytes on the wire (without MLLP framing)."""
from __future__ import annotations

CODECS = {"8859/9": "iso8859_9", "UNICODE UTF-8": "utf-8", "UTF-8": "utf-8", "": "iso8859_9"}
TCKN = "10000000146"            # valid check digits
TCKN2 = "10000000078"           # valid as well
FOREIGN = "99123456"            # a passport number: not a TCKN
LOINC = ("24472-5", "PET/BT Tüm vücut FDG", "LN")
SUT = ("804210", "PET-BT tüm vücut", "SUT")


def msh(kind: str, control: str, charset: str, version: str = "2.3.1", app: str = "ENLIL",
        when: str = "20261201083000") -> str:
    return (f"MSH|^~\\&|{app}|ANKARA SEHIR|NEUROPETRIX|NUKLEER TIP|{when}||{kind}|{control}|P|{version}"
            f"|||AL|NE|TUR|{charset}")


def pid(patient_id: str = TCKN, name: str = "YILDIZ^ŞÜKRÜ", birth: str = "19700101", sex: str = "M",
        kind: str = "NNTUR", authority: str = "TCKN") -> str:
    return f"PID|1||{patient_id}^^^{authority}^{kind}~H778899^^^ENLIL^PI||{name}||{birth}|{sex}|||Çankaya^^ANKARA"


def pv1() -> str:
    fields = ["PV1", "1", "O", "NUK^^^NUKLEER TIP"] + [""] * 16
    fields[8] = "12345^DEMİR^GÜLŞEN"        # referring doctor
    fields[19] = "AD998877"                 # visit number
    return "|".join(fields)


def orc(control: str, placer: str, filler: str = "", status: str = "SC", start: str = "20261201100000") -> str:
    return f"ORC|{control}|{placer}^ENLIL|{filler}||{status}||^^^{start}||20261201083000|||55555^ÖZTÜRK^İSMAİL"


def obr(placer: str, filler: str, accession: str, modality: str = "PT", station: str = "PETCT1",
        procedure: tuple[str, str, str] = LOINC, sut: tuple[str, str, str] = SUT) -> str:
    fields = [""] * 45
    fields[0] = "OBR"
    fields[1] = "1"
    fields[2] = f"{placer}^ENLIL"
    fields[3] = filler
    fields[4] = "^".join(procedure)
    fields[16] = "55555^ÖZTÜRK^İSMAİL"
    fields[18] = accession
    fields[19] = f"RP{accession}"
    fields[20] = f"SPS{accession}"
    fields[21] = station
    fields[24] = modality
    fields[44] = "^".join(sut)
    return "|".join(fields)


def encode(segments: list[str], charset: str) -> bytes:
    return ("\r".join(segments) + "\r").encode(CODECS[charset])


def orm(control: str, placer: str, accession: str, charset: str = "8859/9", order_control: str = "NW",
        name: str = "YILDIZ^ŞÜKRÜ", patient_id: str = TCKN, start: str = "20261201100000",
        study_uid: str | None = None, status: str = "SC", app: str = "ENLIL", birth: str = "19700101",
        sex: str = "M") -> bytes:
    filler = f"F{placer}"
    segments = [msh("ORM^O01", control, charset, app=app), pid(patient_id, name, birth, sex), pv1(),
                orc(order_control, placer, filler, status, start), obr(placer, filler, accession)]
    if study_uid:
        segments.append(f"ZDS|{study_uid}^ENLIL^Application^DICOM")
    return encode(segments, charset)


def omg(control: str, placer: str, accession: str, name: str = "ÇELİK^AYŞEGÜL", start: str = "20261202093000") -> bytes:
    filler = f"F{placer}"
    return encode([msh("OMG^O19^OMG_O19", control, "UNICODE UTF-8", version="2.5.1"), pid(TCKN2, name, "19821111", "F"),
                   pv1(), orc("NW", placer, filler, "SC", ""), f"TQ1|1||||||{start}", obr(placer, filler, accession)],
                  "UNICODE UTF-8")


def adt(event: str, control: str, name: str, charset: str = "8859/9", patient_id: str = TCKN,
        birth: str = "19700101") -> bytes:
    return encode([msh(f"ADT^{event}", control, charset), f"EVN|{event}|20261201083000", pid(patient_id, name, birth),
                   pv1()], charset)


def merge(control: str, survivor: str, prior: str, name: str) -> bytes:
    return encode([msh("ADT^A40", control, "8859/9"), "EVN|A40|20261201083000", pid(survivor, name),
                   f"MRG|{prior}^^^TCKN^NNTUR"], "8859/9")
