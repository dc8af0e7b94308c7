"""Transform steps as configured, checked and composed into one function over a dataset.

Steps: `charset_utf8`, `deidentify` or `{deidentify: {keep: [...]}}`, `{set: {Keyword: value}}`,
`{copy: {Target: Source}}`, `{remove: [Keyword]}`, `{map: {Keyword: {old: new}}}`. They run in order.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydicom.dataset import Dataset

from neuropetrix.engine.transforms import coerce
from neuropetrix.engine.transforms.charset import to_utf8
from neuropetrix.engine.transforms.deidentify import Deidentifier
from neuropetrix.engine.transforms.errors import TransformError

Transform = Callable[[Dataset], None]
_COERCIONS: dict[str, Callable[[Dataset, Any], None]] = {
    "set": coerce.set_values, "copy": coerce.copy_values, "remove": coerce.remove_values,
    "map": coerce.map_values}
KNOWN = ("charset_utf8", "deidentify", *_COERCIONS)


def _step(raw: Any, secret: str) -> Transform:
    if isinstance(raw, str):
        kind, body = raw, None
    elif isinstance(raw, dict) and len(raw) == 1:
        kind, body = next(iter(raw.items()))
    else:
        raise TransformError(f"a step is a name or a one-key mapping, not {raw!r}")
    if kind == "charset_utf8" and body is None:
        return to_utf8
    if kind == "deidentify":
        body = body or {}
        if not isinstance(body, dict) or set(body) - {"keep"}:
            raise TransformError("deidentify: the only option is keep: [keywords]")
        return Deidentifier(secret, body.get("keep", []))
    if kind in _COERCIONS:
        coerce.check(kind, body)
        apply = _COERCIONS[kind]
        return lambda ds: apply(ds, body)
    raise TransformError(f"unknown step {kind!r} (known: {', '.join(KNOWN)})")


CHECK_ONLY_SECRET = "checking the steps only; never transforms data"


def check_steps(steps: Sequence[Any]) -> None:
    """Refuse steps that cannot work (raises TransformError). Needs no pseudonym key, so checking a
    configuration (`routes test`) creates no key file."""
    build(steps, CHECK_ONLY_SECRET)


def build(steps: Sequence[Any], secret: str) -> Transform | None:
    """One function applying `steps` in order, or None when there are none."""
    if not isinstance(steps, list | tuple):
        raise TransformError("transforms: give a list of steps")
    funcs = [_step(s, secret) for s in steps]
    if not funcs:
        return None

    def run(ds: Dataset) -> None:
        for f in funcs:
            f(ds)
    return run
