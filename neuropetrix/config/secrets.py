"""Secrets the node needs but nobody should have to invent: taken from the config when given, else
generated once into a key file of the data folder (mode 0600). There is no built-in secret."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from neuropetrix.config.filemodes import refuse_if_open

# Every secret generated into the data folder is named *.key: `backup` copies them all, `doctor` checks
# that only the node's user can read them.
KEY_FILES = "*.key"


def load_secret(configured: str | None, path: Path) -> str:
    """The configured secret, else the one in `path`, created (0600) on first use."""
    if configured:
        return configured
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key_file(path)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        key = secrets.token_urlsafe(48)
        f.write(key + "\n")
    return key


def _read_key_file(path: Path) -> str:
    refuse_if_open(path, 0o077, "chmod 600 it")
    key = path.read_text(encoding="ascii").strip()
    if len(key) < 32:
        raise ValueError(f"{path} holds a key shorter than 32 characters")
    return key
