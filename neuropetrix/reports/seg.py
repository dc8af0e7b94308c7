"""DICOM Segmentation of the lesions, built with highdicom, so a PACS viewer shows what was measured.

One segment per lesion, in label order, each with a tracking identifier (stable across re-runs) and the
algorithm that found it. Frames reference the PET instances they were drawn on; the SEG shares the PET's
frame of reference, patient and study. Its UIDs derive from the analysis (`uids`), so sending a re-run
replaces the earlier SEG instead of adding a second one. Each segment is shown in the colour the MIP
outlines it in (RecommendedDisplayCIELabValue).

Encoding: a 1-bit BINARY SEG packs frames back to back, so a frame whose pixel count is not a multiple
of 16 (a 155×155 PET) starts or ends inside a byte, or leaves the Pixel Data padded: correct DICOM, but
OHIF's adapter rejects it ("Unexpected 1-bit SEG PixelData length") and a DICOMweb server cannot cut
its frames. Such matrices get an 8-bit FRACTIONAL SEG whose pixels are 0 or MaximumFractionalValue
(a "pseudo-binary" SEG that OHIF, highdicom and dcmqi read as masks); the Segmentation Storage SOP
class stays the same, so every PACS that stores our 1-bit SEGs stores these too.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import PurePath

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from neuropetrix.analysis.results import AnalysisResult
from neuropetrix.reports.errors import require
from neuropetrix.reports.images import COLORS
from neuropetrix.reports.source import site_zone
from neuropetrix.reports.stamp import settle_charset, stamp_created
from neuropetrix.reports.uids import derived_uid
from neuropetrix.reports.version import AUTOMATIC, ResultVersion

SERIES_NUMBER = 901
MANUFACTURER = "NeuroPETRIX"


def software_version(result: AnalysisResult) -> str:
    """What the objects record as the software that made them."""
    return result.software_version or result.segmentation.algorithm_version or "unknown"


def algorithm_identification(result: AnalysisResult) -> hd.AlgorithmIdentificationSequence:
    """The algorithm as SEG records it: name, version, family, and the parameters that reproduce it."""
    seg = result.segmentation
    family = codes.cid7162.ArtificialIntelligence if seg.method == "model" else codes.cid7162.HistogramAnalysis
    parameters = {"method": seg.method, "suv_type": result.suv.suv_type, "min_volume_ml": f"{seg.min_volume_ml:g}"}
    if seg.threshold is not None:
        parameters["threshold"] = f"{seg.threshold:g}"
    if seg.seed_threshold is not None:
        parameters["seed_threshold"] = f"{seg.seed_threshold:g}"
    if seg.model_file:
        parameters["model_file"] = PurePath(seg.model_file).name
    return hd.AlgorithmIdentificationSequence(name=seg.algorithm_name, family=family,
                                              version=seg.algorithm_version, parameters=parameters)


def segmentation_type(rows: int, columns: int) -> hd.seg.SegmentationTypeValues:
    """BINARY when every 1-bit frame fills whole 16-bit words, else pseudo-binary FRACTIONAL (see above)."""
    if (rows * columns) % 16 == 0:
        return hd.seg.SegmentationTypeValues.BINARY
    return hd.seg.SegmentationTypeValues.FRACTIONAL


def segment_color(index: int) -> hd.color.CIELabColor:
    """The colour of the `index`-th lesion (label order), as the MIP draws its outline."""
    rgb = COLORS[index % len(COLORS)].lstrip("#")
    return hd.color.CIELabColor.from_rgb(*(int(rgb[k:k + 2], 16) for k in (0, 2, 4)))


def lesion_tracking_uid(result: AnalysisResult, label: int) -> str:
    """The lesion's Tracking UID, shared by its SEG segment and its SR measurement group."""
    return derived_uid(result, "lesion", str(label))


