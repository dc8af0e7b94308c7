"""The signing key: generated once, private (0600), refused when others can read it."""
from __future__ import annotations

import os

import pytest

from neuropetrix.api.tokens import KEY_FILE, load_signing_key


def test_signing_key_file_is_private_and_reused(tmp_path):
    key = load_signing_key(None, tmp_path)
    path = tmp_path / KEY_FILE
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert len(key) >= 32 and load_signing_key(None, tmp_path) == key
    assert load_signing_key("k" * 32, tmp_path) == "k" * 32
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_signing_key(None, tmp_path)
