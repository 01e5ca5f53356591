"""Alerts from the trainer (docs/ALERTS.md): :func:`alert` raises the trainer's own alert
(an ``alert`` event, like ``wandb.alert``), and :func:`check_rule` checks an alert rule the
way the relay does (``crates/events/src/alerts/rule.rs``, ``Rule::parse``: the same fields,
kinds, ranges and kind-specific fields, checked in the same order), so
``connect(alerts=[...])`` refuses a bad rule, naming its field, before anything is sent.
``crates/events/tests/fixtures/alert_rules.json`` holds the cases both checkers must agree on.
"""

from __future__ import annotations

import math
import numbers
import re
import unicodedata
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._emitter import TrainingEventEmitter, training_emitter

__all__ = ["RuleError", "alert", "check_rule", "check_rules", "emit_rules"]

#: Titles are cut to this many characters.
MAX_TITLE = 200
#: Rules one run keeps (the relay's reducer keeps no more).
MAX_RUN_RULES = 64

KINDS = (
    "non_finite",
    "above",
    "below",
    "spike",
    "plateau",
    "stale",
    "failed",
    "finished",
    "gpu_idle",
    "event",
)
FIELDS = (
    "name",
    "kind",
    "metric",
    "threshold",
    "for",
    "factor",
    "window",
    "min_delta_pct",
    "mode",
    "after_s",
    "below_pct",
    "event",
    "level",
    "action",
    "notify",
    "cooldown_s",
    "runs",
)
_METRIC_KINDS = frozenset(("non_finite", "above", "below", "spike", "plateau"))
#: Fields that mean something only for some kinds, in the order rule.rs checks them.
_ONLY: tuple[tuple[str, frozenset[str]], ...] = (
    ("threshold", frozenset(("above", "below"))),
    ("for", frozenset(("above", "below"))),
    ("factor", frozenset(("spike",))),
    ("window", frozenset(("spike", "plateau"))),
    ("min_delta_pct", frozenset(("plateau",))),
    ("mode", frozenset(("plateau",))),
    ("after_s", frozenset(("stale", "gpu_idle"))),
    ("below_pct", frozenset(("gpu_idle",))),
    ("event", frozenset(("event",))),
)
#: Levels as trainers write them (lower-cased), and the level each stands for.
_LEVELS = {
    "info": "info",
    "debug": "info",
    "warning": "warning",
    "warn": "warning",
    "error": "error",
    "critical": "error",
    "fatal": "error",
}
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_EVENT_NAME = re.compile(r"[a-z0-9_.-]{1,64}")
_RUN_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_NAME_RULE = "1 to 64 of A-Z a-z 0-9 _ . -"


class RuleError(ValueError):
    """A rule refused: ``field`` (``alerts[1].window``) and what is wrong with it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _ascii_lower(s: str) -> str:
    return "".join(c.lower() if c.isascii() else c for c in s)


def level_of(level: object) -> str | None:
    """The level ``level`` stands for (``warn`` -> ``warning``), or None when unknown."""
    return _LEVELS.get(_ascii_lower(level)) if isinstance(level, str) else None


def alert(title: str, text: str = "", level: str = "warning") -> None:
    """Raises the trainer's own alert: an ``alert`` event with ``title``, ``text`` and
    ``level`` (``info``, ``warning``, ``error``; ``warn``, ``critical``, ``fatal`` too),
    sent like every other event (queued, never blocking, never raising because of the
    relay) and seen by the local emitter's listeners. The relay's ``event`` rules fire on
    it. An unknown level becomes ``warning`` (with a warning); a title over 200
    characters is cut."""
    known = level_of(level)
    if known is None:
        warnings.warn(
            f"stepwatch.alert: unknown level {level!r} (expected info, warning or error); "
            "sent as warning",
            stacklevel=2,
        )
        known = "warning"
    title = str(title)[:MAX_TITLE]
    training_emitter.emit("alert", title=title, text=str(text), level=known)


def check_rules(rules: object, at: str = "alerts") -> list[dict[str, Any]]:
    """Checks every rule of a list (all before any is used); the first bad one raises
    :class:`RuleError` naming it (``alerts[1].window: …``)."""
    if isinstance(rules, (str, bytes, Mapping)) or not isinstance(rules, Sequence):
        raise RuleError(at, "must be a list of rules: [{'name': …, 'kind': …}, …]")
    if len(rules) > MAX_RUN_RULES:
        raise RuleError(at, f"at most {MAX_RUN_RULES} rules, got {len(rules)}")
    return [check_rule(r, f"{at}[{i}]") for i, r in enumerate(rules)]


def emit_rules(rules: list[dict[str, Any]], emitter: TrainingEventEmitter) -> None:
    """Each checked rule as the run's ``alert_rule`` event."""
    for rule in rules:
        emitter.emit("alert_rule", rule=rule)


def check_rule(rule: object, at: str = "") -> dict[str, Any]:
    """Checks one alert rule as the relay will (docs/ALERTS.md, "Rules") and returns a
    copy of it; a bad one raises :class:`RuleError` (a ``ValueError``) naming the field,
    prefixed with ``at`` (``alerts[2].window: must be between 2 and 10000``)."""
    if not isinstance(rule, Mapping):
        raise RuleError(at or "rule", 'a rule is an object: {"name": "…", "kind": "…", …}')
    f = _Fields(rule, at)
    unknown = sorted(str(k) for k in rule if k not in FIELDS)
    if unknown:
        raise f.err(unknown[0], f"unknown field (a rule has {', '.join(FIELDS)})")
    _check_name(f)
    kind = f.choice("kind", KINDS, lambda s: s if s in KINDS else None)
    if kind is None:
        raise f.err("kind", f"missing (one of {', '.join(KINDS)})")
    _check_values(f)
    _check_kind(f, kind)
    return dict(rule)


