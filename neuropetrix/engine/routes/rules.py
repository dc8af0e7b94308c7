"""Routing rules: the `routes:` section compiled into conditions and actions, checked at start-up.

A rule fires for a study when at least one of its series satisfies every condition (study-level
attributes are the same in every series, so `{modality: PT, calling_ae: PETCT1}` means "a PET series
sent by PETCT1"). A condition's value says how it compares:

    PT                      exact (the whole value, case-sensitive as DICOM code strings are)
    [PT, CT]                any of a list
    "*WB*"                  wildcard: * and ? (case-insensitive), the whole value
    {regex: "(?i)whole"}    a regular expression found anywhere in the value
    {">=": 60}              numeric: one or more of < <= > >= == != (all must hold)

Every problem is refused with a message naming the rule, because an operator who reads
"routes[2] 'research': …" at start-up knows which lines to fix.
"""
from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from neuropetrix.config.loader import ConfigError
from neuropetrix.config.settings import Route, Settings
from neuropetrix.engine.notifications import notify_params
from neuropetrix.engine.routes.facts import SeriesFacts, attribute_names, is_attribute
from neuropetrix.engine.transforms import TransformError, check_steps

ACTIONS = ("analyze", "forward", "hl7", "fhir", "notify")
RESULT_OBJECTS = ("seg", "sr", "pdf")
OBJECTS = ("study", *RESULT_OBJECTS, "all")
_NUMERIC: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne}


class RouteError(ConfigError):
    """A rule cannot be used; the message names it (refused at start-up like any bad key)."""


@dataclass(frozen=True)
class Condition:
    key: str
    describe: str                              # how it compares, for `routes test`
    test: Callable[[Any], bool]

    def check(self, facts: SeriesFacts) -> tuple[bool, str]:
        """(holds, why) for one series."""
        value = facts.value(self.key)
        values = value if isinstance(value, list) else [value]
        holds = any(v is not None and self.test(v) for v in values)
        shown = "missing" if value is None else repr(value)
        return holds, f"{self.key}={shown} {'matches' if holds else 'does not match'} {self.describe}"


@dataclass(frozen=True)
class Action:
    """One action of a rule, as the engine turns it into a job."""

    kind: str                                  # analyze | forward | hl7 | fhir | notify
    destination: str                           # analysis | dicom:<peer> | hl7:hbys | fhir:hbys | notify
    objects: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_results(self) -> bool:
        return self.kind in ("hl7", "fhir") or any(o in RESULT_OBJECTS for o in self.objects)


@dataclass(frozen=True)
class Rule:
    name: str
    conditions: tuple[Condition, ...]
    actions: tuple[Action, ...]
    transforms: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Verdict:
    rule: Rule
    fired: bool
    series_uid: str | None                     # the series that satisfied every condition
    reasons: list[str]


def _as_number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _equals(wanted: str | int | float) -> Callable[[Any], bool]:
    """Numbers compare as numbers (PatientWeight "72" equals 72), everything else as text."""
    if isinstance(wanted, int | float):
        return lambda v: _as_number(v) == wanted
    return lambda v: str(v) == wanted


def _numeric(key: str, spec: dict[str, Any]) -> Condition:
    unknown = sorted(set(spec) - set(_NUMERIC))
    if unknown or not spec:
        raise ValueError(f"{key}: unknown operator(s) {unknown or '(none)'}; use regex or one of {' '.join(_NUMERIC)}")
    bounds = []
    for op, limit in spec.items():
        number = _as_number(limit)
        if number is None or isinstance(limit, bool):
            raise ValueError(f"{key}: {op} needs a number, not {limit!r}")
        bounds.append((op, number))

    def holds(v: Any) -> bool:
        x = _as_number(v)
        return x is not None and all(_NUMERIC[op](x, n) for op, n in bounds)
    return Condition(key, " and ".join(f"{op} {n:g}" for op, n in bounds), holds)


def _condition(key: str, spec: Any) -> Condition:
    if isinstance(spec, bool) or spec is None:
        raise ValueError(f"{key}: {spec!r} is not a value to match")
    if isinstance(spec, list):
        if not spec or not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in spec):
            raise ValueError(f"{key}: a list must hold one or more plain values")
        tests = [_equals(v) for v in spec]
        return Condition(key, f"any of {spec}", lambda v: any(test(v) for test in tests))
    if isinstance(spec, dict):
        if set(spec) != {"regex"}:
            return _numeric(key, spec)
        try:
            pattern = re.compile(str(spec["regex"]))
        except re.error as exc:
            raise ValueError(f"{key}: bad regular expression {spec['regex']!r}: {exc}") from None
        return Condition(key, f"regex {pattern.pattern!r}", lambda v: pattern.search(str(v)) is not None)
    if isinstance(spec, str) and any(c in spec for c in "*?"):
        pattern = re.compile(fnmatch.translate(spec), re.IGNORECASE)
        return Condition(key, f"wildcard {spec!r}", lambda v: pattern.match(str(v)) is not None)
    if not isinstance(spec, str | int | float):
        raise ValueError(f"{key}: {spec!r} is not a value to match")
    return Condition(key, f"== {spec!r}", _equals(spec))


def _objects(raw: Any) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(isinstance(o, str) for o in items):
        raise ValueError(f"objects: give one or more of {', '.join(OBJECTS)}")
    bad = [o for o in items if o not in OBJECTS]
    if bad:
        raise ValueError(f"objects: unknown {', '.join(bad)} (known: {', '.join(OBJECTS)})")
    if "all" in items:
        return ("study", *RESULT_OBJECTS)
    return tuple(dict.fromkeys(items))


