"""DICOM series → 3-D volumes in patient space, and CT resampled onto the PET grid.

Files arrive in any order and scanners disagree on InstanceNumber, so slices are sorted by their
position along the slice normal; spacing and orientation are checked rather than assumed, because a
missing slice silently changes every volume and centroid. Rescale slope/intercept are applied per slice
(PET slopes differ between slices). Enhanced (multi-frame) PET is expanded frame by frame.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import (
    EnhancedPETImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    LegacyConvertedEnhancedPETImageStorage,
    PositronEmissionTomographyImageStorage,
)
from scipy import ndimage

from neuropetrix.analysis.dicomtime import parse_date_time, parse_dt
from neuropetrix.analysis.errors import AnalysisError

PET_SOP_CLASSES = (PositronEmissionTomographyImageStorage, EnhancedPETImageStorage,
                   LegacyConvertedEnhancedPETImageStorage)
log = logging.getLogger("neuropetrix.analysis")
_ORIENTATION_TOL = 1e-3      # direction cosines
_SPACING_TOL = 0.02          # fraction of the slice spacing


@dataclass
class SeriesFiles:
    """The image datasets of one series as read from the folder (pixel data deferred)."""

    series_uid: str
    modality: str
    datasets: list[Dataset]

    @property
    def first(self) -> Dataset:
        return self.datasets[0]


@dataclass
class Volume:
    """A scalar volume (slices, rows, columns) with its geometry and the per-slice source.

    Voxel (k, r, c) is at `origin + k·s0·axes[0] + r·s1·axes[1] + c·s2·axes[2]` (LPS, mm).
    `slice_datasets[k]` is the dataset that slice k came from (the same object for every frame of a
    multi-frame instance, whose 1-based frame number is then `frame_numbers[k]`).
    """

    data: np.ndarray
    origin: np.ndarray
    axes: np.ndarray
    spacing: tuple[float, float, float]
    slice_datasets: list[Dataset]
    frame_numbers: list[int] | None
    acquisition_datetimes: list[datetime | None]
    frame_durations_s: list[float | None]

    @property
    def header(self) -> Dataset:
        return self.slice_datasets[0]

    @property
    def sop_instance_uids(self) -> list[str]:
        return [str(ds.SOPInstanceUID) for ds in self.slice_datasets]

    def index_to_mm(self, index: np.ndarray) -> np.ndarray:
        """(…, 3) continuous voxel indices (k, r, c) → (…, 3) patient coordinates (LPS, mm)."""
        steps = self.axes * np.asarray(self.spacing)[:, None]
        return self.origin + np.asarray(index, dtype=np.float64) @ steps

    def mm_to_index(self, points: np.ndarray) -> np.ndarray:
        """(…, 3) patient coordinates → continuous voxel indices (k, r, c)."""
        steps = self.axes * np.asarray(self.spacing)[:, None]
        return (np.asarray(points, dtype=np.float64) - self.origin) @ np.linalg.inv(steps)

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0


def read_folder(folder: Path) -> list[SeriesFiles]:
    """Every image series under `folder` (recursively), pixel data left on disk until needed.

    Files that are not DICOM (a README, JSON, JPEG; no "DICM" marker and no .dcm name) are skipped with a
    log line; a file that claims to be DICOM and cannot be read stops the analysis, naming it.
    """
    if not folder.is_dir():
        raise AnalysisError(f"{folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    series: dict[str, SeriesFiles] = {}
    skipped: list[str] = []
    for path in files:
        try:
            ds = dcmread(path, defer_size="2 KB")
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types for a damaged file
            if path.suffix.lower() != ".dcm" and not _has_dicom_marker(path):
                skipped.append(path.name)
                continue
            raise AnalysisError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from None
        if "PixelData" not in ds or "SeriesInstanceUID" not in ds:
            continue                                  # DICOMDIR, SR, presentation states, …
        uid = str(ds.SeriesInstanceUID)
        entry = series.setdefault(uid, SeriesFiles(uid, str(ds.get("Modality", "")), []))
        entry.datasets.append(ds)
    if skipped:
        log.info("%s: skipped %d file(s) that are not DICOM (%s)", folder, len(skipped),
                 ", ".join(sorted({Path(n).suffix or "no extension" for n in skipped})))
        log.debug("not DICOM: %s", ", ".join(skipped))
    return list(series.values())


def _has_dicom_marker(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(132)[128:132] == b"DICM"


def is_pet(series: SeriesFiles) -> bool:
    return series.modality == "PT" or str(series.first.SOPClassUID) in PET_SOP_CLASSES


def _attenuation_corrected(ds: Dataset) -> bool:
    return "ATTN" in _multi(ds.get("CorrectedImage")) or str(ds.get("AttenuationCorrected", "")) == "YES"


def choose_pet(series: Sequence[SeriesFiles]) -> SeriesFiles:
    """The attenuation-corrected PET series (the one SUV is defined for); refuse when ambiguous."""
    pets = [s for s in series if is_pet(s)]
    if not pets:
        raise AnalysisError("no PET series (Modality PT) in the folder")
    corrected = [s for s in pets if _attenuation_corrected(s.first)] or pets
    if len(corrected) > 1:
        uids = ", ".join(s.series_uid for s in corrected)
        raise AnalysisError(f"several attenuation-corrected PET series, cannot choose one: {uids}")
    return corrected[0]


def choose_ct(series: Sequence[SeriesFiles], frame_of_reference_uid: str | None) -> SeriesFiles | None:
    """The CT series on the PET's frame of reference with the most images, or None (PET-only study)."""
    cts = [s for s in series if s.modality == "CT"
           and frame_of_reference_uid is not None
           and str(s.first.get("FrameOfReferenceUID", "")) == frame_of_reference_uid]
    return max(cts, key=lambda s: len(s.datasets), default=None)


