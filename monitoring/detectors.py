"""Drift detectors by name, with validated parameters.

A detector is configured by a name and parameters, validated when it is built
(unknown names, unknown parameters and out-of-range values fail with the value in
the message). A spec string carries both: ``"adwin"``,
``"page-hinkley(threshold=40, mode=up)"``.

>>> det = make_detector("adwin")
>>> stream = [0.0] * 3000 + [1.0] * 300
>>> 3000 < det.update_many(stream)[0] < 3100
True
>>> make_detector("page-hinkley(threshold=-1)")
Traceback (most recent call last):
ValueError: page-hinkley: threshold must be > 0, got -1

Detectors run on a model's signals through :class:`monitoring.monitor.DriftMonitor`.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# --------------------------------------------------------------------------- parameter rules


@dataclass(frozen=True)
class Param:
    """One parameter of a detector: its default and the rule its values must follow."""

    default: Any
    rule: str  # shown in the error message, e.g. "in (0, 1)"
    check: Callable[[Any], bool]


def is_finite_number(x: Any) -> bool:
    """An int or float (not a bool) that is finite."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def is_int(x: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(x, int) and not isinstance(x, bool)


_num, _int = is_finite_number, is_int


def _open01(default: float) -> Param:
    return Param(default, "in (0, 1)", lambda x: _num(x) and 0 < x < 1)


def _positive(default: float) -> Param:
    return Param(default, "> 0", lambda x: _num(x) and x > 0)


def _count(default: int, low: int = 1) -> Param:
    return Param(default, f"an integer >= {low}", lambda x: _int(x) and x >= low)


def _flag(default: bool) -> Param:
    return Param(default, "True or False", lambda x: isinstance(x, bool))


@dataclass(frozen=True)
class DetectorKind:
    """A registered detector: how to build it, its parameters, whether it takes 0/1 input only."""

    name: str
    build: Callable[..., Any]
    params: Mapping[str, Param]
    binary: bool
    description: str
    check: Callable[[dict[str, Any]], str | None] = lambda p: None  # cross-parameter rule
    flip: bool = False  # feed 1 - x (River's FHDDM alarms when the share of ones falls)


def _adwin(**p: Any) -> Any:
    from river import drift

    return drift.ADWIN(**p)


def _page_hinkley(**p: Any) -> Any:
    from river import drift

    return drift.PageHinkley(**p)


def _kswin(**p: Any) -> Any:
    from river import drift

    return drift.KSWIN(**p)


def _binary(cls: str) -> Callable[..., Any]:
    def build(**p: Any) -> Any:
        from river.drift import binary

        return getattr(binary, cls)(**p)

    return build


