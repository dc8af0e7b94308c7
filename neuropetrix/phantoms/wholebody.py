"""A realistic whole-body FDG PET/CT phantom written as real DICOM series, with its analytic truth.

The anatomy is made of ellipsoids and cylinders in patient coordinates (LPS, mm; head-first supine):
body, head with skull and brain, lungs, spine, descending aorta in periaortic fat, heart with a
left-ventricular myocardium, liver, spleen, kidneys beside the spine, urinary bladder (urine density on
CT) and femoral heads. The FDG lesions sit in a lung, the mediastinum, the liver, a vertebra and a
pelvic node one centimetre beside the bladder, so a physiological-uptake rule that swallows neighbours
shows up as a missed lesion.

PET voxels hold the mean of the true SUV over 2×2×2 sub-samples (partial volume, no blur) plus
Gaussian noise; the CT is sampled at voxel centres with noise. Both series share one frame of
reference and the same slice positions, stacked inferior → superior (instance 1 is the lowest slice),
and carry everything an SUV needs (Units BQML, DecayCorrection START, CorrectedImage ATTN/DECY,
weight, height, radiopharmaceutical with dose and times). `write_study` returns a `PhantomTruth`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
F18_HALF_LIFE_S = 6586.2
FOV_MM = 512.0                 # transaxial field of view of both series
Z_RANGE_MM = (-160.0, 760.0)   # upper thighs to the vertex
_SUB = 2                       # PET sub-samples per voxel and axis


@dataclass(frozen=True)
class Shape:
    """An ellipsoid (`z_extent` None) or an elliptic cylinder between two z, optionally hollow.

    `hu` None leaves the CT as painted before (a lesion in bone keeps the bone's density).
    """

    name: str
    center: tuple[float, float, float]
    semi: tuple[float, float, float]      # x, y, z semi-axes (z unused for a cylinder)
    suv: float
    hu: float | None
    z_extent: tuple[float, float] | None = None

    def bounds_z(self) -> tuple[float, float]:
        if self.z_extent is not None:
            return self.z_extent
        return self.center[2] - self.semi[2], self.center[2] + self.semi[2]

    def inside(self, x: np.ndarray, y: np.ndarray, z: float) -> np.ndarray:
        q = ((x - self.center[0]) / self.semi[0]) ** 2 + ((y - self.center[1]) / self.semi[1]) ** 2
        if self.z_extent is None:
            q = q + ((z - self.center[2]) / self.semi[2]) ** 2
        return q <= 1.0

    @property
    def volume_ml(self) -> float:
        a, b, c = self.semi
        if self.z_extent is not None:
            return math.pi * a * b * (self.z_extent[1] - self.z_extent[0]) / 1000.0
        return 4.0 / 3.0 * math.pi * a * b * c / 1000.0


@dataclass(frozen=True)
class LesionTruth:
    name: str
    site: str                              # lung, mediastinum, liver, bone, pelvic node
    center_mm: tuple[float, float, float]
    diameter_mm: float
    suv: float

    @property
    def volume_ml(self) -> float:
        return math.pi / 6.0 * self.diameter_mm ** 3 / 1000.0


@dataclass(frozen=True)
class OrganTruth:
    name: str
    suv: float
    volume_ml: float
    center_mm: tuple[float, float, float]


@dataclass
class PhantomTruth:
    """What the analysis of the written study should find."""

    lesions: list[LesionTruth]
    organs: dict[str, OrganTruth]           # physiological and reference organs by name
    liver_suv: float                        # the PERCIST reference (liver parenchyma)
    blood_pool_suv: float                   # descending aorta
    physiological: tuple[str, ...]          # organs FDG shows that are not lesions
    pet_spacing_mm: tuple[float, float, float]   # slice, row, column
    study_instance_uid: str
    frame_of_reference_uid: str
    pet_series_uid: str
    ct_series_uid: str | None
    accession_number: str | None
    pet_paths: list[Path] = field(default_factory=list)
    ct_paths: list[Path] = field(default_factory=list)
    offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)   # patient position: phantom point p is at p + offset

    @property
    def tmtv_ml(self) -> float:
        return float(sum(les.volume_ml for les in self.lesions))


LIVER_SUV, BLOOD_SUV = 2.2, 1.8

_BACKGROUND = [    # painted in this order; later shapes override earlier ones
    Shape("trunk", (0.0, 0.0, 0.0), (165.0, 115.0, 0.0), 1.0, 30.0, (-160.0, 480.0)),
    Shape("neck", (0.0, 10.0, 0.0), (55.0, 55.0, 0.0), 1.0, 30.0, (470.0, 570.0)),
    Shape("skull", (0.0, 10.0, 655.0), (75.0, 95.0, 100.0), 0.6, 1000.0),
    Shape("brain", (0.0, 10.0, 655.0), (67.0, 87.0, 92.0), 8.0, 35.0),
    Shape("lung_right", (-85.0, 5.0, 330.0), (60.0, 75.0, 120.0), 0.4, -850.0),
    Shape("lung_left", (85.0, 5.0, 330.0), (60.0, 75.0, 120.0), 0.4, -850.0),
    Shape("mediastinal_fat", (0.0, 5.0, 0.0), (40.0, 65.0, 0.0), 0.5, -90.0, (205.0, 450.0)),
    Shape("periaortic_fat", (28.0, 45.0, 0.0), (20.0, 20.0, 0.0), 0.5, -100.0, (60.0, 450.0)),
    Shape("aorta", (28.0, 45.0, 0.0), (12.0, 12.0, 0.0), BLOOD_SUV, 40.0, (60.0, 450.0)),
    Shape("heart", (20.0, -30.0, 270.0), (52.0, 45.0, 55.0), BLOOD_SUV, 40.0),
    Shape("myocardium", (30.0, -30.0, 265.0), (38.0, 34.0, 44.0), 6.0, 45.0),
    Shape("ventricle", (30.0, -30.0, 265.0), (28.0, 24.0, 34.0), BLOOD_SUV, 40.0),
    Shape("spine", (0.0, 72.0, 0.0), (20.0, 20.0, 0.0), 1.0, 400.0, (-40.0, 570.0)),
    Shape("liver", (-65.0, -10.0, 150.0), (85.0, 75.0, 70.0), LIVER_SUV, 55.0),
    Shape("spleen", (85.0, 30.0, 150.0), (35.0, 45.0, 50.0), 1.9, 50.0),
    Shape("kidney_right", (-80.0, 55.0, 60.0), (30.0, 28.0, 50.0), 5.0, 35.0),
    Shape("kidney_left", (80.0, 55.0, 60.0), (30.0, 28.0, 50.0), 5.0, 35.0),
    Shape("urinary_bladder", (0.0, -10.0, -70.0), (45.0, 40.0, 35.0), 25.0, 5.0),
    Shape("femoral_head_right", (-95.0, 10.0, -115.0), (25.0, 25.0, 25.0), 0.8, 700.0),
    Shape("femoral_head_left", (95.0, 10.0, -115.0), (25.0, 25.0, 25.0), 0.8, 700.0),
]

LESIONS = [
    LesionTruth("lung_right", "lung", (-90.0, 0.0, 360.0), 20.0, 8.0),
    LesionTruth("lung_left", "lung", (95.0, 10.0, 300.0), 14.0, 6.0),
    LesionTruth("mediastinal_node", "mediastinum", (-10.0, -5.0, 390.0), 18.0, 7.0),
    LesionTruth("liver_metastasis", "liver", (-115.0, -35.0, 135.0), 22.0, 9.0),
    LesionTruth("vertebral_metastasis", "bone", (0.0, 72.0, 250.0), 16.0, 7.0),
    LesionTruth("pelvic_node", "pelvic node", (-63.0, -10.0, -70.0), 16.0, 6.0),   # 1 cm beside the bladder
]
_LESION_HU = {"lung": 30.0, "mediastinum": 40.0, "liver": 45.0, "bone": None, "pelvic node": 40.0}
PHYSIOLOGICAL_FDG = ("brain", "myocardium", "urinary_bladder", "kidney_right", "kidney_left")


def _shapes(lesions: list[LesionTruth], liver_suv: float = LIVER_SUV) -> list[Shape]:
    background = [replace(s, suv=liver_suv) if s.name == "liver" else s for s in _BACKGROUND]
    return background + [Shape(les.name, les.center_mm, (les.diameter_mm / 2.0,) * 3, les.suv, _LESION_HU[les.site])
                          for les in lesions]


def _organ_truth(lesions: list[LesionTruth]) -> dict[str, OrganTruth]:
    by_name = {s.name: s for s in _BACKGROUND}
    out = {}
    for name in PHYSIOLOGICAL_FDG + ("liver", "aorta", "spleen"):
        s = by_name[name]
        volume = s.volume_ml
        if name == "myocardium":
            volume -= by_name["ventricle"].volume_ml
        out[name] = OrganTruth(name, s.suv, volume, s.center)
    return out


def _paint(shapes: list[Shape], x: np.ndarray, y: np.ndarray, z: float, attr: str, start: float) -> np.ndarray:
    """One plane of `attr` (suv or hu) at height z: the shapes painted in order over `start`."""
    out = np.full(x.shape, start, dtype=np.float64)
    for s in shapes:
        low, high = s.bounds_z()
        value = getattr(s, attr)
        if value is None or not (low <= z <= high):
            continue
        out[s.inside(x, y, z)] = value
    return out


def _plane_grid(matrix: int, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    spacing = FOV_MM / matrix
    centres = (np.arange(matrix) - (matrix - 1) / 2.0) * spacing
    fine = (centres[:, None] + offsets[None, :] * spacing).ravel()
    y, x = np.meshgrid(fine, fine, indexing="ij")
    return x, y


def _text(value: float) -> str:
    """A DS value dciodvfy accepts (at most 16 characters)."""
    return f"{value:.10g}"[:16]


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


@dataclass(frozen=True)
class _Record:
    """What the scanner records about the patient and the examination."""

    patient_name: str
    patient_id: str
    accession: str | None
    weight_kg: float
    height_m: float
    sex: str
    dose_bq: float
    injection: datetime
    scan_start: datetime
    study_uid: str
    frame_uid: str


def _tm(when: datetime) -> str:
    return when.strftime("%H%M%S.%f")[:13]


# General Equipment, image plane orientation (axial) and Image Pixel module (16-bit signed grey)
_EQUIPMENT_AND_PIXELS = {
    "Manufacturer": "NeuroPETRIX phantom", "ManufacturerModelName": "wholebody", "DeviceSerialNumber": "0",
    "SoftwareVersions": "1", "InstitutionName": "Ankara Şehir Hastanesi",
    "ImageOrientationPatient": ["1", "0", "0", "0", "1", "0"], "SamplesPerPixel": 1,
    "PhotometricInterpretation": "MONOCHROME2", "BitsAllocated": 16, "BitsStored": 16, "HighBit": 15,
    "PixelRepresentation": 1,
}


def _base(record: _Record, modality: str, sop_class: str, series_uid: str, number: int, description: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.PatientName = record.patient_name
    ds.PatientID = record.patient_id
    ds.PatientBirthDate = "19650314"
    ds.PatientSex = record.sex
    ds.PatientAge = "061Y"
    ds.PatientWeight = _text(record.weight_kg)
    ds.PatientSize = _text(record.height_m)
    ds.StudyInstanceUID = record.study_uid
    ds.StudyDate = record.injection.strftime("%Y%m%d")
    ds.StudyTime = _tm(record.injection)
    ds.StudyID = "1"
    ds.AccessionNumber = record.accession or ""
    ds.ReferringPhysicianName = "KAYA^MEHMET"
    ds.StudyDescription = "PET^CT Whole Body FDG (phantom)"
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.SeriesDate = record.scan_start.strftime("%Y%m%d")
    ds.SeriesTime = _tm(record.scan_start)
    ds.BodyPartExamined = "WHOLEBODY"
    ds.FrameOfReferenceUID = record.frame_uid
    ds.PositionReferenceIndicator = ""
    for keyword, value in _EQUIPMENT_AND_PIXELS.items():
        setattr(ds, keyword, value)
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path


def _slice(base: Dataset, k: int, z: float, matrix: int, slice_mm: float) -> Dataset:
    ds = Dataset()
    ds.update(base)
    spacing = FOV_MM / matrix
    corner = -spacing * (matrix - 1) / 2.0
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [_text(corner), _text(corner), _text(z)]
    ds.SliceLocation = _text(z)
    ds.SliceThickness = _text(slice_mm)
    ds.PixelSpacing = [_text(spacing), _text(spacing)]
    ds.Rows = ds.Columns = matrix
    return ds


def _pet_base(record: _Record, series_uid: str, n_slices: int) -> Dataset:
    base = _base(record, "PT", PET_STORAGE, series_uid, 3, "PET WB AC")
    base.ImageType = ["ORIGINAL", "PRIMARY"]
    base.Units = "BQML"
    base.CountsSource = "EMISSION"
    base.SeriesType = ["WHOLE BODY", "IMAGE"]
    base.CorrectedImage = ["NORM", "DTIM", "ATTN", "SCAT", "DECY", "RAN"]
    base.DecayCorrection = "START"
    base.RandomsCorrectionMethod = "DLYD"
    base.AttenuationCorrectionMethod = "CT"
    base.ReconstructionMethod = "OSEM"
    base.CollimatorType = "NONE"
    base.NumberOfSlices = n_slices
    base.DecayFactor = "1"
    base.DoseCalibrationFactor = "1"
    base.RescaleIntercept = "0"
    base.ActualFrameDuration = 120000
    recumbent = _code("102538003", "SCT", "recumbent")
    recumbent.PatientOrientationModifierCodeSequence = Sequence([_code("40199007", "SCT", "supine")])
    base.PatientOrientationCodeSequence = Sequence([recumbent])
    base.PatientGantryRelationshipCodeSequence = Sequence([_code("102540008", "SCT", "headfirst")])
    rp = Dataset()
    rp.Radiopharmaceutical = "Fluorodeoxyglucose"
    rp.RadiopharmaceuticalStartTime = _tm(record.injection)
    rp.RadiopharmaceuticalStartDateTime = record.injection.strftime("%Y%m%d%H%M%S.%f")
    rp.RadionuclideTotalDose = _text(record.dose_bq)
    rp.RadionuclideHalfLife = _text(F18_HALF_LIFE_S)
    rp.RadionuclidePositronFraction = "0.9673"
    rp.RadionuclideCodeSequence = Sequence([_code("77004003", "SCT", "^18^Fluorine")])
    rp.RadiopharmaceuticalCodeSequence = Sequence([_code("35321007", "SCT", "Fluorodeoxyglucose F^18^")])
    base.RadiopharmaceuticalInformationSequence = Sequence([rp])
    return base


def _frame_reference_ms(bed_offset_s: float, duration_s: float) -> float:
    """Time from the series start to the frame's decay-weighted mean (what scanners record)."""
    lam = math.log(2.0) / F18_HALF_LIFE_S
    t_ave = math.log(lam * duration_s / (1.0 - math.exp(-lam * duration_s))) / lam
    return (bed_offset_s + t_ave) * 1000.0


def write_study(out_dir: Path, *, patient_name: str = "YILMAZ^AYŞE", patient_id: str = "10000000146",
                accession: str | None = "PHANTOM001", seed: int = 0, pet_matrix: int = 128,
                ct_matrix: int | None = None, slice_mm: float | None = None, with_ct: bool = True,
                noise: float = 0.08, lesions: list[LesionTruth] | None = None, weight_kg: float = 72.0,
                height_m: float = 1.68, sex: str = "F", dose_bq: float = 370e6,
                z_range_mm: tuple[float, float] = Z_RANGE_MM, offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
                liver_suv: float = LIVER_SUV) -> PhantomTruth:
    """Write the phantom's CT (out_dir/CT) and PET (out_dir/PT) series and return the truth.

    `pet_matrix` sets the PET resolution over a 512 mm field (128: 4 mm; 192: 2.7 mm); the CT has
    `ct_matrix` (default twice the PET's) and the same slices, `slice_mm` thick (default the PET pixel).
    `noise` is the PET noise SD as a fraction of the local SUV (plus 0.05 SUV everywhere in the body).
    `with_ct=False` writes a PET-only study; `accession=None` leaves AccessionNumber empty.
    `offset_mm` places the patient elsewhere on the table (a follow-up visit): every point of the phantom,
    and the scanned range with it, is moved by it (the truth stays in phantom coordinates; `offset_mm` is
    kept in it). `liver_suv` changes the liver parenchyma's uptake.
    """
    lesions = list(LESIONS if lesions is None else lesions)
    shapes = _shapes(lesions, liver_suv)
    dx, dy, dz = offset_mm
    ct_matrix = ct_matrix or 2 * pet_matrix
    pet_mm = FOV_MM / pet_matrix
    slice_mm = slice_mm or pet_mm
    n_slices = round((z_range_mm[1] - z_range_mm[0]) / slice_mm)
    zs = z_range_mm[0] + dz + (np.arange(n_slices) + 0.5) * slice_mm    # instance 1 is the lowest slice
    rng = np.random.default_rng(seed)
    start = datetime(2026, 11, 24, 10, 0, 0)
    record = _Record(patient_name, patient_id, accession, weight_kg, height_m, sex, dose_bq,
                     start - timedelta(minutes=60), start, generate_uid(), generate_uid())
    pet_uid, ct_uid = generate_uid(), generate_uid() if with_ct else None
    out_dir = Path(out_dir)
    truth = PhantomTruth(lesions=lesions, organs=_organ_truth(lesions), liver_suv=liver_suv,
                         blood_pool_suv=BLOOD_SUV, physiological=PHYSIOLOGICAL_FDG,
                         pet_spacing_mm=(slice_mm, pet_mm, pet_mm), study_instance_uid=record.study_uid,
                         frame_of_reference_uid=record.frame_uid, pet_series_uid=pet_uid, ct_series_uid=ct_uid,
                         accession_number=accession, offset_mm=(float(dx), float(dy), float(dz)))

    offsets = (np.arange(_SUB) + 0.5) / _SUB - 0.5
    px, py = _plane_grid(pet_matrix, offsets)
    px, py = px - dx, py - dy
    bq_per_suv = dose_bq * 2.0 ** (-(start - record.injection).total_seconds() / F18_HALF_LIFE_S) / (weight_kg * 1000.0)
    (out_dir / "PT").mkdir(parents=True, exist_ok=True)
    pet_base = _pet_base(record, pet_uid, n_slices)
    bed_slices = max(1, round(200.0 / slice_mm))               # 20 cm bed positions, inferior first
    for k, z in enumerate(zs):
        suv = sum(_paint(shapes, px, py, z - dz + sub * slice_mm, "suv", 0.0) for sub in offsets) / _SUB
        suv = suv.reshape(pet_matrix, _SUB, pet_matrix, _SUB).mean(axis=(1, 3))
        body = suv > 0
        suv = suv + body * rng.normal(0.0, 1.0, suv.shape) * (noise * suv + 0.05)
        bqml = np.clip(suv, 0.0, None) * bq_per_suv
        ds = _slice(pet_base, k, float(z), pet_matrix, slice_mm)
        bed_offset = (k // bed_slices) * 120.0
        acquired = start + timedelta(seconds=bed_offset)
        ds.AcquisitionDate, ds.AcquisitionTime = acquired.strftime("%Y%m%d"), _tm(acquired)
        ds.ContentDate, ds.ContentTime = ds.AcquisitionDate, ds.AcquisitionTime
        ds.FrameReferenceTime = _text(_frame_reference_ms(bed_offset, 120.0))
        ds.ImageIndex = k + 1
        slope = float(bqml.max()) / 32767.0 or 1.0
        ds.RescaleSlope = _text(slope)
        ds.PixelData = np.rint(bqml / float(ds.RescaleSlope)).astype(np.int16).tobytes()
        truth.pet_paths.append(_save(ds, out_dir / "PT" / f"PT{k + 1:04d}.dcm"))

    if not with_ct:
        return truth
    cx, cy = _plane_grid(ct_matrix, np.zeros(1))
    cx, cy = cx - dx, cy - dy
    (out_dir / "CT").mkdir(parents=True, exist_ok=True)
    ct_base = _base(record, "CT", CT_STORAGE, ct_uid, 2, "CT WB")  # type: ignore[arg-type]
    ct_base.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ct_base.PatientPosition = "HFS"
    ct_base.KVP = "120"
    ct_base.AcquisitionNumber = 1
    ct_base.RescaleIntercept, ct_base.RescaleSlope, ct_base.RescaleType = "-1024", "1", "HU"
    ct_time = start - timedelta(minutes=2)
    ct_base.AcquisitionDate, ct_base.AcquisitionTime = ct_time.strftime("%Y%m%d"), _tm(ct_time)
    ct_base.ContentDate, ct_base.ContentTime = ct_base.AcquisitionDate, ct_base.AcquisitionTime
    ct_base.ConvolutionKernel = "B30f"
    ct_base.WindowCenter, ct_base.WindowWidth = "40", "400"
    for k, z in enumerate(zs):
        hu = _paint(shapes, cx, cy, float(z) - dz, "hu", -1000.0) + rng.normal(0.0, 10.0, cx.shape)
        ds = _slice(ct_base, k, float(z), ct_matrix, slice_mm)
        ds.PixelData = np.clip(np.rint(hu + 1024.0), -32768, 32767).astype(np.int16).tobytes()
        truth.ct_paths.append(_save(ds, out_dir / "CT" / f"CT{k + 1:04d}.dcm"))
    return truth


# Organ names as TotalSegmentator writes them (one file per structure, or one multi-label map)
LABELS = {1: "brain", 2: "heart", 3: "urinary_bladder", 4: "kidney_right", 5: "kidney_left", 6: "liver",
          7: "aorta", 8: "spleen"}
_LABEL_SHAPES = {"brain": ("brain",), "heart": ("heart", "myocardium", "ventricle"),
                 "urinary_bladder": ("urinary_bladder",), "kidney_right": ("kidney_right",),
                 "kidney_left": ("kidney_left",), "liver": ("liver",), "aorta": ("aorta",), "spleen": ("spleen",)}


def write_label_maps(out_dir: Path, *, spacing_mm: float = 3.0, multilabel: bool = False,
                     z_range_mm: tuple[float, float] = Z_RANGE_MM) -> Path:
    """The phantom's organs as a segmentation model would write them (NIfTI, LPS geometry via SimpleITK).

    `multilabel=False`: a folder of `<organ>.nii.gz` masks (TotalSegmentator's default output);
    True: one `organs.nii.gz` with `organs.json` naming its labels (TotalSegmentator --ml, MOOSE).
    Returns the folder or the file to give to the analysis.
    """
    import SimpleITK as sitk

    n = round(FOV_MM / spacing_mm)
    centres = (np.arange(n) - (n - 1) / 2.0) * spacing_mm
    y, x = np.meshgrid(centres, centres, indexing="ij")
    zs = np.arange(z_range_mm[0] + spacing_mm / 2, z_range_mm[1], spacing_mm)
    by_name = {s.name: s for s in _BACKGROUND}
    labels = np.zeros((zs.size, n, n), dtype=np.uint8)
    for value, name in LABELS.items():
        for part in _LABEL_SHAPES[name]:
            shape = by_name[part]
            low, high = shape.bounds_z()
            for k, z in enumerate(zs):
                if low <= z <= high:
                    labels[k][shape.inside(x, y, float(z)) & ((labels[k] == 0) | (labels[k] == value))] = value
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def image(array: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(array)
        img.SetSpacing((spacing_mm, spacing_mm, spacing_mm))
        img.SetOrigin((float(centres[0]), float(centres[0]), float(zs[0])))
        return img

    if multilabel:
        sitk.WriteImage(image(labels), str(out_dir / "organs.nii.gz"))
        (out_dir / "organs.json").write_text(json.dumps({str(k): v for k, v in LABELS.items()}), encoding="utf-8")
        return out_dir / "organs.nii.gz"
    for value, name in LABELS.items():
        sitk.WriteImage(image((labels == value).astype(np.uint8)), str(out_dir / f"{name}.nii.gz"))
    return out_dir
