"""What every DICOM object NeuroPETRIX writes says about itself: when it was made, in which zone, and in
which character set its text is.

DICOM dates and times are local to the zone that TimezoneOffsetFromUTC names; without it a reader takes
the host's zone. The objects are stamped in the study's zone (the PET's own offset, else Europe/Istanbul,
UTC+3 all year), the zone HL7 and FHIR carry, so SEG, SR, the PDF, the ORU and the FHIR report state one
instant alike. The character set is the PET's when it holds every text of the object (a PACS that took
the PET takes its results in the same set), else UTF-8 (ISO_IR 192): SEG, SR and the PDF follow one rule.
"""
from __future__ import annotations

from datetime import datetime, tzinfo

from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset

UTF8 = "ISO_IR 192"
_TEXT_VRS = {"SH", "LO", "ST", "LT", "UT", "UC", "PN"}


def utc_offset(when: datetime) -> str:
    """TimezoneOffsetFromUTC of a zone-aware time: "+0300"."""
    return when.strftime("%z")


def stamp_created(ds: Dataset, zone: tzinfo, now: datetime | None = None) -> None:
    """Instance creation and content date/time in `zone`, with TimezoneOffsetFromUTC naming it."""
    local = (now or datetime.now(zone)).astimezone(zone)
    ds.InstanceCreationDate = local.strftime("%Y%m%d")
    ds.InstanceCreationTime = local.strftime("%H%M%S")
    if "ContentDate" in ds or "ContentTime" in ds:
        ds.ContentDate = local.strftime("%Y%m%d")
        ds.ContentTime = local.strftime("%H%M%S")
    ds.TimezoneOffsetFromUTC = utc_offset(local)


def _texts(ds: Dataset) -> list[str]:
    """Every text value of `ds` and its sequences, each item looked at once: the SR's image library
    shares one item object among hundreds of entries (reports/imagelibrary.py)."""
    out: list[str] = []
    seen: set[int] = set()
    stack = [ds]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        for elem in item:
            if elem.VR == "SQ":
                stack.extend(elem.value)
            elif elem.VR in _TEXT_VRS and elem.value is not None:
                values = elem.value if elem.VM > 1 else [elem.value]
                out += [str(v) for v in values]
    return out


def holds(charset: str | None, texts: list[str]) -> bool:
    """Whether a single-byte or UTF-8 DICOM character set (None: the default repertoire, ASCII) can
    encode every text."""
    codec = convert_encodings(charset)[0] if charset else "ascii"
    try:
        for text in texts:
            text.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def settle_charset(ds: Dataset, preferred: str | list[str] | None) -> None:
    """Declare the PET's character set when it holds every text of `ds`, else UTF-8. A multi-valued
    (ISO 2022 code extension) set is kept as the PET declares it: pydicom switches sets as it encodes."""
    if isinstance(preferred, list) and len(preferred) > 1:
        ds.SpecificCharacterSet = preferred
        return
    single = (preferred[0] if isinstance(preferred, list) else preferred) or None
    if holds(single, _texts(ds)):
        if single:
            ds.SpecificCharacterSet = single
        elif "SpecificCharacterSet" in ds:
            del ds.SpecificCharacterSet        # the default repertoire holds it all
    else:
        ds.SpecificCharacterSet = UTF8
