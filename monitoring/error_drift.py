"""Drift detectors on a model's prequential 0/1 error stream (``drift=``), from the same specs as ``watch=``.

A spec is parsed by :func:`monitoring.detectors.parse_spec`, one grammar for both places:
``"adwin"``, ``"adwin(delta=0.01)"``, ``"page-hinkley(threshold=40, mode=up)"``. The only
difference is a default: ADWIN on the error stream keeps River's ``delta=0.002``.

>>> det = make_detector("adwin")
>>> alarms = [i for i, e in enumerate([0.0] * 3000 + [1.0] * 300) if det.update(e)]
>>> 3000 < alarms[0] < 3100
True
>>> make_detector("adwin(delta=0.01)").label
'adwin(delta=0.01)'
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from monitoring.detectors import Detector, build_river, parse_spec

_OWN_DEFAULTS = {"adwin": {"delta": 0.002}}


class ErrorDriftDetector(Detector):
    """A :class:`~monitoring.detectors.Detector` fed 0/1 errors; ``label`` names it in ``drift_events``."""

    __slots__ = ()
    DEFAULTS = _OWN_DEFAULTS

    def __setstate__(self, state: Any) -> None:
        _, slots = state if isinstance(state, tuple) else (None, state)
        if "_detector" in slots:  # pickled when a bare name and its River detector were all it held
            ErrorDriftDetector.__init__(self, slots["name"])
            self._det = slots["_detector"]
            return
        for name, value in slots.items():
            object.__setattr__(self, name, value)


def make_detector(spec: str) -> ErrorDriftDetector:
    """An :class:`ErrorDriftDetector` from a spec; a bad spec fails with a one-line error naming it."""
    name, params = parse_spec(spec)
    return ErrorDriftDetector(name, **params)


DETECTORS: dict[str, Callable[[], Any]] = {
    name: partial(build_river, name, _OWN_DEFAULTS.get(name)) for name in ("adwin", "page-hinkley", "kswin")
}
"""Detector name → factory of a fresh River detector with the error stream's defaults (benchmarks)."""
