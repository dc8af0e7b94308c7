"""Character-set normalisation: every text value re-encoded as UTF-8 (ISO_IR 192).

Turkish sites send Latin-5 (ISO_IR 148), Latin-1 or UTF-8; a receiver that reads one declared charset
shows the patient's name correctly only if the declaration and the bytes agree, so we decode with what
the dataset declares and declare UTF-8 for what we write.
"""
from __future__ import annotations

from pydicom.dataset import Dataset

UTF8 = "ISO_IR 192"


def to_utf8(ds: Dataset) -> None:
    ds.decode()                                   # every text value to str, using the declared charset
    ds.SpecificCharacterSet = UTF8
    for elem in ds.iterall():
        if elem.VR == "SQ":
            for item in elem.value:
                if "SpecificCharacterSet" in item:
                    item.SpecificCharacterSet = UTF8
