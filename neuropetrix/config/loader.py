"""Read the YAML file, apply `NEUROPETRIX_<SECTION>__<KEY>` overrides, validate.

Errors come out as one `ConfigError` whose message names the file and the key, because an operator
reading a failed start-up needs to know which line to fix, not a pydantic traceback.
"""
from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from neuropetrix.config.settings import Settings

ENV_PREFIX = "NEUROPETRIX_"


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


def default_config_text() -> str:
    """The embedded default configuration (the same text as the repository's config/node.yaml)."""
    return resources.files("neuropetrix.config").joinpath("default.yaml").read_text(encoding="utf-8")


_NULLS = ("", "null", "~", "Null", "NULL")


def _key_annotation(path: list[str]) -> Any:
    """The type the settings schema declares for `path` (None when the path is not a key of it)."""
    model: Any = Settings
    annotation: Any = None
    for part in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = annotation
    return annotation


def _is_text(annotation: Any) -> tuple[bool, bool]:
    """(whether the key holds text — str, Path or a Literal of strings, optionally None —, whether None
    is allowed)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        return len(kinds) == 1 and _is_text(kinds[0])[0], type(None) in args
    if typing.get_origin(annotation) is typing.Literal:
        return all(isinstance(a, str) for a in args), None in args
    return annotation in (str, Path), False


def _env_value(path: list[str], raw: str) -> Any:
    """An environment value read as its key's type: text keys take the text as written (so
    `VERSION=2.5` is "2.5", not the number 2.5); other keys (numbers, booleans, lists) are parsed as YAML,
    whose errors pydantic then reports against the key."""
    text, nullable = _is_text(_key_annotation(path))
    if text:
        return None if nullable and raw in _NULLS else raw
    return yaml.safe_load(raw) if raw != "" else None


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """NEUROPETRIX_NODE__DICOM_PORT=11113 → {"node": {"dicom_port": 11113}} (values read as the key's
    type, see `_env_value`)."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        if not all(path):
            raise ConfigError(f"environment variable {name}: empty key")
        try:
            value = _env_value(path, raw)
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