def _multi(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]  # type: ignore[union-attr]


def _floats(value: object, n: int, what: str, where: str) -> np.ndarray:
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise AnalysisError(f"{where}: {what} is missing or not numeric") from None
    if out.shape != (n,):
        raise AnalysisError(f"{where}: {what} must have {n} values")
    return out


@dataclass
class _Plane:
    """One 2-D image (a single-frame instance or one frame of a multi-frame one)."""

    dataset: Dataset
    frame: int | None             # 1-based frame number in a multi-frame instance
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: np.ndarray     # (row spacing, column spacing)
    slope: float
    intercept: float
    acquisition: datetime | None
    duration_s: float | None


def _where(ds: Dataset) -> str:
    name = getattr(ds, "filename", None)
    return str(name) if name else f"SOP instance {ds.get('SOPInstanceUID', '?')}"


def _classic_plane(ds: Dataset) -> _Plane:
    where = _where(ds)
    acquisition = parse_dt(ds.get("AcquisitionDateTime")) or parse_date_time(
        ds.get("AcquisitionDate"), ds.get("AcquisitionTime"))
    duration = ds.get("ActualFrameDuration")
    return _Plane(ds, None,
                  _floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient (0020,0032)", where),
                  _floats(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient (0020,0037)", where),
                  _floats(ds.get("PixelSpacing"), 2, "PixelSpacing (0028,0030)", where),
                  float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0),
                  acquisition, None if duration in (None, "") else float(duration) / 1000.0)


def _group(ds: Dataset, frame_item: Dataset, keyword: str) -> Dataset | None:
    """A functional-group macro for one frame: per-frame if present, else shared."""
    for holder in (frame_item, ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]):
        seq = holder.get(keyword)
        if seq:
            return seq[0]
    return None