DETECTORS: dict[str, DetectorKind] = {
    k.name: k
    for k in (
        DetectorKind(
            "adwin", _adwin,
            {"delta": _open01(1e-3), "clock": _count(32), "max_buckets": _count(5),
             "min_window_length": _count(5), "grace_period": _count(10)},
            binary=False,
            description="ADWIN: adaptive window, alarms when two sub-windows' means differ (two-sided)",
        ),
        DetectorKind(
            "page-hinkley", _page_hinkley,
            {"min_instances": _count(30), "delta": Param(0.005, ">= 0", lambda x: _num(x) and x >= 0),
             "threshold": _positive(50.0), "alpha": Param(0.9999, "in (0, 1]", lambda x: _num(x) and 0 < x <= 1),
             "mode": Param("both", "one of 'up', 'down', 'both'", lambda x: x in ("up", "down", "both"))},
            binary=False,
            description="Page-Hinkley: cumulative deviation from the running mean (mode up/down/both)",
        ),
        DetectorKind(
            "kswin", _kswin,
            {"alpha": _open01(0.005), "window_size": _count(100, 2), "stat_size": _count(30),
             # Seeded by default: River's KSWIN draws its reference sample at random and, after an
             # alarm, starts a new random.Random(seed): unseeded, a replay's alarms would differ run to run.
             "seed": Param(42, "an integer or None", lambda x: x is None or _int(x))},
            binary=False,
            description="KSWIN: Kolmogorov-Smirnov test on a sliding window (slow: ~230 us per item)",
            check=lambda p: (None if p["stat_size"] < p["window_size"]
                             else f"stat_size must be < window_size, got {p['stat_size']!r} >= {p['window_size']!r}"),
        ),
        DetectorKind(
            "ddm", _binary("DDM"),
            {"warm_start": _count(30), "warning_threshold": _positive(2.0), "drift_threshold": _positive(3.0)},
            binary=True,
            description="DDM: error rate rises beyond its minimum plus drift_threshold std (0/1 input)",
            check=lambda p: (None if p["drift_threshold"] >= p["warning_threshold"] else
                             f"drift_threshold must be >= warning_threshold, got {p['drift_threshold']!r}"
                             f" < {p['warning_threshold']!r}"),
        ),
        DetectorKind(
            "eddm", _binary("EDDM"),
            {"warm_start": _count(30), "alpha": Param(0.95, "in (0, 1]", lambda x: _num(x) and 0 < x <= 1),
             "beta": Param(0.9, "in (0, 1]", lambda x: _num(x) and 0 < x <= 1)},
            binary=True,
            description="EDDM: distance between errors shrinks (0/1 input)",
            check=lambda p: (None if p["alpha"] >= p["beta"]
                             else f"alpha must be >= beta, got {p['alpha']!r} < {p['beta']!r}"),
        ),
        DetectorKind(
            "hddm-a", _binary("HDDMA"),
            {"drift_confidence": _open01(0.001), "warning_confidence": _open01(0.005),
             "two_sided_test": _flag(False)},
            binary=True,
            description="HDDM_A: Hoeffding bound on moving averages (0/1 input)",
        ),
        DetectorKind(
            "hddm-w", _binary("HDDMW"),
            {"drift_confidence": _open01(0.001), "warning_confidence": _open01(0.005),
             "lambda_val": Param(0.05, "in (0, 1]", lambda x: _num(x) and 0 < x <= 1),
             "two_sided_test": _flag(False)},
            binary=True,
            description="HDDM_W: Hoeffding bound on weighted moving averages (0/1 input)",
        ),
        DetectorKind(
            "fhddm", _binary("FHDDM"),
            {"sliding_window_size": _count(100, 2), "confidence_level": _open01(1e-6),
             "short_window_size": Param(None, "an integer >= 2 or None", lambda x: x is None or (_int(x) and x >= 2))},
            binary=True,
            description="FHDDM: accuracy in a sliding window drops below its maximum (0/1 input; "
                        "fed 1 - error, as River's FHDDM alarms on a fall of the share of ones)",
            flip=True,
        ),
    )
}
"""Detector name → :class:`DetectorKind`. Defaults are River's except ``adwin``'s ``delta``
(1e-3 instead of 2e-3: as many or fewer false alarms for a few labels more delay on
``agrawal-drift``; see ``python -m dataflows.bench.drift_quality`` and BENCHMARKS.md)."""

