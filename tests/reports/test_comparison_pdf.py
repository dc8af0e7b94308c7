"""The PDF with a comparison still fits one page at its fullest: a long lesion list, a pair that is not
assessable for several reasons, both MIPs and the key images; the PDF, ORU and FHIR summaries name the
prior by its date and accession."""
from __future__ import annotations

import copy
import dataclasses
import io
import json
import re

import hl7
import numpy as np
from PIL import Image
from pypdf import PdfReader

from neuropetrix.analysis.response import Alignment, Check, Deauville, Response
from neuropetrix.config.settings import HbysSettings
from neuropetrix.reports.comparison import PriorStudy
from neuropetrix.reports.images import axial_png, suv_volume
from neuropetrix.reports.pdf import build_pdf
from neuropetrix.reports.source import study_info
from neuropetrix.reports.writer import write_reports


def _response(result, prior_uid: str) -> Response:
    checks = (Check("liver_stable", False, "liver SULmean 1.40 → 2.10 (+0.70 SUL, +50.0 %); PERCIST allows 20 % "
                                           "and 0.3 SUL"),
              Check("suv_type", False, "lbm_james → bw (TMTV and TLG are compared in the studies' SUV type)"),
              Check("uptake_time", False, "60 → 95 min after injection; PERCIST allows 15 min"))
    return Response(
        criteria="PERCIST 1.0", category=None, not_assessable=tuple(f"{c.name}: {c.detail}" for c in checks),
        prior_study_uid=prior_uid, current_study_uid=result.study_instance_uid, sul_type="lbm_janmahasatian",
        sul_peak_before=6.5, sul_peak_after=4.25, percent_change=-34.6, absolute_change=-2.25, target_before=1,
        target_after=1, measurability_threshold=2.5, liver_sul_before=1.4, liver_sul_after=2.1, checks=checks,
        alignment=Alignment((0.0, 0.0, 0.0), "test"), lesions=(), tmtv_ml_before=40.0,
        tmtv_ml_after=result.tmtv_ml, tlg_before=300.0, tlg_after=result.tlg_total,
        deauville=Deauville(5, 1, 9.0, 1.5, 2.1, "SUVpeak above 2 × liver SUVmean"))


def _tall_mip() -> bytes:
    """A MIP as tall as mip_png draws one (9 × 4 in at 120 dpi: a long whole-body scan)."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((1080, 480, 3), 200, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_fullest_comparison_fits_one_page(result, pet_study):
    prior = PriorStudy(dataclasses.replace(result, study_instance_uid="1.2.826.0.1.3680043.10.40.1"),
                       pet_study.datasets)
    many = [dataclasses.replace(result.lesions[i % 3], label=i + 1) for i in range(20)]
    current = dataclasses.replace(result, lesions=many, response=_response(result, prior.result.study_instance_uid))
    volume = suv_volume(result)
    keys = {les.label: axial_png(result, volume, les) for les in result.lesions}
    pdf = build_pdf(current, study_info(current, pet_study.datasets), _tall_mip(), keys, sr_uid="1.2.3",
                    seg_uid="1.2.4", prior=prior, prior_mip=_tall_mip())
    assert len(re.findall(rb"/Type /Page\b(?!s)", pdf)) == 1
    assert np.isfinite(current.tmtv_ml)


def _text(pdf: bytes) -> str:
    """The PDF's text as a reader's PDF viewer extracts it (pypdf), one space for each run of blanks."""
    return " ".join(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages).split())


def _compared(result, pet_study) -> tuple[PriorStudy, object]:
    """A prior study of 2026-06-02 (accession ACC2026-PRIOR) and the current result's response to it."""
    prior_uid = "1.2.826.0.1.3680043.10.40.1"
    datasets = copy.deepcopy(pet_study.datasets)
    for ds in datasets:
        ds.StudyDate, ds.AccessionNumber = "20260602", "ACC2026-PRIOR"
    prior = PriorStudy(dataclasses.replace(result, study_instance_uid=prior_uid), datasets)
    return prior, dataclasses.replace(result, response=_response(result, prior_uid))


def test_the_summary_names_the_prior_by_its_date_and_accession_not_its_uid(result, pet_study):
    prior, current = _compared(result, pet_study)
    prior_uid, datasets = prior.result.study_instance_uid, prior.pet_datasets
    pdf = build_pdf(current, study_info(current, pet_study.datasets), _tall_mip(), {}, sr_uid="1.2.3",
                    seg_uid="1.2.4", prior=prior, prior_mip=_tall_mip())
    text = _text(pdf)
    summary = text[text.index("Summary "):text.index("SUV inputs")]
    assert "PERCIST 1.0 versus the prior study of 2026-06-02 (accession ACC2026-PRIOR): not assessable" in summary
    assert prior_uid not in "".join(text.split())          # not even wrapped over two lines
    # without an accession number, the date alone
    for ds in datasets:
        del ds.AccessionNumber
    pdf = build_pdf(current, study_info(current, pet_study.datasets), _tall_mip(), {}, sr_uid="1.2.3",
                    seg_uid="1.2.4", prior=prior, prior_mip=_tall_mip())
    assert "versus the prior study of 2026-06-02: not assessable" in _text(pdf)


def test_the_oru_and_fhir_summaries_name_the_prior_as_the_pdf_does(result, pet_study, tmp_path):
    """HBYS users read the ORU's summary and the DiagnosticReport's conclusion: the prior by its date and
    accession there too."""
    prior, current = _compared(result, pet_study)
    prior_uid = prior.result.study_instance_uid
    written = write_reports(current, pet_study.datasets, tmp_path, HbysSettings(), prior=prior)
    words = "PERCIST 1.0 versus the prior study of 2026-06-02 (accession ACC2026-PRIOR): not assessable"
    oru = hl7.parse(written["oru"].read_bytes().decode("utf-8").replace("\r", "\n").strip().replace("\n", "\r"))
    summary = "".join(str(field) for obx in oru.segments("OBX") if str(obx[3]).startswith("121111")
                      for field in obx[5])
    assert words in summary and prior_uid not in summary
    bundle = json.loads(written["fhir_bundle"].read_text())
    conclusion, = [e["resource"]["conclusion"] for e in bundle["entry"]
                   if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert words in conclusion and prior_uid not in conclusion
