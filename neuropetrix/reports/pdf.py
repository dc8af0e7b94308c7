"""The one-page PDF report for people: patient and order, key images, the lesion table, the SUV inputs
and the method, drawn with reportlab.

Turkish names need glyphs that the PDF base fonts lack (ğ ş ı İ), so DejaVu Sans (shipped with matplotlib)
is embedded. The lesion table is cut to fit one page; the SR carries every lesion.
"""
from __future__ import annotations

import io
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import matplotlib
from pydicom.valuerep import PersonName
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import (
    Image,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from neuropetrix.analysis.results import AnalysisResult
from neuropetrix.reports.errors import ReportError
from neuropetrix.reports.measures import number, summary, suv_concepts
from neuropetrix.reports.source import StudyInfo
from neuropetrix.reports.version import AUTOMATIC, ResultVersion

FONT, BOLD = "DejaVuSans", "DejaVuSans-Bold"
DIGITS = 4      # significant digits people read in tables; HL7, FHIR and the SR carry more
MAX_LESION_ROWS = 12
MAX_KEY_IMAGES = 3


def _register_fonts() -> None:
    if FONT in pdfmetrics.getRegisteredFontNames():
        return
    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    pdfmetrics.registerFont(TTFont(FONT, str(fonts / "DejaVuSans.ttf")))
    pdfmetrics.registerFont(TTFont(BOLD, str(fonts / "DejaVuSans-Bold.ttf")))


def _fmt(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return _num(value)
    return str(value)


def _num(value: float) -> str:
    return number(value, DIGITS)


def _person(pn: str | None) -> str:
    """A DICOM PN (family^given^middle^prefix^suffix) as people write it."""
    if not pn:
        return "—"
    name = PersonName(pn)
    return ", ".join(p for p in (str(name.family_name), str(name.given_name)) if p) or pn


def _grid(rows: list[list[str]], widths: list[float], header: bool = True) -> Table:
    table = Table(rows, colWidths=widths, hAlign="LEFT")
    style = [("FONT", (0, 0), (-1, -1), FONT, 7), ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
             ("VALIGN", (0, 0), (-1, -1), "TOP"), ("TOPPADDING", (0, 0), (-1, -1), 1),
             ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]
    if header:
        style += [("FONT", (0, 0), (-1, 0), BOLD, 7), ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef4"))]
    table.setStyle(TableStyle(style))
    return table


def _image(png: bytes, width: float) -> Image:
    image = Image(io.BytesIO(png))
    image.drawHeight = width * image.imageHeight / image.imageWidth
    image.drawWidth = width
    return image


def _sign_off(version: ResultVersion) -> str:
    """The line that says whose result this is: unverified, automatic final, or signed by whom."""
    if version.status == "preliminary":
        return ("PRELIMINARY. Automated measurement by NeuroPETRIX, not a diagnosis: to be read and confirmed by "
                "a nuclear medicine physician.")
    if version.signer is None:
        return "Automatic final result (research route): not verified by a physician."
    who = version.signer.display_name or version.signer.username
    org = f", {version.signer.organisation}" if version.signer.organisation else ""
    kind = "Corrected and signed" if version.status == "amended" else "Verified and signed"
    return f"{kind} by {who}{org}" + (f" on {version.signed_at}" if version.signed_at else "") + \
        f" (version {version.version})."


def _stamp(canvas, version: ResultVersion) -> None:
    """PRELIMINARY across the top of a page whose result no physician has signed."""
    if version.status != "preliminary":
        return
    canvas.saveState()
    canvas.setFont(BOLD, 11)
    canvas.setFillColor(colors.HexColor("#b00020"))
    width, height = A4
    canvas.drawCentredString(width / 2, height - 8 * mm, "PRELIMINARY — not verified by a physician")
    canvas.restoreState()


def build_pdf(result: AnalysisResult, info: StudyInfo, mip: bytes, key_images: dict[int, bytes],
              sr_uid: str, seg_uid: str | None, version: ResultVersion = AUTOMATIC) -> bytes:
    """The report as PDF bytes (reproducible: no creation time or random id inside); preliminary
    versions say so on every page, signed ones name the signer."""
    _register_fonts()
    suv, _ = suv_concepts(result)
    body = ParagraphStyle("body", fontName=FONT, fontSize=7.5, leading=9.5)
    title = ParagraphStyle("title", fontName=BOLD, fontSize=13, leading=16)
    heading = ParagraphStyle("heading", fontName=BOLD, fontSize=9, leading=11, spaceBefore=3)

    patient = [
        ["Patient", f"{info.patient_family_name}, {info.patient_given_name}", "Accession",
         info.accession_number or "none"],
        ["Patient ID", f"{info.patient_id}{' (TCKN)' if info.is_tckn else ''}", "Study date",
         info.study_datetime.strftime("%Y-%m-%d %H:%M")],
        ["Birth date / sex", f"{_fmt(info.patient_birth_date)} / {_fmt(info.patient_sex)}", "Institution",
         _fmt(info.institution_name)],
        ["Study", _fmt(info.study_description), "Referring", _person(info.referring_physician)],
    ]
    lesions = sorted(result.lesions, key=lambda les: les.suv_max, reverse=True)
    lesion_rows = [["#", f"{suv.meaning} max", "mean", "peak", "Volume ml", "TLG", "Centroid x, y, z mm"]]
    for les in lesions[:MAX_LESION_ROWS]:
        lesion_rows.append([str(les.label), _num(les.suv_max), _num(les.suv_mean), _num(les.suv_peak),
                            _num(les.volume_ml), _num(les.tlg),
                            ", ".join(f"{c:.0f}" for c in les.centroid_mm)])
    if len(lesions) > MAX_LESION_ROWS:
        lesion_rows.append(["…", f"{len(lesions) - MAX_LESION_ROWS} more lesion(s) in the DICOM SR", "", "", "",
                            "", ""])
    liver = result.liver
    totals = [["Lesions", str(len(result.lesions)), "Total MTV ml", _num(result.tmtv_ml),
               "Total TLG", _num(result.tlg_total)],
              [f"{suv.meaning} max", _fmt(result.suv_max),
               "Liver mean ± SD", "—" if liver is None else f"{_num(liver.suv_mean)} ± {_num(liver.suv_sd)}",
               "PERCIST threshold", "—" if liver is None else _num(liver.percist_threshold)]]
    s = result.suv
    inputs = [["SUV type", s.suv_type, "Units / decay corr.", f"{s.units} / {s.decay_correction}"],
              ["Radionuclide", _fmt(s.radionuclide), "Half-life s", _fmt(s.half_life_s)],
              ["Injected dose MBq", _fmt(None if s.injected_dose_bq is None else s.injected_dose_bq / 1e6),
               "Injection", _fmt(s.injection_datetime)],
              ["Reference time", _fmt(s.reference_datetime), "Reference source", _fmt(s.reference_source)],
              ["Weight kg / height m", f"{_fmt(s.patient_weight_kg)} / {_fmt(s.patient_height_m)}",
               "Scale factor", _fmt(s.scale_factor)],
              ["Vendor", _fmt(s.vendor), "Notes", "; ".join(s.notes) or "—"]]
    seg = result.segmentation
    method = (f"{seg.algorithm_name} {seg.algorithm_version}: {seg.method}"
              f"{'' if seg.threshold is None else f', threshold {seg.threshold:g}'}"
              f"{'' if seg.seed_threshold is None else f', seed SUV {seg.seed_threshold:g}'}, minimum volume "
              f"{seg.min_volume_ml:g} ml{'' if seg.model_file is None else f', model {Path(seg.model_file).name}'}; "
              f"run on {result.device}, NeuroPETRIX {result.software_version or 'unknown'}. "
              f"DICOM SR {sr_uid}" + ("" if seg_uid is None else f", SEG {seg_uid}") + ".")

    keys = [_image(png, 40 * mm) for _, png in list(key_images.items())[:MAX_KEY_IMAGES]]
    right = [Paragraph("Key images", heading), Table([keys], hAlign="LEFT")] if keys else []
    right += [Paragraph("Lesions (highest SUV first)", heading),
              _grid(lesion_rows, [8 * mm, 20 * mm, 14 * mm, 14 * mm, 17 * mm, 15 * mm, 32 * mm]),
              Paragraph("Whole body", heading),
              _grid(totals, [17 * mm, 10 * mm, 24 * mm, 28 * mm, 26 * mm, 15 * mm], header=False)]
    layout = Table([[_image(mip, 55 * mm), right]], colWidths=[60 * mm, 122 * mm], hAlign="LEFT")
    layout.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))
    story = [
        Paragraph("PET/CT quantitative report", title),
        _grid(patient, [26 * mm, 62 * mm, 22 * mm, 72 * mm], header=False),
        Spacer(1, 3 * mm),
        layout,
        Paragraph("Summary", heading), Paragraph(xml_escape(summary(result)), body),
        Paragraph("SUV inputs", heading), _grid(inputs, [30 * mm, 61 * mm, 30 * mm, 61 * mm], header=False),
        Paragraph("Method", heading), Paragraph(xml_escape(method), body),
        Spacer(1, 2 * mm),
        *([Paragraph("Impression", heading), Paragraph(xml_escape(version.impression), body)]
          if version.impression else []),
        Paragraph(xml_escape(_sign_off(version)), heading if version.verified else body),
    ]
    buffer = io.BytesIO()
    pages: list[int] = []
    doc = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=14 * mm, rightMargin=14 * mm, topMargin=12 * mm,
                            bottomMargin=12 * mm, title="PET/CT quantitative report", author="NeuroPETRIX",
                            invariant=True)
    def page(canvas, d) -> None:
        pages.append(d.page)
        _stamp(canvas, version)

    doc.build(story, onFirstPage=page, onLaterPages=page)
    if len(pages) != 1:
        raise ReportError(f"the report does not fit on one page ({len(pages)} pages)")
    return buffer.getvalue()
