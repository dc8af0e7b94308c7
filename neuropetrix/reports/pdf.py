"""The one-page PDF report for people: patient and order, key images, the lesion table, the SUV inputs
and the method, drawn with reportlab. With a response to a prior study, a comparison comes first: the
prior's and the current coronal MIPs side by side (same orientation and SUV window) and the before/after
table (target SULpeak, total MTV, total TLG, lesions; the PERCIST category, the Deauville score, the
comparability checks that failed).

Turkish names need glyphs that the PDF base fonts lack (ğ ş ı İ), so DejaVu Sans (shipped with matplotlib)
is embedded. The lesion table is cut to fit one page; the SR carries every lesion.
"""
from __future__ import annotations

import io
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import matplotlib
from pydicom.valuerep import PersonName
from reportlab import rl_config
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

from neuropetrix.analysis.response import Response
from neuropetrix.analysis.results import AnalysisResult
from neuropetrix.reports.comparison import PriorStudy
from neuropetrix.reports.errors import ReportError, require
from neuropetrix.reports.measures import number, response_category, summary, suv_concepts
from neuropetrix.reports.source import StudyInfo
from neuropetrix.reports.version import AUTOMATIC, ResultVersion

FONT, BOLD = "DejaVuSans", "DejaVuSans-Bold"
DIGITS = 4      # significant digits people read in tables; HL7, FHIR and the SR carry more
MAX_LESION_ROWS = 12
MAX_KEY_IMAGES = 3
# With a comparison the page holds two MIPs (each at most this tall) and fewer lesion rows and smaller key
# images, so the fullest case still fits one page (tests/reports/test_comparison_pdf.py).
COMPARISON_MIP_MAX_HEIGHT_MM = 76
COMPARISON_LESION_ROWS = 6
COMPARISON_KEY_IMAGE_MM = 28


# Streams (pictures, fonts, pages) written binary, Flate only: reportlab's ASCII85 encoder is pure
# Python without its optional C accelerator, and took more than half of the report's time for a file
# a fifth larger. Every PDF reader takes binary streams; the setting is reportlab's global one.
rl_config.useA85 = 0


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


def _image(png: bytes, width: float, max_height: float | None = None) -> Image:
    """The picture `width` wide, or narrower where it would be taller than `max_height`."""
    image = Image(io.BytesIO(png))
    if max_height is not None:
        width = min(width, max_height * image.imageWidth / image.imageHeight)
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


def _change(before: float | None, after: float | None, unit: str = "") -> str:
    """after − before, and in % of before on a second line."""
    if before is None or after is None:
        return "—"
    percent = "" if before == 0 else f"\n{100.0 * (after - before) / before:+.1f} %"
    return f"{after - before:+.3g}{unit}{percent}"


_CELL = ParagraphStyle("cell", fontName=FONT, fontSize=7, leading=8.5)
_HEAD = ParagraphStyle("head", fontName=BOLD, fontSize=7, leading=8.5)
COMPARISON_MIP_MM = 47


def _comparison_rows(result: AnalysisResult, response: Response, prior: PriorStudy, info: StudyInfo,
                     heading: ParagraphStyle) -> list[list]:
    """The before/after table: prior, current and change of each number, then the category."""
    sul = {"lbm_janmahasatian": "SUL Janma", "lbm_james": "SUL James"}.get(response.sul_type, response.sul_type)
    category = response_category(result)
    verdict = "not assessable" if response.category is None or category is None else \
        f"{response.category} ({category.meaning})"
    deauville = response.deauville
    numbers = [
        (f"SULpeak, hottest lesion ({sul})", response.sul_peak_before, response.sul_peak_after, ""),
        ("Total MTV ml", response.tmtv_ml_before, response.tmtv_ml_after, " ml"),
        ("Total TLG", response.tlg_before, response.tlg_after, ""),
        ("Liver SULmean", response.liver_sul_before, response.liver_sul_after, "")]
    head = ["", f"Prior<br/>{prior.study_date}", f"Current<br/>{info.study_datetime:%Y-%m-%d}", "Change"]
    rows: list[list] = [[Paragraph(text, _HEAD) for text in head]]
    rows += [[Paragraph(xml_escape(label), _CELL), _fmt(before), _fmt(after), _change(before, after, unit)]
             for label, before, after, unit in numbers]
    rows.insert(4, ["Lesions", str(len(prior.result.lesions)), str(len(result.lesions)),
                    f"{len(response.new_lesions)} new"])
    rows += [[Paragraph(f"{xml_escape(response.criteria)}: {xml_escape(verdict)}", heading), "", "", ""],
             [Paragraph(xml_escape(f"Deauville (quantitative): {deauville.score or '—'}, {deauville.note}"),
                        _CELL), "", "", ""]]
    rows += [[Paragraph(xml_escape(f"Not assessable: {reason}"), _CELL), "", "", ""]
             for reason in response.not_assessable]
    return rows


