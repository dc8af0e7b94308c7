"""`neuropetrix analyze` as a user runs it: the console script in a subprocess."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from neuropetrix.analysis.devices import cuda_available
from tests.support.phantom import small_spec, standard_phantom, write_phantom

NEUROPETRIX = Path(sys.executable).parent / "neuropetrix"


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NEUROPETRIX), "analyze", *map(str, args)], capture_output=True, text=True,
                          timeout=240, check=False)


def test_analyze_writes_analysis_json(phantom_dir, tmp_path: Path):
    config = tmp_path / "node.yaml"
    config.write_text("analysis: {method: fixed, threshold: 3.0, min_volume_ml: 0.1, suv_type: bw}\n")
    done = _run(phantom_dir(), "--out", tmp_path / "out", "--device", "cpu", "--config", config)
    assert done.returncode == 0, done.stderr
    assert "5 lesion(s)" in done.stdout
    doc = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert doc["suv_type"] == "bw" and doc["lesion_count"] == 5
    assert doc["suv_inputs"]["injected_dose_bq"] == 370e6 and doc["suv_inputs"]["reference_source"] == "series"
    assert doc["liver_reference"]["suv_mean"] == pytest.approx(2.0, rel=0.005)
    assert doc["suv_max"] == pytest.approx(10.0, rel=0.005)
    assert doc["tmtv_ml"] == pytest.approx(sum(les["volume_ml"] for les in doc["lesions"]))
    for lesion in doc["lesions"]:
        assert {"suv_max", "suv_mean", "suv_peak", "volume_ml", "tlg", "centroid_mm"} <= set(lesion)
    assert set(doc["timings_s"]) >= {"read", "suv", "segmentation", "measures"}


def _tiny(folder: Path, **kw) -> Path:
    write_phantom(standard_phantom(small_spec(pet_matrix=16, pet_spacing_mm=15.0, pet_slices=6)), folder, **kw)
    return folder


def _broken(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    missing = _tiny(tmp_path / "missing")
    (missing / "PT" / "PT0003.dcm").unlink()
    unreadable = _tiny(tmp_path / "unreadable")
    (unreadable / "PT" / "PT0002.dcm").write_bytes(b"\x00" * 64)
    empty = tmp_path / "empty"
    empty.mkdir()
    no_weight = _tiny(tmp_path / "no_weight", customize=lambda ds, k: delattr(ds, "PatientWeight"))
    return {"unreadable": (unreadable, "PT0002.dcm: not a readable DICOM file"),
            "no PET": (empty, "no PET series"),
            "missing slice": (missing, "missing slice"),
            "no weight": (no_weight, "PatientWeight (0010,1030)")}


def test_errors_are_one_line_and_a_non_zero_exit(tmp_path: Path):
    for case, (folder, expected) in _broken(tmp_path).items():
        done = _run(folder, "--out", tmp_path / "out", "--device", "cpu")
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0, case
        assert len(lines) == 1 and expected in lines[0] and "Traceback" not in done.stderr, (case, done.stderr)


@pytest.mark.skipif(cuda_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line(tmp_path: Path):
    done = _run(_tiny(tmp_path / "s"), "--out", tmp_path / "out", "--device", "cuda")
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert "no usable CUDA device" in done.stderr


def test_analyze_loads_neither_the_database_nor_the_network_stack(tmp_path: Path):
    """`neuropetrix analyze` imports what the analysis and its reports need: no alembic/SQLAlchemy
    (about a second of imports), no torch unless a model or a GPU is asked for."""
    code = ("import sys; from neuropetrix.cli import main; code = main(sys.argv[1:]); "
            "print(sorted(m for m in ('alembic', 'sqlalchemy', 'torch', 'aiohttp') if m in sys.modules)); "
            "sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, "analyze", str(_tiny(tmp_path / "s")), "--out",
                           str(tmp_path / "out"), "--device", "cpu"], capture_output=True, text=True, timeout=240,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "analysis.json").is_file()
