"""HL7 v2 ORU^R01 with hl7apy: the results as the hospital information system (HBYS) reads them.

The version is the destination's (Turkish HBYS vendors speak v2.3.1, others v2.5/v2.5.1), the character
set is declared in MSH-18 with the value that version's table 0211 defines (UTF-8 is `UNICODE` in v2.3.1,
`UNICODE UTF-8` from v2.5) and the bytes are encoded in it; a name that the declared set cannot hold is
refused rather than written wrong. Text is escaped here (\\E\\ first, then \\F\\ \\S\\ \\T\\ \\R\\) because
hl7apy's own escaping skips a backslash that happens to precede a delimiter's escape letter.
One NM OBX per measure and one TX OBX with the summary, one phrase per repetition. OBX-3 + OBX-4 identify
an observation under its OBR, so each measure has its own OBX-3 identifier: the local code of the
quantity, derivation and SUV type first (`suv_max.SUVbw^SUVbw max^99NPX`), the DICOM concept as the
alternate (`126401^SUVbw^DCM`); the TID 1500 derivation (CID 7464: Maximum, Mean, Peak) is OBX-17, the
observation method; OBX-4 is the lesion label, 0 for the whole study.
"""
from __future__ import annotations

import re
import textwrap
from datetime import datetime

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException
from pydicom.valuerep import PersonName

from neuropetrix.analysis.results import AnalysisResult
from neuropetrix.config.settings import MllpOut
from neuropetrix.reports.errors import ReportError, require
from neuropetrix.reports.measures import PERCIST_RESPONSE, measures, response_category, response_measures, summary
from neuropetrix.reports.source import StudyInfo, ordered_procedure
from neuropetrix.reports.uids import derived_uuid
from neuropetrix.reports.version import AUTOMATIC, ResultVersion

# MSH-18 values (the configured name, or the v2.3.1 spelling of UTF-8) and the codec of their bytes.
CODECS = {"UNICODE UTF-8": "utf-8", "UNICODE": "utf-8", "8859/9": "iso8859_9", "8859/1": "latin_1"}
# Table 0211 as each version defines it: v2.3.1 has UNICODE (ISO/IEC 10646, sent as UTF-8), no UTF-8 names.
_MSH18_BY_VERSION = {"2.3.1": {"UNICODE UTF-8": "UNICODE"}}
# hl7apy (strict) holds each OBX-5 repetition to 199 characters.
TX_LIMIT = 199


