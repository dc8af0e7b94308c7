"""Phantom studies written once per test session (each variant on first use)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from neuropetrix.analysis.volumes import Volume, choose_ct, choose_pet, load_volume, read_folder
from tests.support.phantom import Phantom, standard_phantom, write_phantom


@pytest.fixture(scope="session")
def phantom() -> Phantom:
    return standard_phantom()


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory, phantom: Phantom) -> Callable[..., Path]:
    """`phantom_dir(variant, with_ct=False)` → a folder holding the standard phantom in that variant."""
    written: dict[tuple[str, bool], Path] = {}

    def get(variant: str = "siemens_bqml", with_ct: bool = False) -> Path:
        key = (variant, with_ct)
        if key not in written:
            folder = tmp_path_factory.mktemp(f"{variant}{'_ct' if with_ct else ''}")
            write_phantom(phantom, folder, variant, with_ct=with_ct)
            written[key] = folder
        return written[key]
    return get


@pytest.fixture(scope="session")
def volumes(phantom_dir: Callable[..., Path]) -> tuple[Volume, Volume]:
    """The Siemens phantom's PET and CT volumes (CT pixels decoded)."""
    series = read_folder(phantom_dir("siemens_bqml", with_ct=True))
    pet = load_volume(choose_pet(series))
    ct = load_volume(choose_ct(series, str(pet.header.FrameOfReferenceUID)))  # type: ignore[arg-type]
    return pet, ct