_SPEC = re.compile(r"^\s*([a-z][a-z0-9_-]*)\s*(?:\((.*)\))?\s*$", re.DOTALL)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name(k=v, ...)"`` → ``(name, {k: v})``; values are Python literals or bare words.

    >>> parse_spec("page-hinkley(threshold=40, mode=up)")
    ('page-hinkley', {'threshold': 40, 'mode': 'up'})
    """
    m = _SPEC.match(spec) if isinstance(spec, str) else None
    if not m:
        raise ValueError(f"detector spec must look like 'name' or 'name(k=v, ...)', got {spec!r}")
    name, body = m.group(1), (m.group(2) or "").strip()
    params: dict[str, Any] = {}
    for part in (p.strip() for p in body.split(",")) if body else ():
        key, eq, raw = part.partition("=")
        key, raw = key.strip(), raw.strip()
        if not eq or not key.isidentifier():
            raise ValueError(f"detector spec {spec!r}: expected k=v, got {part!r}")
        try:
            params[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            params[key] = raw  # a bare word such as mode=up
    return name, params


def split_specs(text: str | Sequence[str]) -> list[str]:
    """Detector specs separated by commas outside parentheses.

    >>> split_specs("adwin, page-hinkley(threshold=40, mode=up)")
    ['adwin', 'page-hinkley(threshold=40, mode=up)']
    """
    if not isinstance(text, str):
        return [s for t in text for s in split_specs(t)]
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        depth += (ch == "(") - (ch == ")")
        cur.append(ch)
    out.append("".join(cur).strip())
    return [s for s in out if s]


COMMON: dict[str, Param] = {"cooldown": _count(0, 0)}
"""Parameters every detector takes: ``cooldown``, items after an alarm during which further
alarms are not reported (the detector still sees them)."""


def resolve(name: str, params: Mapping[str, Any] | None = None) -> tuple[DetectorKind, dict[str, Any]]:
    """The detector kind and its full, validated parameters (defaults filled in)."""
    try:
        kind = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown drift detector {name!r}; known: {', '.join(sorted(DETECTORS))}") from None
    params = dict(params or {})
    rules = {**kind.params, **COMMON}
    unknown = sorted(set(params) - set(rules))
    if unknown:
        raise ValueError(f"{name}: unknown parameter(s) {unknown}; it takes {sorted(rules)}")
    full = {k: params.get(k, p.default) for k, p in rules.items()}
    for k, value in full.items():
        rule = rules[k]
        if isinstance(value, int) and not isinstance(value, bool) and isinstance(rule.default, float):
            value = full[k] = float(value)
        if not rule.check(value):
            raise ValueError(f"{name}: {k} must be {rule.rule}, got {params.get(k, value)!r}")
    problem = kind.check(full)
    if problem:
        raise ValueError(f"{name}: {problem}")
    return kind, full


def build_river(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """A fresh River detector of the kind ``name`` with ``params`` validated (:func:`resolve`)."""
    kind, full = resolve(name, params)
    return kind.build(**{k: v for k, v in full.items() if k not in COMMON})


class Detector:
    """One River drift detector built from a name and parameters; ``update`` says whether it alarmed.

    ``DEFAULTS`` (name -> parameters) overrides the registry's defaults for a family of detectors
    (see :class:`monitoring.error_drift.ErrorDriftDetector`); ``label`` names what differs from them.
    """

    __slots__ = ("name", "params", "label", "binary", "cooldown", "flip", "_det", "_quiet")
    DEFAULTS: Mapping[str, Mapping[str, Any]] = {}

    def __init__(self, name: str, **params: Any) -> None:
        own = self.DEFAULTS.get(name, {})
        kind, full = resolve(name, {**own, **params})
        self.name = name
        self.params = full
        defaults = {k: p.default for k, p in {**kind.params, **COMMON}.items()} | dict(own)
        changed = {k: v for k, v in full.items() if v != defaults[k]}
        self.label = name + ("(" + ", ".join(f"{k}={v!r}" for k, v in sorted(changed.items())) + ")"
                             if changed else "")
        self.binary = kind.binary
        self.cooldown = full["cooldown"]
        self.flip = kind.flip
        self._det = kind.build(**{k: v for k, v in full.items() if k not in COMMON})
        self._quiet = 0  # items left in the cooldown

    def update(self, x: float) -> bool:
        """Feed one value; whether the detector alarmed (``NaN`` is skipped: ``False``)."""
        if self.flip or self.cooldown:
            return bool(self.update_many((x,)))
        if x != x:
            return False
        det = self._det
        det.update(x)
        return det.drift_detected

    def update_many(self, xs: Iterable[float]) -> list[int]:
        """Feed values in order; returns the 0-based indices at which the detector alarmed.

        ``NaN`` values are skipped (the detector does not see them).
        """
        det = self._det
        update = det.update
        hits = []
        values = xs.tolist() if isinstance(xs, np.ndarray) else xs
        if self.flip:
            values = [1.0 - x for x in values]
        if self.cooldown:
            return self._update_cooling(values)
        if type(det).__name__ == "ADWIN" and type(det).__module__ == "river.drift.adwin":
            return _adwin_many(det, values)
        for i, x in enumerate(values):
            if x != x:  # NaN
                continue
            update(x)
            if det.drift_detected:
                hits.append(i)
        return hits

    def _update_cooling(self, values: Iterable[float]) -> list[int]:
        det, update, quiet, hits = self._det, self._det.update, self._quiet, []
        for i, x in enumerate(values):
            if x != x:
                continue
            update(x)
            if quiet:
                quiet -= 1
            elif det.drift_detected:
                hits.append(i)
                quiet = self.cooldown
        self._quiet = quiet
        return hits

    def __repr__(self) -> str:
        return f"Detector({self.label})"


def _adwin_many(det: Any, values: Iterable[float]) -> list[int]:
    """River's ``ADWIN.update`` over ``values`` (``NaN`` skipped), the alarms' indices: its own steps (reset
    after an alarm, the window's update in Rust) without a Python method call and a property per value; the
    detector ends in the state River's loop leaves (~0.5 s less per million labels)."""
    helper = det._helper
    drift = det._drift_detected
    hits = []
    for i, x in enumerate(values):
        if x != x:
            continue
        if drift:
            det._reset()
            helper = det._helper
        drift = helper.update(x)
        if drift:
            hits.append(i)
    det._drift_detected = drift
    return hits


def make_detector(spec: str, **params: Any) -> Detector:
    """A :class:`Detector` from a spec string (``"adwin"``, ``"kswin(alpha=0.001)"``) plus keyword params."""
    name, parsed = parse_spec(spec)
    return Detector(name, **{**parsed, **params})