def _enhanced_planes(ds: Dataset) -> list[_Plane]:
    where = _where(ds)
    frames = ds.get("PerFrameFunctionalGroupsSequence")
    if not frames:
        raise AnalysisError(f"{where}: multi-frame image without PerFrameFunctionalGroupsSequence")
    planes = []
    for number, item in enumerate(frames, start=1):
        position = _group(ds, item, "PlanePositionSequence")
        orientation = _group(ds, item, "PlaneOrientationSequence")
        measures = _group(ds, item, "PixelMeasuresSequence")
        transform = _group(ds, item, "PixelValueTransformationSequence") or Dataset()
        content = _group(ds, item, "FrameContentSequence") or Dataset()
        frame_where = f"{where} frame {number}"
        duration = content.get("FrameAcquisitionDuration")
        planes.append(_Plane(
            ds, number,
            _floats((position or Dataset()).get("ImagePositionPatient"), 3,
                    "PlanePositionSequence ImagePositionPatient", frame_where),
            _floats((orientation or Dataset()).get("ImageOrientationPatient"), 6,
                    "PlaneOrientationSequence ImageOrientationPatient", frame_where),
            _floats((measures or Dataset()).get("PixelSpacing"), 2, "PixelMeasuresSequence PixelSpacing",
                    frame_where),
            float(transform.get("RescaleSlope", 1) or 1), float(transform.get("RescaleIntercept", 0) or 0),
            parse_dt(content.get("FrameAcquisitionDateTime")),
            None if duration in (None, "") else float(duration) / 1000.0))
    return planes


def _planes(datasets: Iterable[Dataset]) -> list[_Plane]:
    planes: list[_Plane] = []
    for ds in datasets:
        if int(ds.get("NumberOfFrames", 1) or 1) > 1 or "PerFrameFunctionalGroupsSequence" in ds:
            planes.extend(_enhanced_planes(ds))
        else:
            planes.append(_classic_plane(ds))
    return planes


def _check_and_sort(planes: list[_Plane], label: str) -> tuple[list[_Plane], np.ndarray, float]:
    """Sort along the slice normal; refuse mixed orientations, uneven spacing, missing or doubled slices."""
    orientation = planes[0].orientation
    for p in planes[1:]:
        if np.max(np.abs(p.orientation - orientation)) > _ORIENTATION_TOL:
            raise AnalysisError(f"{label}: mixed image orientations ({_where(p.dataset)} differs from "
                                f"{_where(planes[0].dataset)}); cannot build one volume")
    sizes = {(int(p.dataset.Rows), int(p.dataset.Columns)) for p in planes}
    spacings = {tuple(np.round(p.pixel_spacing, 4)) for p in planes}
    if len(sizes) > 1 or len(spacings) > 1:
        raise AnalysisError(f"{label}: images differ in matrix size or PixelSpacing; cannot build one volume")
    row_cos, col_cos = orientation[:3], orientation[3:]
    normal = np.cross(row_cos, col_cos)
    planes = sorted(planes, key=lambda p: float(p.position @ normal))
    depth = np.array([p.position @ normal for p in planes])
    if len(planes) == 1:
        thickness = float(planes[0].dataset.get("SliceThickness", 1.0) or 1.0)
        return planes, normal, thickness
    steps = np.diff(depth)
    if np.any(steps < 1e-3):
        k = int(np.argmin(steps))
        raise AnalysisError(f"{label}: two images at the same position {depth[k]:.2f} mm along the slice "
                            f"normal ({_where(planes[k].dataset)}, {_where(planes[k + 1].dataset)})")
    spacing = float(np.median(steps))
    bad = np.nonzero(np.abs(steps - spacing) > _SPACING_TOL * spacing)[0]
    if bad.size:
        k = int(bad[0])
        missing = round(steps[k] / spacing) - 1
        what = f"{missing} missing slice(s)" if missing >= 1 else "uneven slice spacing"
        raise AnalysisError(f"{label}: {what}: gap of {steps[k]:.2f} mm between positions {depth[k]:.2f} and "
                            f"{depth[k + 1]:.2f} mm where the spacing is {spacing:.2f} mm")
    in_plane = np.array([p.position - (p.position @ normal) * normal for p in planes])
    if np.max(np.abs(in_plane - in_plane[0])) > 0.5:
        raise AnalysisError(f"{label}: slices are not stacked along their normal (gantry tilt or shifted "
                            "slices); cannot build one volume")
    return planes, normal, spacing