def check_geometry(result: AnalysisResult, pet_datasets: list[Dataset]) -> None:
    """Refuse unless the label map, the lesions and the PET datasets describe the same volume."""
    require(pet_datasets, "no PET datasets were given")
    uids = [str(ds.SOPInstanceUID) for ds in pet_datasets]
    require(uids == list(result.pet_sop_instance_uids),
            "the PET datasets are not the analysed instances in pet_sop_instance_uids order")
    require(all(ds.get("SeriesInstanceUID") == result.pet_series_instance_uid for ds in pet_datasets),
            f"the PET datasets are not all in series {result.pet_series_instance_uid}")
    labels = np.asarray(result.label_map)
    shape = (len(pet_datasets), int(pet_datasets[0].Rows), int(pet_datasets[0].Columns))
    require(labels.ndim == 3 and labels.shape == shape,
            f"label_map is shaped {labels.shape}, the PET series is {shape} (slices, rows, columns)")
    require(np.issubdtype(labels.dtype, np.integer), f"label_map must hold integers, not {labels.dtype}")
    present = {int(v) for v in np.unique(labels[labels != 0])}       # sorts the lesion voxels only
    declared = {les.label for les in result.lesions}
    require(present == declared,
            f"label_map holds labels {sorted(present)} but the lesions are {sorted(declared)}")


def _frames(result: AnalysisResult, pet_datasets: list[Dataset],
            segments: np.ndarray) -> tuple[list[Dataset], np.ndarray]:
    """The source images and the segment-number frames in the order highdicom pairs them: one frame per
    single-frame PET instance, or, for an Enhanced PET instance, one per source frame in frame order."""
    if result.pet_frame_numbers is None:
        return pet_datasets, segments
    require(len({str(ds.SOPInstanceUID) for ds in pet_datasets}) == 1,
            "a PET series of several multi-frame instances cannot be referenced by one SEG")
    source = pet_datasets[0]
    frames = int(source.NumberOfFrames)
    require(sorted(result.pet_frame_numbers) == list(range(1, frames + 1)),
            f"pet_frame_numbers do not cover frames 1..{frames} of the Enhanced PET instance once each")
    by_frame = np.zeros((frames, *segments.shape[1:]), dtype=segments.dtype)
    by_frame[np.asarray(result.pet_frame_numbers) - 1] = segments
    return [source], by_frame


def build_seg(result: AnalysisResult, pet_datasets: list[Dataset],
              now: datetime | None = None, version: ResultVersion = AUTOMATIC) -> hd.seg.Segmentation:
    """The SEG for this analysis (the lesions a signed `version` kept), created `now` (default: the
    clock); ReportError when there is nothing valid to segment."""
    require(result.lesions, "no lesions: a DICOM SEG needs at least one segment")
    require(result.frame_of_reference_uid, "no frame of reference UID: the SEG cannot be placed on the PET")
    check_geometry(result, pet_datasets)
    require(all(ds.get("FrameOfReferenceUID") == result.frame_of_reference_uid for ds in pet_datasets),
            "the PET datasets are not on the analysed frame of reference")
    lesions = sorted(result.lesions, key=lambda les: les.label)
    # Segment numbers must run 1..N; map each lesion label to its position.
    lut = np.zeros(int(np.max(result.label_map)) + 1, dtype=np.uint16)
    for number, lesion in enumerate(lesions, start=1):
        lut[lesion.label] = number
    source_images, pixels = _frames(result, pet_datasets, lut[np.asarray(result.label_map)])
    algorithm = algorithm_identification(result)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"Lesion {lesion.label}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=lesion_tracking_uid(result, lesion.label),
            tracking_id=f"Lesion {lesion.label}",
            display_color=segment_color(number - 1),
        )
        for number, lesion in enumerate(lesions, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=source_images,
        pixel_array=pixels,
        segmentation_type=segmentation_type(int(pet_datasets[0].Rows), int(pet_datasets[0].Columns)),
        segment_descriptions=descriptions,
        series_instance_uid=derived_uid(result, "seg", "series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=derived_uid(result, "seg", "instance", *version.uid_suffix),
        instance_number=version.version,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MANUFACTURER,
        software_versions=software_version(result),
        device_serial_number=MANUFACTURER,
        content_label="LESIONS",
        content_description=f"PET lesions ({result.segmentation.method})",
        content_creator_name=f"{MANUFACTURER}^",          # a device: family-name component only
        series_description="NeuroPETRIX lesion segmentation",
    )
    stamp_created(seg, site_zone(pet_datasets[0]), now)
    settle_charset(seg, pet_datasets[0].get("SpecificCharacterSet"))
    return seg
