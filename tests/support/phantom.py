"""PET phantoms whose analysis has an analytically known answer, written as real DICOM series.

A warm elliptic-cylinder body (SUV 1), a liver ellipsoid in the patient's right (SUV 2) and hot spheres
of known SUV: several sizes, two touching, one cut by the top of the field of view. Each voxel holds the
mean of the true SUV over 4×4×4 points inside it (partial volume, no blur), so SUVmax of a sphere is its
SUV, its volume thresholded half-way between sphere and background is its true volume, and SUVpeak
of a sphere large enough to hold the 1 ml peak sphere is its SUV.

Vendor variants write the same SUV through the units, decay corrections and private attributes each
scanner uses; `write_phantom` takes the variant's name.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from tests.support.synthetic import StudySpec, write_ct_series, write_pet_series

ENHANCED_PET_STORAGE = "1.2.840.10008.5.1.4.1.1.130"
VARIANTS = ("siemens_bqml", "ge_private_time", "philips_cnts", "philips_cnts_activity", "admin", "none",
            "time_only_midnight", "mbq_dose", "gml", "cm2ml", "enhanced")
_SUB = 4                      # sub-samples per voxel and axis


@dataclass(frozen=True)
class Sphere:
    center_mm: tuple[float, float, float]    # LPS
    diameter_mm: float
    suv: float

    @property
    def volume_ml(self) -> float:
        return math.pi / 6.0 * self.diameter_mm ** 3 / 1000.0


@dataclass
class Phantom:
    """The true SUVbw field and the scanner record around it."""

    spec: StudySpec
    spheres: list[Sphere]
    background_suv: float = 1.0
    body_semi_axes_mm: tuple[float, float] = (110.0, 85.0)
    liver_suv: float = 2.0
    liver_center_mm: tuple[float, float, float] = (-50.0, 10.0, -150.0)
    liver_semi_axes_mm: tuple[float, float, float] = (40.0, 35.0, 45.0)
    noise_sd: float = 0.0                     # Gaussian noise (SUV) added to every voxel
    seed: int = 7
    bed_slices: int = 15                      # slices per bed position (acquisition time steps)
    bed_seconds: float = 120.0

    def _axis(self, n: int, spacing: float) -> np.ndarray:
        return (np.arange(n) - (n - 1) / 2.0) * spacing

    def suv_slice(self, k: int) -> np.ndarray:
        """True SUVbw of slice k (z = −k·slice_mm), averaged over each voxel."""
        s = self.spec
        offsets = (np.arange(_SUB) + 0.5) / _SUB - 0.5
        c = self._axis(s.pet_matrix, s.pet_spacing_mm)
        fine = (c[:, None] + offsets[None, :] * s.pet_spacing_mm).ravel()
        y, x = np.meshgrid(fine, fine, indexing="ij")
        total = np.zeros_like(x)
        for dz in offsets * s.slice_mm:
            z = -k * s.slice_mm + dz
            value = np.zeros_like(x)
            ax, ay = self.body_semi_axes_mm
            value[(x / ax) ** 2 + (y / ay) ** 2 <= 1.0] = self.background_suv
            lc, la = self.liver_center_mm, self.liver_semi_axes_mm
            value[((x - lc[0]) / la[0]) ** 2 + ((y - lc[1]) / la[1]) ** 2 + ((z - lc[2]) / la[2]) ** 2 <= 1.0] \
                = self.liver_suv
            for sp in self.spheres:
                cx, cy, cz = sp.center_mm
                value[(x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= (sp.diameter_mm / 2.0) ** 2] = sp.suv
            total += value
        n = s.pet_matrix
        out = (total / _SUB).reshape(n, _SUB, n, _SUB).mean(axis=(1, 3))
        if self.noise_sd:
            out = out + np.random.default_rng(self.seed + k).normal(0.0, self.noise_sd, out.shape)
        return np.clip(out, 0.0, None)

    def suv_volume(self) -> np.ndarray:
        """The whole true SUVbw volume in file order (slice k = z −k·slice_mm)."""
        return np.stack([self.suv_slice(k) for k in range(self.spec.pet_slices)])

    def acquisition_start(self, k: int) -> datetime:
        return self.spec.scan_start + timedelta(seconds=(k // self.bed_slices) * self.bed_seconds)


def small_spec(**changes: object) -> StudySpec:
    """80×80×80 PET at 3 mm (240 mm cube) with a 128×128 CT on the same slices.

    3 mm, not 4: a 2 cm sphere sampled at 4 mm is 2.5 voxels in radius and its voxel count is off by up
    to 24 % depending on where its centre falls; at 3 mm the phantom's spheres are within 2 %.
    """
    base = StudySpec(pet_matrix=80, pet_spacing_mm=3.0, slice_mm=3.0, pet_slices=80, ct_slices=80,
                     ct_matrix=128, ct_spacing_mm=1.875)
    return replace(base, **changes)


def standard_phantom(spec: StudySpec | None = None, **changes: object) -> Phantom:
    """The test phantom: spheres of 30, 20, 16+16 (touching), 12 mm and a 20 mm one cut by the top edge.

    Every sphere holds at least one voxel wholly inside it, so each SUVmax is exact.
    """
    spheres = [
        Sphere((34.0, -22.0, -148.0), 30.0, 10.0),    # A: big
        Sphere((-50.0, 10.0, -60.0), 20.0, 8.0),      # B: 2 cm
        Sphere((26.0, 42.0, -60.0), 16.0, 6.0),       # C: touches D
        Sphere((42.0, 42.0, -60.0), 16.0, 5.0),       # D
        Sphere((-2.0, -42.0, -200.0), 12.0, 6.0),     # E: small
        Sphere((70.0, 2.0, 0.0), 20.0, 7.0),          # F: cut by the first slice (top of the field of view)
    ]
    return Phantom(spec=spec or small_spec(), spheres=spheres, **changes)  # type: ignore[arg-type]


def _frame_decay(seconds: float, duration_s: float, half_life_s: float) -> float:
    lam = math.log(2.0) / half_life_s
    return math.exp(-lam * seconds) * (1.0 - math.exp(-lam * duration_s)) / (lam * duration_s)


def _bq_per_suv(spec: StudySpec) -> float:
    """Bq/ml of SUVbw 1 at injection."""
    return spec.injected_dose_bq / (spec.weight_kg * 1000.0)


def _start_decay(spec: StudySpec, reference: datetime) -> float:
    return 2.0 ** (-(reference - spec.injection_time).total_seconds() / spec.half_life_s)


def _set_time(ds: Dataset, keyword: str, when: datetime) -> None:
    setattr(ds, f"{keyword}Date", when.strftime("%Y%m%d"))
    setattr(ds, f"{keyword}Time", when.strftime("%H%M%S.%f")[:13])


def _per_slice_times(phantom: Phantom) -> Callable[[Dataset, int], None]:
    def customize(ds: Dataset, k: int) -> None:
        _set_time(ds, "Acquisition", phantom.acquisition_start(k))
    return customize


def write_phantom(phantom: Phantom, out_dir: Path, variant: str = "siemens_bqml", with_ct: bool = False,
                  customize: Callable[[Dataset, int], None] | None = None) -> list[Path]:
    """Write the phantom's PET (and CT) as the named vendor variant; `customize` runs last on each slice."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    spec = phantom.spec
    paths = write_ct_series(spec, out_dir / "CT") if with_ct else []
    if variant == "enhanced":
        return paths + [write_enhanced_pet(phantom, out_dir / "PT" / "enhanced.dcm", customize)]
    if variant == "time_only_midnight":
        spec = replace(spec, injection_time=datetime(2026, 11, 23, 23, 30), scan_start=datetime(2026, 11, 24, 0, 30))
        phantom = replace(phantom, spec=spec)
    bq = _bq_per_suv(spec)
    steps: list[Callable[[Dataset, int], None]] = [_per_slice_times(phantom)]
    scale: Callable[[int], float]

    if variant in ("siemens_bqml", "time_only_midnight", "mbq_dose"):
        factor = bq * _start_decay(spec, spec.scan_start)
        scale = lambda k: factor  # noqa: E731
    elif variant == "ge_private_time":
        spec = replace(spec, manufacturer="GE MEDICAL SYSTEMS")
        phantom = replace(phantom, spec=spec)
        factor = bq * _start_decay(spec, spec.scan_start)
        scale = lambda k: factor  # noqa: E731

        def ge(ds: Dataset, k: int) -> None:
            # a reprocessed series: SeriesTime after the acquisition, which started 90 s after the
            # scan start GE keeps privately (and decay-corrects to)
            _set_time(ds, "Series", spec.scan_start + timedelta(minutes=40))
            _set_time(ds, "Acquisition", phantom.acquisition_start(k) + timedelta(seconds=90))
            block = ds.private_block(0x0009, "GEMS_PETD_01", create=True)
            block.add_new(0x0D, "DT", spec.scan_start.strftime("%Y%m%d%H%M%S.%f"))
        steps.append(ge)
    elif variant in ("philips_cnts", "philips_cnts_activity"):
        spec = replace(spec, manufacturer="Philips Medical Systems", units="CNTS")
        phantom = replace(phantom, spec=spec)
        activity_factor = 2.5                                 # Bq/ml per count
        suv_factor = activity_factor / (bq * _start_decay(spec, spec.scan_start))   # SUVbw per count
        scale = lambda k: 1.0 / suv_factor  # noqa: E731

        def philips(ds: Dataset, k: int) -> None:
            block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
            if variant == "philips_cnts":
                block.add_new(0x00, "DS", f"{suv_factor:.10g}")
            block.add_new(0x09, "DS", f"{activity_factor:.10g}")
        steps.append(philips)
    elif variant in ("gml", "cm2ml"):      # SUV stored directly (bw in g/ml, or bsa in cm²/ml)
        spec = replace(spec, units=variant.upper())
        phantom = replace(phantom, spec=spec)
        bsa_cm2 = 0.007184 * spec.weight_kg ** 0.425 * (spec.height_m * 100) ** 0.725 * 1e4   # DuBois
        factor = 1.0 if variant == "gml" else bsa_cm2 / (spec.weight_kg * 1000.0)
        scale = lambda k: factor  # noqa: E731
    elif variant == "admin":
        spec = replace(spec, decay_correction="ADMIN")
        phantom = replace(phantom, spec=spec)
        scale = lambda k: bq  # noqa: E731
    else:   # "none": not decay corrected; each bed decays from its own start over its frame
        spec = replace(spec, decay_correction="NONE")
        phantom = replace(phantom, spec=spec)
        duration = 120.0
        scale = lambda k: bq * _frame_decay(  # noqa: E731
            (phantom.acquisition_start(k) - spec.injection_time).total_seconds(), duration, spec.half_life_s)

        def no_decy(ds: Dataset, k: int) -> None:
            ds.CorrectedImage = ["NORM", "DTIM", "ATTN", "SCAT", "RAN"]
            ds.ActualFrameDuration = int(duration * 1000)
        steps.append(no_decy)

    if variant == "time_only_midnight":
        def time_only(ds: Dataset, k: int) -> None:
            item = ds.RadiopharmaceuticalInformationSequence[0]     # shared by every slice
            if "RadiopharmaceuticalStartDateTime" in item:
                del item.RadiopharmaceuticalStartDateTime
        steps.append(time_only)
    if variant == "mbq_dose":
        def mbq(ds: Dataset, k: int) -> None:
            ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose = f"{spec.injected_dose_bq / 1e6:g}"
        steps.append(mbq)
    if customize is not None:
        steps.append(customize)

    def apply(ds: Dataset, k: int) -> None:
        for step in steps:
            step(ds, k)

    return paths + write_pet_series(spec, out_dir / "PT", lambda k: phantom.suv_slice(k) * scale(k), apply)


