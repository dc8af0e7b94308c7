"""Synthetic PET/CT studies written as real DICOM files, the way a scanner writes them.

Used by the tests and the benchmarks. A study is a CT series (512×512 int16, HU via rescale) and a PET
series (200×200, Bq/ml via a per-slice RescaleSlope) on one frame of reference, with the patient,
radiopharmaceutical, weight, dose, units and decay attributes a PET/CT scanner records. The PET
activity is given as an array in Bq/ml, so phantoms with an analytically known answer can be written
through the same code.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
F18_HALF_LIFE_S = 6586.2


@dataclass
class StudySpec:
    """What a scanner would record for one PET/CT examination."""

    patient_name: str = "YILMAZ^AYŞE"
    patient_id: str = "10000000146"           # a valid T.C. Kimlik No
    patient_birth_date: str = "19650314"
    patient_sex: str = "F"
    weight_kg: float = 72.0
    height_m: float = 1.68
    accession_number: str = "ACC2026001"
    study_description: str = "PET^CT Whole Body FDG"
    institution_name: str = "Ankara Şehir Hastanesi"
    manufacturer: str = "SIEMENS"
    injected_dose_bq: float = 370e6
    half_life_s: float = F18_HALF_LIFE_S
    injection_time: datetime = datetime(2026, 11, 24, 9, 0, 0)
    scan_start: datetime = datetime(2026, 11, 24, 10, 0, 0)
    ct_slices: int = 300
    pet_slices: int = 300
    ct_matrix: int = 512
    pet_matrix: int = 200
    ct_spacing_mm: float = 500.0 / 512
    pet_spacing_mm: float = 3.5
    slice_mm: float = 3.0
    units: str = "BQML"
    decay_correction: str = "START"
    study_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    ct_series_uid: str = field(default_factory=generate_uid)
    pet_series_uid: str = field(default_factory=generate_uid)


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _da(t: datetime) -> str:
    return t.strftime("%Y%m%d")


def _tm(t: datetime) -> str:
    return t.strftime("%H%M%S.%f")[:13]


def _common(spec: StudySpec, modality: str, sop_class: str, series_uid: str, series_number: int,
            description: str) -> Dataset:
    """Patient, study, series, frame of reference and equipment modules shared by every slice."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.IssuerOfPatientID = "TCKN"
    ds.PatientBirthDate = spec.patient_birth_date
    ds.PatientSex = spec.patient_sex
    ds.PatientAge = f"{spec.scan_start.year - int(spec.patient_birth_date[:4]):03d}Y"
    ds.PatientWeight = f"{spec.weight_kg:g}"
    ds.PatientSize = f"{spec.height_m:g}"
    ds.StudyInstanceUID = spec.study_uid
    ds.StudyDate = _da(spec.scan_start - timedelta(minutes=70))
    ds.StudyTime = _tm(spec.scan_start - timedelta(minutes=70))
    ds.StudyID = "1"
    ds.AccessionNumber = spec.accession_number
    ds.ReferringPhysicianName = "KAYA^MEHMET"
    ds.StudyDescription = spec.study_description
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.SeriesDate = _da(spec.scan_start)
    ds.SeriesTime = _tm(spec.scan_start)
    ds.BodyPartExamined = "WHOLEBODY"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = spec.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = spec.manufacturer
    ds.ManufacturerModelName = "Biograph Vision 600"
    ds.DeviceSerialNumber = "60001"
    ds.SoftwareVersions = "VR20"
    ds.InstitutionName = spec.institution_name
    ds.StationName = "PETCT1"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    return ds


def _slice_z(spec: StudySpec, k: int) -> float:
    """Slice k's z (mm, LPS); slice 0 is the most superior, as scanners number head-first scans."""
    return -float(k) * spec.slice_mm


def _positioned(base: Dataset, spec: StudySpec, k: int, matrix: int, spacing: float) -> Dataset:
    ds = Dataset()
    ds.update(base)
    origin = -spacing * (matrix - 1) / 2.0
    ds.ImagePositionPatient = [f"{origin:.4f}", f"{origin:.4f}", f"{_slice_z(spec, k):.4f}"]
    ds.SliceLocation = f"{_slice_z(spec, k):.4f}"
    ds.SliceThickness = f"{spec.slice_mm:g}"
    ds.PixelSpacing = [f"{spacing:.6g}", f"{spacing:.6g}"]
    ds.Rows = ds.Columns = matrix
    ds.InstanceNumber = k + 1
    return ds


