"""The package as a site installs it: `pip install .` without extras must be able to import every module,
and every third-party module the code imports must be a dependency the package itself declares (not one
that happens to come with another, or with the test extra)."""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "neuropetrix"

IMPORT_ALL = """
import importlib, pkgutil, sys
import neuropetrix
failed = []
for module in pkgutil.walk_packages(neuropetrix.__path__, "neuropetrix."):
    if module.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(module.name)
    except Exception as exc:
        failed.append(f"{module.name}: {type(exc).__name__}: {exc}")
print(neuropetrix.__file__)
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_runtime() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_normalise(re.split(r"[\[=<>!~; ]", dep, maxsplit=1)[0]) for dep in project["dependencies"]}


def imported_top_level() -> dict[str, Path]:
    """Every absolute top-level module imported anywhere in the package (migrations included)."""
    found: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], path)
    return found


def test_every_imported_distribution_is_declared() -> None:
    """google.oauth2 and requests came with pyfcm, hl7 with the test extra: none was declared."""
    owners = metadata.packages_distributions()
    declared = declared_runtime()
    missing = []
    for module, where in sorted(imported_top_level().items()):
        if module in sys.stdlib_module_names or module == "neuropetrix":
            continue
        dists = {_normalise(d) for d in owners.get(module, [])}
        assert dists, f"{module} (imported in {where.relative_to(ROOT)}) is not installed here"
        if not dists & declared:
            missing.append(f"{module} ({', '.join(sorted(dists))}) imported in {where.relative_to(ROOT)}")
    assert not missing, "imported but not in [project] dependencies: " + "; ".join(missing)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_plain_install_imports_every_module(tmp_path: Path) -> None:
    """A fresh venv, `pip install .` (no extras, pip's cache and the local wheel folders as configured),
    then every module imported from the installed copy, not from this checkout."""
    source = tmp_path / "source"                # a copy: the build leaves build/ and *.egg-info behind
    shutil.copytree(PACKAGE, source / "neuropetrix", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-compile", str(source)],
                             capture_output=True, text=True, timeout=540, env=env, cwd=tmp_path)
    assert install.returncode == 0, install.stderr[-3000:]
    imported = subprocess.run([str(python), "-c", IMPORT_ALL], capture_output=True, text=True, timeout=180,
                              env=env, cwd=tmp_path)
    assert imported.returncode == 0, imported.stdout[-3000:] + imported.stderr[-3000:]
    assert str(venv) in imported.stdout.splitlines()[0]      # the installed copy, not the checkout
