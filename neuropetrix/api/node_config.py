"""The node's settings as the API's handlers read them (limits, routes and peers, the data folder)."""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from neuropetrix.config.settings import Settings

SETTINGS = web.AppKey("settings", Settings)


def results_dir(settings: Settings) -> Path:
    """Where the engine writes each study's result files (results/<study uid>/)."""
    return settings.node.data_dir / "results"
