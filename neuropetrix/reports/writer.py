"""Every report of one analysis, written into one folder: seg.dcm, sr.dcm, oru.hl7, fhir_bundle.json,
mip.png, report.pdf and report.dcm.

All objects are built in memory first, then every one is written to a temporary file, and only when
all of them are on disk are they renamed into place: a failure while building or writing (a bad input,
a full disk) leaves the folder as it was. The renames themselves are one per file, so a crash between
them can leave new files beside older ones; where the set must change in one step (the engine), the
caller writes into a fresh folder and publishes that folder with one rename (engine/result_store.py).
Without lesions there is no SEG (a SEG needs a segment): the other objects report the negative study
and a seg.dcm left from an earlier run of the same analysis is removed. Without an AccessionNumber
(a phantom, a QC scan, an import) the HL7 ORU and the FHIR bundle, which file a result against an
order, are not made (`delivery_refusals` says why); everything else is.
"""
from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path

from pydicom.dataset import Dataset

from neuropetrix.analysis.results import AnalysisResult
from neuropetrix.config.settings import HbysSettings
from neuropetrix.dicom_uids import sign_file_meta
from neuropetrix.reports.comparison import PriorStudy
from neuropetrix.reports.dicombytes import dicom_bytes
from neuropetrix.reports.encapsulated import build_encapsulated_pdf
from neuropetrix.reports.fhir import build_bundle, bundle_json
from neuropetrix.reports.hl7 import oru_bytes
from neuropetrix.reports.images import Pictures
from neuropetrix.reports.measures import measures
from neuropetrix.reports.pdf import MAX_KEY_IMAGES, build_pdf
from neuropetrix.reports.seg import build_seg
from neuropetrix.reports.source import OrderFacts, study_info
from neuropetrix.reports.sr import build_sr
from neuropetrix.reports.version import AUTOMATIC, ResultVersion

FILES = {"seg": "seg.dcm", "sr": "sr.dcm", "oru": "oru.hl7", "fhir_bundle": "fhir_bundle.json",
         "mip": "mip.png", "report_pdf": "report.pdf", "report_dcm": "report.dcm"}


def _dicom_bytes(ds: Dataset) -> bytes:
    """The Part 10 file, naming the node as the implementation that wrote it (not highdicom or pydicom)."""
    sign_file_meta(ds.file_meta)
    return dicom_bytes(ds)


def _sop_classes(datasets: list[Dataset]) -> dict[str, str]:
    return {str(ds.SOPInstanceUID): str(ds.SOPClassUID) for ds in datasets}


def _write_all(out_dir: Path, contents: dict[str, bytes]) -> dict[str, Path]:
    """Every file to a temporary name first, then the renames: nothing replaced unless all were written."""
    temps: dict[str, Path] = {}
    try:
        for kind, data in contents.items():
            temps[kind] = out_dir / f".{FILES[kind]}.{uuid.uuid4().hex}.tmp"
            temps[kind].write_bytes(data)
    except BaseException:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        raise
    written = {}
    for kind, tmp in temps.items():
        written[kind] = out_dir / FILES[kind]
        os.replace(tmp, written[kind])
    return written


NO_ACCESSION = ("the PET series has no AccessionNumber (0008,0050): the HBYS cannot file the result against an "
                "order; give the study its order's accession number (e.g. by a coercion transform or a re-send "
                "from the modality) and analyse it again")


def delivery_refusals(pet_datasets: list[Dataset], order: OrderFacts | None = None) -> dict[str, str]:
    """{kind: reason} for the report files that cannot be made for this study (HL7 and FHIR need an order:
    the images' AccessionNumber, or the HBYS order the study was reconciled with)."""
    if order is not None or (pet_datasets and str(pet_datasets[0].get("AccessionNumber", "") or "").strip()):
        return {}
    return {"oru": NO_ACCESSION, "fhir_bundle": NO_ACCESSION}


def write_reports(result: AnalysisResult, pet_datasets: list[Dataset], out_dir: Path,
                  settings: HbysSettings, version: ResultVersion = AUTOMATIC,
                  order: OrderFacts | None = None, prior: PriorStudy | None = None,
                  pictures: Pictures | None = None) -> dict[str, Path]:
    """Write every report of `result` into `out_dir`; returns {kind: path} for what was written.

    `pet_datasets[k]` is the source dataset of `result.label_map[k]` (the same multi-frame dataset for
    every k of an Enhanced PET); `version` is the status and signer every object carries; `order` the HBYS's
    order when the study was reconciled with one; `prior` the study `result.response` compares with (the SR
    references it, the PDF shows it beside the current one); `pictures` the analysis's pictures when the
    caller draws more of them afterwards (keyimages.py), so the MIP and key images are computed once. Raises
    ReportError, having written nothing, when an object cannot be made.
    """
    measures(result)
    refused = delivery_refusals(pet_datasets, order)
    info = study_info(result, pet_datasets, require_accession=not refused, order=order)
    now = datetime.now(info.study_datetime.tzinfo)        # one creation time for every object
    seg = build_seg(result, pet_datasets, now, version) if result.lesions else None
    sr = build_sr(result, pet_datasets, info, seg, now, version, prior)
    pictures = pictures or Pictures(result)
    hottest = sorted(result.lesions, key=lambda les: les.suv_max, reverse=True)[:MAX_KEY_IMAGES]
    mip = pictures.mip_png()
    prior_mip = None if prior is None else Pictures(prior.result).mip_png()
    pdf = build_pdf(result, info, mip, {les.label: pictures.axial_png(les) for les in hottest},
                    sr_uid=str(sr.SOPInstanceUID), seg_uid=None if seg is None else str(seg.SOPInstanceUID),
                    version=version, prior=prior, prior_mip=prior_mip)
    encapsulated = build_encapsulated_pdf(result, pet_datasets[0], pdf, [sr] + ([seg] if seg is not None else []),
                                          now, version)
    contents = {"sr": _dicom_bytes(sr), "mip": mip, "report_pdf": pdf, "report_dcm": _dicom_bytes(encapsulated)}
    if "oru" not in refused:
        contents["oru"] = oru_bytes(result, info, settings.mllp, now, version)
    if "fhir_bundle" not in refused:
        contents["fhir_bundle"] = bundle_json(build_bundle(result, info, settings, _sop_classes(pet_datasets), pdf,
                                                           now, version)).encode("utf-8")
    if seg is not None:
        contents["seg"] = _dicom_bytes(seg)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = _write_all(out_dir, contents)
    for kind in [*refused, *([] if seg is not None else ["seg"])]:
        (out_dir / FILES[kind]).unlink(missing_ok=True)       # left from an earlier run
    return written