def _write(ds: Dataset, path: Path) -> Path:
    ds.file_meta = _file_meta(ds.SOPClassUID, ds.SOPInstanceUID)
    ds.save_as(path, enforce_file_format=True)
    return path


def ct_slice_hu(spec: StudySpec, k: int, rng: np.random.Generator) -> np.ndarray:
    """A body-shaped CT slice in HU: air, an elliptical soft-tissue body, two lungs, a spine, noise."""
    n = spec.ct_matrix
    c = (np.arange(n) - (n - 1) / 2.0) * spec.ct_spacing_mm
    y, x = np.meshgrid(c, c, indexing="ij")
    hu = np.full((n, n), -1000.0, dtype=np.float32)
    hu[(x / 170.0) ** 2 + (y / 115.0) ** 2 <= 1.0] = 40.0
    if 20 <= k < 0.4 * spec.ct_slices:
        hu[((x - 70) / 55.0) ** 2 + ((y + 10) / 65.0) ** 2 <= 1.0] = -820.0
        hu[((x + 70) / 55.0) ** 2 + ((y + 10) / 65.0) ** 2 <= 1.0] = -820.0
    hu[(x / 18.0) ** 2 + ((y - 70) / 18.0) ** 2 <= 1.0] = 700.0
    hu += rng.normal(0.0, 12.0, size=hu.shape).astype(np.float32)
    return hu


