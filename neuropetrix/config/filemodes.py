"""Who may read what the node writes: the database (password and token hashes, patient names), the
keys, stored DICOM and results are the node's alone. Every command runs under a umask that makes this
so (files 0600, folders 0700), and the node refuses to start on a data folder that others can enter:
inner modes do not matter when nobody else can get past the folder.

A site whose PACS reader must read stored DICOM and results names its group in `node.data_group`:
the data folder is then that group's (set-gid, so that what is made inside is the group's too), the
node writes under umask 027 (files 0640, folders 0750), and the database stays 0600 (SQLite gives its
journal and WAL files the database file's mode). Key files are always created 0600.
"""
from __future__ import annotations

import grp
import os
import shutil
import stat
from pathlib import Path

from neuropetrix.config.loader import ConfigError

PRIVATE_UMASK = 0o077
GROUP_UMASK = 0o027


def apply_private_umask() -> None:
    """Make everything this process creates from now on the node user's alone."""
    os.umask(PRIVATE_UMASK)


def refuse_if_open(path: Path, mask: int, fix: str) -> None:
    """PermissionError when `path` grants any of the `mask` bits (0o077: group and others)."""
    mode = path.stat().st_mode & 0o777
    if mode & mask:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}); {fix}")


def prepare_data_dir(data_dir: Path, group: str | None, private_files: tuple[Path, ...] = ()) -> None:
    """Create the data folder private (or `group`'s), refuse one that others can read, and create
    `private_files` (the SQLite database) 0600 before anyone else does. With a group, switches this
    process to umask 027 afterwards. Raises PermissionError, or ConfigError for an unknown group."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if group is None:
        refuse_if_open(data_dir, 0o077, f"chmod 700 {data_dir}, or set node.data_group for a reader group")
        return
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"node.data_group: no group named {group!r}") from None
    refuse_if_open(data_dir, 0o007, f"chmod 2750 {data_dir}")
    if data_dir.stat().st_gid != gid:
        shutil.chown(data_dir, group=gid)
    os.chmod(data_dir, stat.S_IMODE(data_dir.stat().st_mode) | stat.S_ISGID | 0o050)    # g+rxs
    for path in private_files:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
    os.umask(GROUP_UMASK)