def _action(raw: str | dict[str, Any], settings: Settings) -> Action:
    if isinstance(raw, str):
        kind, body = raw, {}
    else:
        kinds = [k for k in raw if k in ACTIONS]
        if len(kinds) != 1:
            raise ValueError(f"an action names exactly one of {', '.join(ACTIONS)}; got {sorted(raw)}")
        kind = kinds[0]
        body = {k: v for k, v in raw.items() if k != kind}
        body["target"] = raw[kind]
    if kind not in ACTIONS:
        raise ValueError(f"unknown action {kind!r} (known: {', '.join(ACTIONS)})")
    extra = set(body) - {"target", *({"objects", "transforms"} if kind == "forward" else set())}
    if extra:
        raise ValueError(f"{kind}: unknown key(s) {', '.join(sorted(extra))}")
    target = body.get("target")
    if kind == "analyze":
        if isinstance(target, dict):            # {analyze: {sign: auto}}: results final without review
            if set(target) - {"sign"} or target.get("sign") not in ("auto", "review"):
                raise ValueError("analyze: takes {sign: review} (the default: results are preliminary until a "
                                 f"physician signs) or {{sign: auto}} (final at once, for research); got {target!r}")
            return Action("analyze", "analysis", (), {"sign": target["sign"]})
        if target not in (None, "default"):
            raise ValueError(f"analyze: takes no target (got {target!r}); the analysis section configures it")
        return Action("analyze", "analysis")
    if kind == "forward":
        if not isinstance(target, str):
            raise ValueError("forward: name a peer, e.g. {forward: pacs, objects: [seg, sr]}")
        try:
            settings.peer(target)
        except KeyError as exc:
            raise ValueError(f"forward: {exc.args[0]}") from None
        transforms = body.get("transforms", [])
        try:
            check_steps(transforms)
        except TransformError as exc:
            raise ValueError(f"forward: transforms: {exc}") from None
        return Action("forward", f"dicom:{target}", _objects(body.get("objects", ["study"])),
                      {"peer": target, "transforms": transforms})
    if kind in ("hl7", "fhir"):
        if target != "hbys":
            raise ValueError(f"{kind}: the only {kind.upper()} destination is hbys (the hbys: section), "
                             f"not {target!r}")
        return Action(kind, f"{kind}:hbys")
    if isinstance(target, dict):          # {notify: {roles: [...], users: [...], priority: …, channels: [...]}}
        return Action("notify", "notify", (), notify_params(target))
    recipients = [target] if isinstance(target, str) else target
    if not isinstance(recipients, list) or not recipients or not all(isinstance(r, str) for r in recipients):
        raise ValueError("notify: name one or more recipient roles, e.g. {notify: [physician]}")
    return Action("notify", "notify", (), {"recipients": recipients})


def compile_rule(route: Route, settings: Settings) -> Rule:
    conditions = []
    for key, spec in route.match.items():
        if not is_attribute(key):
            raise ValueError(f"match: unknown attribute {key!r} (a DICOM keyword such as SeriesDescription, "
                             f"or one of {', '.join(attribute_names())})")
        conditions.append(_condition(key, spec))
    if not route.actions:
        raise ValueError("no actions")
    actions = tuple(_action(a, settings) for a in route.actions)
    kinds = [a.kind for a in actions]
    if kinds.count("analyze") > 1:
        raise ValueError("analyze appears more than once")
    for a in actions:
        if a.needs_results and "analyze" not in kinds:
            raise ValueError(f"{a.kind} of analysis results needs an analyze action in the same rule")
    try:
        check_steps(route.transforms)
    except TransformError as exc:
        raise ValueError(f"transforms: {exc}") from None
    return Rule(route.name, tuple(conditions), actions, tuple(route.transforms))


def compile_routes(settings: Settings) -> list[Rule]:
    """Every rule of `settings`, or RouteError naming the first that cannot be used."""
    rules, seen = [], set()
    for i, route in enumerate(settings.routes):
        where = f"routes[{i}] {route.name!r}"
        if route.name in seen:
            raise RouteError(f"{where}: another rule has the same name")
        seen.add(route.name)
        try:
            rules.append(compile_rule(route, settings))
        except ValueError as exc:                       # TransformError is one too
            raise RouteError(f"{where}: {exc}") from None
    for peer in settings.peers:
        for key, steps in (("transforms", peer.transforms), ("transforms_in", peer.transforms_in)):
            try:
                check_steps(steps)
            except TransformError as exc:
                raise RouteError(f"peers {peer.name!r}: {key}: {exc}") from None
    return rules


def evaluate(rule: Rule, series: Sequence[SeriesFacts]) -> Verdict:
    """Whether `rule` fires for a study made of `series`, and why (or why not)."""
    if not rule.conditions:
        return Verdict(rule, bool(series), series[0].series_uid if series else None,
                       ["no conditions: fires for every study"])
    closest: list[str] = []
    for facts in series:
        results = [c.check(facts) for c in rule.conditions]
        reasons = [f"series {facts.series_uid}: {why}" for _, why in results]
        if all(ok for ok, _ in results):
            return Verdict(rule, True, facts.series_uid, reasons)
        closest += [why for (ok, _), why in zip(results, reasons) if not ok]
    return Verdict(rule, False, None, closest or ["the study has no series"])


def matching_rules(rules: Sequence[Rule], series: Sequence[SeriesFacts]) -> list[Verdict]:
    return [evaluate(r, series) for r in rules]