def escape(text: str) -> str:
    """HL7 v2 escaping of the default delimiters |^~\\& (the escape character first)."""
    for char, sequence in (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        text = text.replace(char, sequence)
    return " ".join(text.splitlines())


def join_components(*values: str | None) -> str:
    """One HL7 field from its components, each escaped (the ORU's and the order-status messages' rule)."""
    return "^".join(escape(v or "") for v in values).rstrip("^")


def _ts(value: datetime) -> str:
    return value.strftime("%Y%m%d%H%M%S%z")


def _hd(value: str | None) -> str:
    """A configured HD (namespace^universal id^type): components as given, each escaped."""
    return join_components(*(value or "").split("^"))


def msh_charset(charset: str, version: str) -> str:
    """The MSH-18 value that `version` defines for the configured character set."""
    return _MSH18_BY_VERSION.get(version, {}).get(charset, charset)


def tx_lines(text: str) -> list[str]:
    """The summary as TX repetitions: one phrase (clause or sentence) each, a long phrase wrapped at words,
    every repetition within TX_LIMIT once escaped."""
    lines: list[str] = []
    for phrase in re.split(r"(?<=[;.])\s+", text.strip()):
        width = TX_LIMIT
        while (parts := textwrap.wrap(phrase, width)) and max(len(escape(p)) for p in parts) > TX_LIMIT:
            width -= 10
        lines += parts
    return lines


def _person(pn: str | None) -> str:
    """A DICOM PN as an XCN/XPN: family^given (the alphabetic group only)."""
    name = PersonName(pn or "")
    return join_components(str(name.family_name), str(name.given_name))


def build_oru(result: AnalysisResult, info: StudyInfo, destination: MllpOut,
              now: datetime | None = None, result_version: ResultVersion = AUTOMATIC,
              prior: str | None = None) -> Message:
    """The ORU^R01 for one analysis, in the destination's version; ReportError if it cannot be valid.
    `result_version` sets OBR-25/OBX-11 (P, F, C), the control id of a new version and the signer (OBR-32);
    `prior` names the prior study of a response in the summary (PriorStudy.description), as the PDF does."""
    values = measures(result) + response_measures(result)
    zone = info.study_datetime.tzinfo
    now = (now or datetime.now(zone)).astimezone(zone)
    status = result_version
    version = destination.version
    msg = Message("ORU_R01", version=version, validation_level=VALIDATION_LEVEL.STRICT)
    try:
        msh = msg.msh
        msh.msh_3 = _hd(destination.sending_application)
        for name, value in (("msh_4", destination.sending_facility), ("msh_5", destination.receiving_application),
                            ("msh_6", destination.receiving_facility)):
            if value:
                setattr(msh, name, _hd(value))
        msh.msh_7 = _ts(now)
        msh.msh_9 = "ORU^R01^ORU_R01" if version != "2.3.1" else "ORU^R01"
        msh.msh_10 = derived_uuid(result, "hl7", "oru", *status.uid_suffix).hex[:20]
        msh.msh_11 = "P"
        msh.msh_12 = version
        msh.msh_18 = msh_charset(destination.charset, version)
        patient_result = msg.add_group("ORU_R01_PATIENT_RESULT")
        patient = patient_result.add_group("ORU_R01_PATIENT")
        pid = patient.add_segment("PID")
        pid.pid_1 = "1"
        authority = info.issuer_of_patient_id or ("TCKN" if info.is_tckn else "")
        pid.pid_3 = join_components(info.patient_id, "", "", authority,
                                info.identifier_type or ("NNTUR" if info.is_tckn else "PI"))
        for other in info.other_identifiers:         # the HBYS's other identifiers, as it sent them
            pid.add_field("PID_3").value = join_components(*other)
        pid.pid_5 = join_components(info.patient_family_name, info.patient_given_name)
        if info.patient_birth_date:
            pid.pid_7 = info.patient_birth_date
        if info.patient_sex:
            pid.pid_8 = info.patient_sex
        if info.referring_physician or info.admission_id:
            pv1 = patient.add_group("ORU_R01_VISIT").add_segment("PV1")
            pv1.pv1_1 = "1"
            pv1.pv1_2 = "U"
            if info.referring_physician:
                pv1.pv1_8 = "^" + _person(info.referring_physician)
            if info.admission_id:
                pv1.pv1_19 = join_components(info.admission_id)
        order = patient_result.add_group("ORU_R01_ORDER_OBSERVATION")
        orc = order.add_segment("ORC")
        orc.orc_1 = "RE"
        if info.placer_order_number:
            orc.orc_2 = join_components(info.placer_order_number, info.placer_authority)
        orc.orc_3 = join_components(info.filler_order_number or info.accession_number)
        orc.orc_5 = "CM"
        if info.ordering_physician:
            orc.orc_12 = "^" + _person(info.ordering_physician)
        obr = order.add_segment("OBR")
        obr.obr_1 = "1"
        if info.placer_order_number:
            obr.obr_2 = join_components(info.placer_order_number, info.placer_authority)
        obr.obr_3 = join_components(info.filler_order_number or info.accession_number)
        procedure = ordered_procedure(info)      # the HBYS's code when it ordered one
        sut = info.sut_procedure
        obr.obr_4 = join_components(procedure.value, procedure.meaning, procedure.scheme_designator,
                                *((sut.value, sut.meaning, "SUT") if sut else ()))
        obr.obr_7 = _ts(info.study_datetime)
        if info.ordering_physician:
            obr.obr_16 = "^" + _person(info.ordering_physician)
        obr.obr_18 = join_components(info.accession_number)
        if info.requested_procedure_id:
            obr.obr_19 = join_components(info.requested_procedure_id)
        obr.obr_22 = _ts(now)
        obr.obr_24 = "NMS"
        obr.obr_25 = status.hl7_status
        if status.signer is not None:
            signer = PersonName(status.signer.person_name)     # CNN: id & family & given, one component
            obr.obr_32 = "&".join(escape(v) for v in (status.signer.username, str(signer.family_name),
                                                      str(signer.given_name)))
        if sut:
            obr.obr_44 = join_components(sut.value, sut.meaning, "SUT")
        set_id = 0
        for m in values:
            set_id += 1
            obx = order.add_group("ORU_R01_OBSERVATION").add_segment("OBX")
            obx.obx_1 = str(set_id)
            obx.obx_2 = "NM"
            obx.obx_3 = join_components(m.code.value, m.code.meaning, m.code.scheme_designator,
                                    m.concept.value, m.concept.meaning, m.concept.scheme_designator)
            obx.obx_4 = str(m.lesion or 0)
            obx.obx_5 = m.reported
            obx.obx_6 = join_components(m.unit.value, m.unit.meaning, "UCUM")
            obx.obx_11 = status.hl7_status
            obx.obx_14 = _ts(info.study_datetime)
            if m.derivation is not None:
                obx.obx_17 = join_components(m.derivation.value, m.derivation.meaning, m.derivation.scheme_designator)
        category = response_category(result)
        if category is not None:        # the response to the prior study, as a coded value
            set_id += 1
            obx = order.add_group("ORU_R01_OBSERVATION").add_segment("OBX")
            obx.obx_1 = str(set_id)
            obx.obx_2 = "CE" if version == "2.3.1" else "CWE"
            obx.obx_3 = join_components(PERCIST_RESPONSE.value, PERCIST_RESPONSE.meaning,
                                    PERCIST_RESPONSE.scheme_designator)
            obx.obx_4 = "0"
            obx.obx_5 = join_components(category.value, category.meaning, category.scheme_designator)
            obx.obx_11 = status.hl7_status
            obx.obx_14 = _ts(info.study_datetime)
        obx = order.add_group("ORU_R01_OBSERVATION").add_segment("OBX")
        obx.obx_1 = str(set_id + 1)
        obx.obx_2 = "TX"
        obx.obx_3 = join_components("121111", "Summary", "DCM")
        obx.obx_4 = "0"
        text = summary(result, prior) + (f" Impression: {status.impression}" if status.impression else "")
        for line in tx_lines(text):
            obx.add_field("OBX_5").value = escape(line)
        obx.obx_11 = status.hl7_status
        msg.validate()
    except HL7apyException as exc:
        raise ReportError(f"the HL7 v{version} ORU^R01 would not be valid: {exc}") from exc
    return msg


def encode_oru(message: Message, charset: str) -> bytes:
    """The message as bytes in `charset` (the configured name or the MSH-18 value), segments ended by CR."""
    text = message.to_er7().replace("\n", "\r")
    require(charset in CODECS, f"unknown HL7 character set {charset!r} (known: {', '.join(CODECS)})")
    try:
        return text.encode(CODECS[charset]) + b"\r"
    except UnicodeEncodeError as exc:
        raise ReportError(f"{text[exc.start:exc.end]!r} cannot be written in HL7 character set {charset}; "
                          "configure hbys.mllp.charset as 'UNICODE UTF-8' or '8859/9' (Latin-5)") from exc


def oru_bytes(result: AnalysisResult, info: StudyInfo, destination: MllpOut,
              now: datetime | None = None, version: ResultVersion = AUTOMATIC, prior: str | None = None) -> bytes:
    """Build, validate and encode the ORU^R01 for `destination`."""
    return encode_oru(build_oru(result, info, destination, now, result_version=version, prior=prior),
                      destination.charset)
