"""Read the YAML file, apply `NEUROPETRIX_<SECTION>__<KEY>` overrides, validate.

Errors come out as one `ConfigError` whose message names the file and the key, because an operator
reading a failed start-up needs to know which line to fix, not a pydantic traceback.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from neuropetrix.config.settings import Settings

ENV_PREFIX = "NEUROPETRIX_"


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


def default_config_text() -> str:
    """The embedded default configuration (the same text as the repository's config/node.yaml)."""
    return resources.files("neuropetrix.config").joinpath("default.yaml").read_text(encoding="utf-8")


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """NEUROPETRIX_NODE__DICOM_PORT=11113 → {"node": {"dicom_port": 11113}} (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        if not all(path):
            raise ConfigError(f"environment variable {name}: empty key")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment variable {name}: cannot parse value: {exc}") from None
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name}: conflicts with another override")
        node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{key}: {msg}")
    return "; ".join(lines)


def parse_settings(text: str, source: str = "<config>",
                   environ: Mapping[str, str] | None = None) -> Settings:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    data = _merge(data, _env_overrides(os.environ if environ is None else environ))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None


def load_settings(path: str | Path | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Load `path`, or the embedded default when None. Relative data_dir is kept relative to the cwd."""
    if path is None:
        return parse_settings(default_config_text(), "default configuration", environ)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read configuration: {exc.strerror}") from None
    return parse_settings(text, str(p), environ)
