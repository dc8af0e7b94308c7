"""The SR's Image Library (TID 1600) for a whole PET series, in the content highdicom's `ImageLibrary`
makes, without its cost.

highdicom builds every entry from scratch (coded concepts, validated content items, an IOD lookup per
image) and `Comprehensive3DSR` then deep-copies the whole content tree and parses it back: for a
400-slice PET that was over 90 % of writing the reports. The slices of one series differ only in
their SOP Instance UID and Image Position (Patient); everything else an entry describes (modality,
frame of reference, matrix, pixel spacing, thickness, orientation, spacing between slices) is the
same. So highdicom builds one entry per distinct geometry, and every other slice's entry is its
geometry's entry with those values set the way highdicom sets them, sharing the unchanged items. `add_image_library`
puts the library into the built SR where `MeasurementReport` places it (after Procedure Reported,
before Imaging Measurements), so the deep copy never sees it. tests/reports checks that the SR's bytes
equal those of highdicom's own library.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence

import highdicom as hd
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.tag import Tag
from pydicom.valuerep import DS

_POSITION_AXIS = {codes.DCM.ImagePositionPatientX.value: 0, codes.DCM.ImagePositionPatientY.value: 1,
                  codes.DCM.ImagePositionPatientZ.value: 2}
_CROSS_SECTIONAL = ("CT", "MR", "PT")     # the modalities highdicom describes by TID 1604
_GEOMETRY = ("SOPClassUID", "Modality", "FrameOfReferenceUID", "Rows", "Columns", "PixelSpacing",
             "SliceThickness", "ImageOrientationPatient", "SpacingBetweenSlices")


def _geometry(ds: Dataset) -> Hashable:
    """Everything highdicom's entry reads from a cross-sectional image but its UID and position."""
    key = []
    for keyword in _GEOMETRY:
        value = ds.get(keyword)
        key.append((keyword in ds, tuple(str(v) for v in value) if isinstance(value, Sequence)
                    and not isinstance(value, str) else str(value)))
    return tuple(key)


def _element(keyword: str) -> tuple[int, str]:
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return Tag(tag), dictionary_VR(tag)


_NUMERIC, _FLOAT, _MEASURED, _UID, _REFERENCED, _CONTENT = (_element(keyword) for keyword in (
    "NumericValue", "FloatingPointValue", "MeasuredValueSequence", "ReferencedSOPInstanceUID",
    "ReferencedSOPSequence", "ContentSequence"))


def _with(item: Dataset, values: dict[tuple[int, str], object]) -> Dataset:
    """A new dataset holding `item`'s elements (the same element objects: nothing changes them) but
    those in `values` ({(tag, VR): value}), which get new elements (setting an existing one would
    change it in place). Built from a dict of elements, as pydicom's reader builds a dataset: setting
    them one by one was most of the library's time."""
    replaced = {tag for tag, _ in values}
    elements = {tag: item.get_item(tag) for tag in item.keys() if tag not in replaced}
    for (tag, vr), value in values.items():
        elements[tag] = DataElement(tag, vr, value)
    return Dataset(elements)


class _Template:
    """One geometry's entry as highdicom made it from the image `source`, with what each other
    slice's entry looks up in it: the source's position values and which descriptor gives which axis."""

    def __init__(self, entry: Dataset, source: Dataset) -> None:
        self.entry = entry
        self.source = source
        self.position = [str(v) for v in source.ImagePositionPatient]     # as NumContentItem sets them
        self.descriptors = [(item, _POSITION_AXIS.get(item.ConceptNameCodeSequence[0].CodeValue))
                            for item in entry.ContentSequence]
        self.reference = entry.ReferencedSOPSequence[0]

    def entry_for(self, ds: Dataset) -> Dataset:
        """The entry of the image `ds` of the same geometry: new datasets where the UID and the
        position go, the template's unchanged descriptor items shared (pydicom writes a shared item as
        it writes any other); a position value equal to the source's (the x and y of an axial stack)
        keeps the template's item."""
        position = ds.ImagePositionPatient
        descriptors = []
        for item, axis in self.descriptors:
            if axis is not None and str(position[axis]) != self.position[axis]:
                measured = _with(item.MeasuredValueSequence[0], {
                    _NUMERIC: DS(position[axis], auto_format=True), _FLOAT: position[axis]})
                item = _with(item, {_MEASURED: [measured]})
            descriptors.append(item)
        reference = _with(self.reference, {_UID: ds.SOPInstanceUID})
        return _with(self.entry, {_REFERENCED: [reference], _CONTENT: descriptors})


def image_library(datasets: Sequence[Dataset]) -> hd.sr.ContainerContentItem:
    """The Image Library container of `datasets`, item for item what `hd.sr.ImageLibrary(datasets)`
    holds (images that are not cross-sectional are left to highdicom entirely)."""
    if not datasets or any(ds.get("Modality") not in _CROSS_SECTIONAL for ds in datasets):
        return hd.sr.ImageLibrary(datasets)[0]
    keys = [_geometry(ds) for ds in datasets]
    first: dict[Hashable, int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    library = hd.sr.ImageLibrary([datasets[i] for i in first.values()])[0]
    made = {str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID): item
            for group in library.ContentSequence for item in group.ContentSequence
            if item.ValueType == "IMAGE"}
    templates = {key: _Template(made[str(datasets[i].SOPInstanceUID)], datasets[i]) for key, i in first.items()}
    for group in library.ContentSequence:
        head = [item for item in group.ContentSequence if item.ValueType != "IMAGE"]
        mine = {id(item) for item in group.ContentSequence}
        entries = []
        for ds, key in zip(datasets, keys, strict=True):
            template = templates[key]
            if id(template.entry) in mine:
                entries.append(template.entry if ds is template.source else template.entry_for(ds))
        group[_CONTENT[0]] = DataElement(*_CONTENT, head + entries)
    return library


def add_image_library(sr: hd.sr.Comprehensive3DSR, datasets: Sequence[Dataset]) -> None:
    """Put the Image Library of `datasets` into the built `sr` where TID 1500 has it: after the
    Procedure Reported items, before the Imaging Measurements container."""
    content = sr.ContentSequence
    at = next(i for i, item in enumerate(content)
              if item.ConceptNameCodeSequence[0].CodeValue == codes.DCM.ImagingMeasurements.value)
    content.insert(at, image_library(datasets))