def _comparison(result: AnalysisResult, response: Response, prior: PriorStudy, prior_mip: bytes, mip: bytes,
                info: StudyInfo, heading: ParagraphStyle) -> list:
    """The comparison block: the two MIPs side by side, the before/after table beside them."""
    caption = ParagraphStyle("caption", fontName=BOLD, fontSize=7, leading=9, alignment=1)
    width = COMPARISON_MIP_MM * mm
    pictures = Table([[Paragraph(f"Prior {prior.study_date}", caption),
                       Paragraph(f"Current {info.study_datetime:%Y-%m-%d}", caption)],
                      [_image(prior_mip, width, COMPARISON_MIP_MAX_HEIGHT_MM * mm),
                       _image(mip, width, COMPARISON_MIP_MAX_HEIGHT_MM * mm)]],
                     colWidths=[width + 2 * mm] * 2, hAlign="LEFT")
    pictures.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                  ("RIGHTPADDING", (0, 0), (-1, -1), 2)]))
    rows = _comparison_rows(result, response, prior, info, heading)
    table = _grid(rows, [25 * mm, 19 * mm, 19 * mm, 21 * mm])
    table.setStyle(TableStyle([("SPAN", (0, r), (-1, r)) for r in range(6, len(rows))] +
                              [("LEFTPADDING", (0, 0), (-1, -1), 3), ("RIGHTPADDING", (0, 0), (-1, -1), 3)]))
    left = 2 * (width + 2 * mm)
    block = Table([[pictures, table]], colWidths=[left, 182 * mm - left], hAlign="LEFT")
    block.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))
    return [Paragraph(f"Comparison with the prior study ({xml_escape(response.criteria)})", heading), block]


def build_pdf(result: AnalysisResult, info: StudyInfo, mip: bytes, key_images: dict[int, bytes],
              sr_uid: str, seg_uid: str | None, version: ResultVersion = AUTOMATIC,
              prior: PriorStudy | None = None, prior_mip: bytes | None = None) -> bytes:
    """The report as PDF bytes (reproducible: no creation time or random id inside); preliminary
    versions say so on every page, signed ones name the signer. `prior` and its MIP (`prior_mip`, drawn
    as `mip` is) add the comparison with the study `result.response` was computed against."""
    require((prior is None) == (prior_mip is None), "the prior study and its MIP go together")
    require(prior is None or result.response is not None, "a prior study without the response to it")
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
    comparing = prior is not None and prior_mip is not None and result.response is not None
    rows_shown = COMPARISON_LESION_ROWS if comparing else MAX_LESION_ROWS
    lesions = sorted(result.lesions, key=lambda les: les.suv_max, reverse=True)
    lesion_rows = [["#", f"{suv.meaning} max", "mean", "peak", "Volume ml", "TLG", "Centroid x, y, z mm"]]
    for les in lesions[:rows_shown]:
        lesion_rows.append([str(les.label), _num(les.suv_max), _num(les.suv_mean), _num(les.suv_peak),
                            _num(les.volume_ml), _num(les.tlg),
                            ", ".join(f"{c:.0f}" for c in les.centroid_mm)])
    if len(lesions) > rows_shown:
        lesion_rows.append(["…", f"{len(lesions) - rows_shown} more lesion(s) in the DICOM SR", "", "", "",
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

    key_width = (COMPARISON_KEY_IMAGE_MM if comparing else 40) * mm
    keys = [_image(png, key_width) for _, png in list(key_images.items())[:MAX_KEY_IMAGES]]
    right = [Paragraph("Key images", heading), Table([keys], hAlign="LEFT")] if keys else []
    right += [Paragraph("Lesions (highest SUV first)", heading),
              _grid(lesion_rows, [8 * mm, 20 * mm, 14 * mm, 14 * mm, 17 * mm, 15 * mm, 32 * mm]),
              Paragraph("Whole body", heading),
              _grid(totals, [17 * mm, 10 * mm, 24 * mm, 28 * mm, 26 * mm, 15 * mm], header=False)]
    if comparing and prior is not None and prior_mip is not None and result.response is not None:
        # the current MIP stands beside the prior's
        layout: list = [*_comparison(result, result.response, prior, prior_mip, mip, info, heading), *right]
    else:
        table = Table([[_image(mip, 55 * mm), right]], colWidths=[60 * mm, 122 * mm], hAlign="LEFT")
        table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))
        layout = [table]
    story = [
        Paragraph("PET/CT quantitative report", title),
        _grid(patient, [26 * mm, 62 * mm, 22 * mm, 72 * mm], header=False),
        Spacer(1, 3 * mm),
        *layout,
        # the prior by its date and accession, which a physician can look up, not its UID
        Paragraph("Summary", heading), Paragraph(xml_escape(summary(result, "the prior study" if prior is None
                                                                    else prior.description)), body),
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