_NATIVE_LE = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
_PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF     # encapsulated (compressed) pixel data: pydicom's decoders read it


def _native(ds: Dataset) -> np.ndarray | None:
    """Uncompressed single-frame 16-bit pixels straight from the bytes (what most PET/CT is), else None.

    pydicom's general decoder costs milliseconds per instance, which is seconds on a 400-slice CT.
    """
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
    if (syntax not in _NATIVE_LE or int(ds.get("BitsAllocated", 0)) != 16 or int(ds.get("SamplesPerPixel", 1)) != 1
            or int(ds.get("NumberOfFrames", 1) or 1) != 1 or int(ds.get("BitsStored", 16)) != 16):
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    data = _pixel_bytes(ds)
    if not isinstance(data, bytes) or len(data) < rows * cols * 2:
        return None
    dtype = "<i2" if int(ds.get("PixelRepresentation", 0)) == 1 else "<u2"
    return np.frombuffer(data, dtype=dtype, count=rows * cols).reshape(rows, cols)


def _pixel_bytes(ds: Dataset) -> bytes | None:
    """The Pixel Data value. When `read_folder` left it on disk it is read straight from where the
    file holds it (pydicom's own deferred read checks the file twice and parses the element again,
    four times the time); None when the file no longer holds that many bytes there."""
    elem = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    filename = getattr(ds, "filename", None)
    if not (isinstance(elem, RawDataElement) and elem.value is None and isinstance(filename, str)
            and elem.length != _UNDEFINED_LENGTH):
        return ds.PixelData
    with open(filename, "rb") as f:
        f.seek(elem.value_tell)
        data = f.read(elem.length)
    return data if len(data) == elem.length else None


def _pixels(ds: Dataset, cache: dict[int, np.ndarray]) -> np.ndarray:
    key = id(ds)
    if key not in cache:
        try:
            native = _native(ds)
            cache[key] = native if native is not None else ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - every decoder plugin has its own errors
            raise AnalysisError(f"{_where(ds)}: cannot decode pixel data ({type(exc).__name__}: {exc})") from None
    return cache[key]


def _block_mean(frame: np.ndarray, block: int, rows: int, cols: int) -> np.ndarray:
    """The mean of each block × block tile (float32). Integer pixels are summed as integers, row
    offsets then column offsets, which is exact and gives what float32 `mean` gives for 16-bit
    values at a sixth of its time."""
    tiles = frame[:rows * block, :cols * block]
    if tiles.dtype.kind not in "iu" or tiles.dtype.itemsize > 2:
        return tiles.reshape(rows, block, cols, block).mean(axis=(1, 3), dtype=np.float32)
    by_rows = tiles[0::block].astype(np.int32)
    for i in range(1, block):
        by_rows += tiles[i::block]
    sums = by_rows[:, 0::block].copy()
    for j in range(1, block):
        sums += by_rows[:, j::block]
    out = sums.astype(np.float32)
    out /= np.float32(block * block)
    return out