def _check_name(f: _Fields) -> None:
    name = f.string("name")
    if name is None:
        raise f.err("name", "missing: every rule needs a name")
    if not _NAME.fullmatch(name):
        raise f.err("name", _NAME_RULE)


def _check_values(f: _Fields) -> None:
    """Each field's type and range, in the order rule.rs reads them."""
    f.string("metric")
    f.number("threshold", -math.inf, math.inf)
    f.integer("for", 1, 100_000)
    f.number("factor", 1, 1e12)
    f.integer("window", 1, 1_000_000_000)
    f.number("min_delta_pct", 0, 100)
    f.choice("mode", ("min", "max"), lambda s: s if s in ("min", "max") else None)
    f.number("after_s", 1, 604_800)
    f.number("below_pct", 0, 100)
    f.string("event")
    f.choice("level", ("info", "warning", "error"), level_of)
    f.choice("action", ("pause", "stop"), lambda s: s if s in ("pause", "stop") else None)
    _check_notify(f)
    f.number("cooldown_s", 0, 86_400)
    f.string("runs")


def _check_notify(f: _Fields) -> None:
    items = f.get("notify")
    if items is None:
        return
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise f.err("notify", "must be a list of channel names")
    for i, item in enumerate(items):
        if not (isinstance(item, str) and _NAME.fullmatch(item)):
            raise f.err(f"notify[{i}]", f"a channel name: {_NAME_RULE}")


def _check_kind(f: _Fields, kind: str) -> None:
    """Fields the kind needs, and fields that mean nothing for it."""
    metric = f.string("metric")
    if metric is not None:
        _check_metric(f, kind, metric)
    if kind in ("above", "below") and f.get("threshold") is None:
        raise f.err("threshold", f"{kind} needs a threshold")
    for field, kinds in _ONLY:
        if f.get(field) is not None and kind not in kinds:
            raise f.err(field, f"means nothing for a {kind} rule")
    if kind == "spike":
        factor = f.number("factor", 1, 1e12)
        if factor is not None and factor <= 1:
            raise f.err("factor", "must be above 1")
        window = f.integer("window", 1, 1_000_000_000)
        if window is not None and not 2 <= window <= 10_000:
            raise f.err("window", "must be between 2 and 10000")
    event = f.string("event")
    if event is not None and not _EVENT_NAME.fullmatch(event):
        raise f.err("event", "an event name: 1 to 64 of a-z 0-9 _ . -")
    runs = f.string("runs")
    if runs and not _RUN_PREFIX.fullmatch(runs):
        raise f.err("runs", "a run-id prefix: A-Z a-z 0-9 _ . -")


def _check_metric(f: _Fields, kind: str, metric: str) -> None:
    if not metric or _utf8_len(metric) > 256 or any(_is_control(c) for c in metric):
        raise f.err("metric", "1 to 256 printable characters")
    if metric == "*" and kind != "non_finite":
        raise f.err("metric", '"*" (every metric) is for non_finite only')
    if kind not in _METRIC_KINDS:
        raise f.err("metric", f"{kind} reads no metric")


def _utf8_len(s: str) -> int:
    try:
        return len(s.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: no JSON string the relay reads
        return 1 << 30


def _is_control(c: str) -> bool:
    return unicodedata.category(c) == "Cc"


def _fmt(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and x == int(x) else repr(x)


class _Fields:
    """Reads one rule's fields; errors name the field, prefixed with ``at``."""

    def __init__(self, obj: Mapping[Any, Any], at: str) -> None:
        self.obj = obj
        self.at = at

    def err(self, field: str, message: str) -> RuleError:
        return RuleError(f"{self.at}.{field}" if self.at else field, message)

    def get(self, field: str) -> Any:
        return self.obj.get(field)

    def string(self, field: str) -> str | None:
        v = self.get(field)
        if v is None or isinstance(v, str):
            return v
        raise self.err(field, "must be a string")

    def number(self, field: str, lo: float, hi: float) -> float | None:
        v = self.get(field)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise self.err(field, "must be a number")
        x = _as_float(v)
        if not (math.isfinite(x) and lo <= x <= hi):
            if math.isinf(lo):
                raise self.err(field, f"must be a finite number, got {v!r}")
            raise self.err(field, f"must be between {_fmt(lo)} and {_fmt(hi)}, got {v!r}")
        return x

    def integer(self, field: str, lo: int, hi: int) -> int | None:
        v = self.get(field)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise self.err(field, "must be a whole number")
        v = int(v)
        if not -(2**63) <= v < 2**63:
            raise self.err(field, "must be a whole number")
        if v < 0:
            raise self.err(field, f"must not be negative, got {v}")
        if not lo <= v <= hi:
            raise self.err(field, f"must be between {lo} and {hi}, got {v}")
        return v

    def choice(
        self, field: str, allowed: Sequence[str], parse: Callable[[str], str | None]
    ) -> str | None:
        s = self.string(field)
        if s is None:
            return None
        value = parse(s)
        if value is None:
            raise self.err(field, f"unknown value {s!r} (expected one of {', '.join(allowed)})")
        return value


def _as_float(v: numbers.Real) -> float:
    try:
        return float(v)
    except OverflowError:
        return math.inf