def _item(**values: object) -> Dataset:
    ds = Dataset()
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def write_enhanced_pet(phantom: Phantom, path: Path,
                       customize: Callable[[Dataset, int], None] | None = None) -> Path:
    """The phantom as one Enhanced PET instance: frames interleaved (even slices, then odd), a rescale slope per frame,
    units in the real-world value mapping, decay correction as DecayCorrected/DecayCorrectionDateTime.

    `customize(ds, -1)` may edit the instance before it is written.
    """
    spec = phantom.spec
    path.parent.mkdir(parents=True, exist_ok=True)
    classic = write_pet_series(spec, path.parent / "_classic",
                               lambda k: phantom.suv_slice(k) * _bq_per_suv(spec) * _start_decay(spec, spec.scan_start))
    from pydicom import dcmread

    slices = [dcmread(p) for p in classic]
    for p in classic:
        p.unlink()
    (path.parent / "_classic").rmdir()
    first = slices[0]
    ds = Dataset()
    for keyword in ("SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "PatientWeight", "PatientSize", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
                    "AccessionNumber", "ReferringPhysicianName", "Modality", "SeriesInstanceUID", "SeriesNumber",
                    "SeriesDate", "SeriesTime", "FrameOfReferenceUID", "PositionReferenceIndicator", "Manufacturer",
                    "ManufacturerModelName", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
                    "BitsStored", "HighBit", "PixelRepresentation", "Rows", "Columns",
                    "RadiopharmaceuticalInformationSequence"):
        setattr(ds, keyword, first.get(keyword))
    ds.SOPClassUID = ENHANCED_PET_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = first.AcquisitionDate, first.AcquisitionTime
    ds.AcquisitionDateTime = spec.scan_start.strftime("%Y%m%d%H%M%S")
    ds.DecayCorrected = "YES"
    ds.AttenuationCorrected = "YES"
    ds.DecayCorrectionDateTime = spec.scan_start.strftime("%Y%m%d%H%M%S.%f")
    units = _item(CodeValue="Bq/ml", CodingSchemeDesignator="UCUM", CodeMeaning="becquerels/milliliter")
    ds.RealWorldValueMappingSequence = Sequence([_item(MeasurementUnitsCodeSequence=Sequence([units]),
                                                       LUTLabel="BQML", RealWorldValueSlope=1.0,
                                                       RealWorldValueIntercept=0.0)])
    ds.SharedFunctionalGroupsSequence = Sequence([_item(
        PixelMeasuresSequence=Sequence([_item(PixelSpacing=first.PixelSpacing, SliceThickness=first.SliceThickness)]),
        PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=first.ImageOrientationPatient)]))])
    order = list(range(0, len(slices), 2)) + list(range(1, len(slices), 2))   # interleaved, not spatial
    frames = []
    for k in order:
        s = slices[k]
        frames.append(_item(
            PlanePositionSequence=Sequence([_item(ImagePositionPatient=s.ImagePositionPatient)]),
            PixelValueTransformationSequence=Sequence([_item(RescaleSlope=s.RescaleSlope, RescaleIntercept="0",
                                                             RescaleType="BQML")]),
            FrameContentSequence=Sequence([_item(
                FrameAcquisitionDateTime=phantom.acquisition_start(k).strftime("%Y%m%d%H%M%S"),
                FrameAcquisitionDuration=120000.0)])))
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.NumberOfFrames = len(frames)
    ds.PixelData = b"".join(slices[k].PixelData for k in order)
    if customize is not None:
        customize(ds, -1)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.save_as(path, enforce_file_format=True)
    return path