def load_volume(series: SeriesFiles, with_pixels: bool = True, block: int = 1, release: bool = False) -> Volume:
    """The series as a float32 volume in its stored units (rescale applied slice by slice).

    With `with_pixels=False` only the geometry is read (data is an empty array), for a CT that is
    referenced but not needed. `block` > 1 averages each slice over block × block pixels as it is read
    (a CT needed only at PET resolution: 1/block² of the memory and of the resampling). `release`
    drops each single-frame instance's pixel bytes once read, so only the volume holds them.
    """
    label = f"{series.modality} series {series.series_uid}"
    planes, normal, slice_spacing = _check_and_sort(_planes(series.datasets), label)
    first = planes[0]
    rows, cols = int(first.dataset.Rows), int(first.dataset.Columns)
    block = max(1, min(block, rows, cols))
    out_rows, out_cols = rows // block, cols // block
    data = np.empty((len(planes), out_rows, out_cols) if with_pixels else (0, 0, 0), dtype=np.float32)
    if with_pixels:
        cache: dict[int, np.ndarray] = {}
        for k, plane in enumerate(planes):
            pixels = _pixels(plane.dataset, cache)
            frame = pixels[plane.frame - 1] if plane.frame is not None else pixels
            if frame.shape != (rows, cols):
                raise AnalysisError(f"{_where(plane.dataset)}: pixel data is not {rows}×{cols}")
            if block > 1:
                frame = _block_mean(frame, block, out_rows, out_cols)
            np.multiply(frame, plane.slope, out=data[k], casting="unsafe")
            if plane.intercept:
                data[k] += plane.intercept
            if release and plane.frame is None:
                cache.pop(id(plane.dataset), None)
                del plane.dataset.PixelData
    axes = np.stack([normal, first.orientation[3:], first.orientation[:3]])
    multi = any(p.frame is not None for p in planes)
    shift = (block - 1) / 2.0 * (first.pixel_spacing[0] * axes[1] + first.pixel_spacing[1] * axes[2])
    return Volume(data=data, origin=first.position + shift, axes=axes,
                  spacing=(slice_spacing, float(first.pixel_spacing[0]) * block, float(first.pixel_spacing[1]) * block),
                  slice_datasets=[p.dataset for p in planes],
                  frame_numbers=[p.frame or 1 for p in planes] if multi else None,
                  acquisition_datetimes=[p.acquisition for p in planes],
                  frame_durations_s=[p.duration_s for p in planes])


def resample_to(source: Volume, target: Volume, fill: float) -> np.ndarray:
    """`source` sampled (trilinear) at the centres of `target`'s voxels; `fill` outside the source."""
    target_steps = target.axes * np.asarray(target.spacing)[:, None]
    source_steps_inv = np.linalg.inv(source.axes * np.asarray(source.spacing)[:, None])
    matrix = (target_steps @ source_steps_inv).T
    offset = (target.origin - source.origin) @ source_steps_inv
    if np.allclose(matrix, np.diag(np.diag(matrix)), atol=1e-9):
        matrix = np.diag(matrix)          # axis-aligned grids: scipy's much faster separable path
        if abs(matrix[0] - 1.0) < 1e-9 and abs(offset[0] - round(offset[0])) < 1e-9:
            return _resample_slices(source.data, matrix[1:], offset, target.data.shape, fill)
    return ndimage.affine_transform(source.data, matrix, offset=offset, output_shape=target.data.shape,
                                    order=1, mode="constant", cval=fill, output=np.float32)


def _resample_slices(data: np.ndarray, inplane: np.ndarray, offset: np.ndarray, shape: tuple[int, ...],
                     fill: float) -> np.ndarray:
    """Axis-aligned grids on the same slices (a PET/CT's CT on its PET): each target slice is the
    bilinear resampling of its source slice, the values the trilinear 3-D transform gives there (its
    slice weights are 1 and 0) at two thirds of its time."""
    out = np.full(shape, fill, dtype=np.float32)
    first = int(round(offset[0]))
    for k in range(max(0, -first), min(shape[0], data.shape[0] - first)):
        ndimage.affine_transform(data[k + first], inplane, offset=offset[1:], output_shape=shape[1:], order=1,
                                 mode="constant", cval=fill, output=out[k])
    return out


def inplane_block(ct: SeriesFiles, pet: Volume) -> int:
    """How many CT pixels (per side) make about one PET pixel: the `block` to read a CT with for PET-grid use."""
    try:
        ct_mm = float(ct.first.PixelSpacing[0])
    except (AttributeError, IndexError, TypeError, ValueError):
        return 1
    return max(int(min(pet.spacing[1], pet.spacing[2]) / ct_mm + 1e-6), 1) if ct_mm > 0 else 1