def write_ct_series(spec: StudySpec, out_dir: Path, seed: int = 1) -> list[Path]:
    """CT slices as int16 with RescaleIntercept −1024, on the PET's frame of reference."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = _common(spec, "CT", CT_IMAGE_STORAGE, spec.ct_series_uid, 2, "CT WB 3.0 B30f")
    base.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    base.KVP = "120"
    base.AcquisitionNumber = 1
    base.RescaleIntercept = "-1024"
    base.RescaleSlope = "1"
    base.RescaleType = "HU"
    base.AcquisitionDate = _da(spec.scan_start - timedelta(minutes=2))
    base.AcquisitionTime = _tm(spec.scan_start - timedelta(minutes=2))
    base.ContentDate, base.ContentTime = base.AcquisitionDate, base.AcquisitionTime
    base.ConvolutionKernel = "B30f"
    base.WindowCenter, base.WindowWidth = "40", "400"
    paths = []
    for k in range(spec.ct_slices):
        ds = _positioned(base, spec, k, spec.ct_matrix, spec.ct_spacing_mm)
        ds.SOPInstanceUID = generate_uid()
        stored = np.clip(np.rint(ct_slice_hu(spec, k, rng) + 1024.0), -32768, 32767).astype(np.int16)
        ds.PixelData = stored.tobytes()
        paths.append(_write(ds, out_dir / f"CT{k + 1:04d}.dcm"))
    return paths


def background_activity(spec: StudySpec) -> Callable[[int], np.ndarray]:
    """Warm background for ingest tests: uniform body at SUV 1, liver at SUV 2.5, a lesion at SUV 8."""
    n = spec.pet_matrix
    c = (np.arange(n) - (n - 1) / 2.0) * spec.pet_spacing_mm
    y, x = np.meshgrid(c, c, indexing="ij")
    suv1 = spec.injected_dose_bq / (spec.weight_kg * 1000.0)   # Bq/ml of SUV 1 at injection time

    def slice_bqml(k: int) -> np.ndarray:
        act = np.zeros((n, n), dtype=np.float64)
        act[(x / 170.0) ** 2 + (y / 115.0) ** 2 <= 1.0] = suv1
        z = _slice_z(spec, k)
        if -400 <= z <= -250:
            act[((x + 60) / 80.0) ** 2 + ((y + 10) / 60.0) ** 2 <= 1.0] = 2.5 * suv1
        act[(x ** 2 + y ** 2 + (z + 150.0) ** 2) <= 15.0 ** 2] = 8.0 * suv1
        return act
    return slice_bqml


def write_pet_series(spec: StudySpec, out_dir: Path,
                     activity: Callable[[int], np.ndarray] | None = None,
                     customize: Callable[[Dataset, int], None] | None = None) -> list[Path]:
    """PET slices storing `activity(k)` (Bq/ml, decay-corrected to the series start) via RescaleSlope.

    `customize(ds, k)` may edit each slice before it is written (vendor variants, broken headers).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    activity = activity or background_activity(spec)
    base = _common(spec, "PT", PET_IMAGE_STORAGE, spec.pet_series_uid, 3, "PET WB AC")
    base.ImageType = ["ORIGINAL", "PRIMARY"]
    base.Units = spec.units
    base.CountsSource = "EMISSION"
    base.SeriesType = ["WHOLE BODY", "IMAGE"]
    base.CorrectedImage = ["NORM", "DTIM", "ATTN", "SCAT", "DECY", "RAN"]
    base.DecayCorrection = spec.decay_correction
    base.RandomsCorrectionMethod = "DLYD"
    base.AttenuationCorrectionMethod = "CT"
    base.ReconstructionMethod = "OSEM 4i5s"
    base.CollimatorType = "NONE"
    base.NumberOfSlices = spec.pet_slices
    base.AcquisitionDate = _da(spec.scan_start)
    base.AcquisitionTime = _tm(spec.scan_start)
    base.ContentDate, base.ContentTime = base.AcquisitionDate, base.AcquisitionTime
    base.FrameReferenceTime = "0"
    base.ActualFrameDuration = 120000
    base.DecayFactor = "1"
    base.DoseCalibrationFactor = "1"
    base.RescaleIntercept = "0"
    recumbent = _code("102538003", "SCT", "recumbent")
    recumbent.PatientOrientationModifierCodeSequence = Sequence([_code("40199007", "SCT", "supine")])
    base.PatientOrientationCodeSequence = Sequence([recumbent])   # replaces PatientPosition on PET
    del base.PatientPosition
    base.PatientGantryRelationshipCodeSequence = Sequence([_code("102540008", "SCT", "headfirst")])
    rp = Dataset()
    rp.Radiopharmaceutical = "Fluorodeoxyglucose"
    rp.RadiopharmaceuticalStartTime = _tm(spec.injection_time)
    rp.RadiopharmaceuticalStartDateTime = spec.injection_time.strftime("%Y%m%d%H%M%S.%f")
    rp.RadionuclideTotalDose = f"{spec.injected_dose_bq:.6g}"
    rp.RadionuclideHalfLife = f"{spec.half_life_s:g}"
    rp.RadionuclidePositronFraction = "0.9673"
    rp.RadionuclideCodeSequence = Sequence([_code("77004003", "SCT", "^18^Fluorine")])
    rp.RadiopharmaceuticalCodeSequence = Sequence([_code("35321007", "SCT", "Fluorodeoxyglucose F^18^")])
    base.RadiopharmaceuticalInformationSequence = Sequence([rp])
    paths = []
    for k in range(spec.pet_slices):
        ds = _positioned(base, spec, k, spec.pet_matrix, spec.pet_spacing_mm)
        ds.SOPInstanceUID = generate_uid()
        ds.ImageIndex = k + 1
        bqml = np.asarray(activity(k), dtype=np.float64)
        peak = float(bqml.max())
        slope = peak / 32767.0 if peak > 0 else 1.0
        ds.RescaleSlope = f"{slope:.10g}"
        ds.PixelData = np.rint(bqml / float(ds.RescaleSlope)).astype(np.int16).tobytes()
        if customize is not None:
            customize(ds, k)
        paths.append(_write(ds, out_dir / f"PT{k + 1:04d}.dcm"))
    return paths


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def write_petct_study(out_dir: Path, spec: StudySpec | None = None, with_ct: bool = True,
                      activity: Callable[[int], np.ndarray] | None = None) -> tuple[StudySpec, list[Path]]:
    """A whole PET/CT study under `out_dir` (CT/ and PT/ subfolders); returns the spec and every file."""
    spec = spec or StudySpec()
    paths = write_ct_series(spec, out_dir / "CT") if with_ct else []
    paths += write_pet_series(spec, out_dir / "PT", activity)
    return spec, paths


if __name__ == "__main__":   # python -m tests.support.synthetic OUT_DIR [CT_SLICES PET_SLICES]
    import sys

    target = Path(sys.argv[1])
    s = StudySpec()
    if len(sys.argv) > 3:
        s.ct_slices, s.pet_slices = int(sys.argv[2]), int(sys.argv[3])
    _, files = write_petct_study(target, s)
    print(f"{len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB in {target}")
