"""Each version's files as the analysis child writes them (analysis_runner.analyze_into on the engine
tests' study): the PDF says PRELIMINARY on every page or names the signer (text read back by
Ghostscript), a research route's automatic final, new UIDs per version, refusals that name the cause."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import hl7
import pydicom
import pytest

from neuropetrix.analysis.errors import AnalysisError
from neuropetrix.config.loader import parse_settings
from neuropetrix.engine.analysis_runner import analyze_into
from neuropetrix.engine.review_result import VersionOrder
from neuropetrix.engine.routes.rules import compile_routes
from neuropetrix.reports.version import ResultVersion, Signer
from tests.engine.conftest import petct_study  # noqa: F401  (fixture)
from tests.reports.conftest import dciodvfy
from tests.review.helpers import oru_statuses

SIGNER = Signer("ayse", "Ayse Yilmaz", "Hacettepe Nukleer Tip")


def _pdf_text(path: Path) -> list[str]:
    """The text of each page, extracted by Ghostscript (a reader that shares nothing with reportlab;
    it does not map the embedded font's Turkish letters back, hence ASCII names in this file's PDFs)."""
    if shutil.which("gs") is None:
        pytest.fail("Ghostscript (Debian package ghostscript) is not installed: run `make peers`")
    pages = len(re.findall(rb"/Type /Page\b(?!s)", path.read_bytes()))
    text = []
    for page in range(1, pages + 1):
        done = subprocess.run(["gs", "-q", "-dNOPAUSE", "-dBATCH", "-sDEVICE=txtwrite", f"-dFirstPage={page}",
                               f"-dLastPage={page}", "-sOutputFile=-", str(path)], check=False, capture_output=True,
                              text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        text.append(" ".join(done.stdout.split()))
    return text


def _write(tmp_path: Path, study: Path, name: str, params: dict) -> Path:
    out = tmp_path / name
    out.mkdir()
    analyze_into(study, out, parse_settings("{}", "test", environ={}), params)
    return out


def test_preliminary_signed_and_automatic_final_files(tmp_path: Path, petct_study: Path) -> None:  # noqa: F811
    first = _write(tmp_path, petct_study, "v1", {})
    sr1 = pydicom.dcmread(first / "sr.dcm")
    signed = VersionOrder(ResultVersion("final", 2, SIGNER, str(sr1.SOPInstanceUID), "Lesion 2 is an artefact.",
                                        "2026-12-01T10:00:00Z"), {2: "rejected"})
    second = _write(tmp_path, petct_study, "v2", {"review": signed.to_json()})
    auto = _write(tmp_path, petct_study, "auto", {"sign": "auto"})

    text = _pdf_text(first / "report.pdf")
    assert text and all("PRELIMINARY" in page for page in text)
    text = _pdf_text(second / "report.pdf")
    assert not any("PRELIMINARY" in page for page in text)
    assert "Verified and signed by Ayse Yilmaz, Hacettepe Nukleer Tip on 2026-12-01T10:00:00Z" in text[0]
    assert "Lesion 2 is an artefact." in text[0]
    assert "not verified by a physician" in _pdf_text(auto / "report.pdf")[0]

    sr2, sr_auto = pydicom.dcmread(second / "sr.dcm"), pydicom.dcmread(auto / "sr.dcm")
    assert (sr2.CompletionFlag, sr2.VerificationFlag) == ("COMPLETE", "VERIFIED")
    assert (sr_auto.CompletionFlag, sr_auto.VerificationFlag, sr_auto.PreliminaryFlag) == ("COMPLETE", "UNVERIFIED",
                                                                                           "FINAL")
    assert sr_auto.SOPInstanceUID == sr1.SOPInstanceUID           # version 1 either way: the same object
    for folder in (first, second, auto):
        dciodvfy(folder / "sr.dcm")
        dciodvfy(folder / "seg.dcm")
        dciodvfy(folder / "report.dcm")
    pdf1, pdf2 = (pydicom.dcmread(f / "report.dcm") for f in (first, second))
    assert pdf1.SOPInstanceUID != pdf2.SOPInstanceUID and pdf2.InstanceNumber == 2

    oru1, oru2, oru_auto = ((f / "oru.hl7").read_bytes().decode("utf-8") for f in (first, second, auto))
    assert oru_statuses(oru_auto)[0] == "F" and oru_statuses(oru2)[0] == "F" and oru_statuses(oru1)[0] == "P"
    control = [str(hl7.parse(m).segment("MSH")(10)) for m in (oru1, oru2, oru_auto)]
    assert control[0] == control[2] != control[1]
    assert str(hl7.parse(oru2).segment("OBR")(32)) == "ayse&Yilmaz&Ayse"
    assert "2" not in oru_statuses(oru2)[2] and len((second / "analysis.json").read_text()) > 0
    assert sorted(p.name for p in second.glob("key-*.png")) == ["key-1.png"]
    assert sorted(p.name for p in first.glob("key-*.png")) == ["key-1.png", "key-2.png"]
    assert sorted(p.name for p in first.glob("mip-*.png")) == ["mip-1.png", "mip-2.png"]
    assert (first / "mip-1.png").read_bytes() != (first / "mip-2.png").read_bytes() != (first / "mip.png").read_bytes()


def test_a_decision_on_a_lesion_the_analysis_no_longer_finds_is_refused(tmp_path: Path,
                                                                         petct_study: Path) -> None:  # noqa: F811
    order = VersionOrder(ResultVersion("final", 2, SIGNER), {7: "rejected"})
    with pytest.raises(AnalysisError, match=r"lesion\(s\) \[7\].*review it again"):
        _write(tmp_path, petct_study, "v2", {"review": order.to_json()})
    assert list((tmp_path / "v2").iterdir()) == []                # nothing written


def test_routes_take_sign_auto_or_review_and_refuse_anything_else() -> None:
    def compile_with(analyze) -> list:
        return compile_routes(parse_settings(
            "{routes: [{name: r, match: {modality: PT}, actions: [" + analyze + "]}]}", "test", environ={}))

    assert compile_with("{analyze: {sign: auto}}")[0].actions[0].params == {"sign": "auto"}
    assert compile_with("{analyze: {sign: review}}")[0].actions[0].params == {"sign": "review"}
    assert compile_with("analyze")[0].actions[0].params == {}
    with pytest.raises(Exception, match="sign: auto"):
        compile_with("{analyze: {sign: sometimes}}")


def test_a_preliminary_version_has_no_signer() -> None:
    with pytest.raises(ValueError, match="no signer"):
        ResultVersion("preliminary", 1, SIGNER)
    assert Signer("u", "Ayşe Nur Yılmaz", "").person_name == "Yılmaz^Ayşe Nur"
    assert Signer("u", "Yılmaz^Ayşe", "").person_name == "Yılmaz^Ayşe"
