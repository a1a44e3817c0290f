"""Drift detectors on a model's prequential error stream, by name.

>>> det = make_detector("adwin")
>>> alarms = [i for i, e in enumerate([0.0] * 3000 + [1.0] * 300) if det.update(e)]
>>> 3000 < alarms[0] < 3100
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from river import drift

DETECTORS: dict[str, Callable[[], Any]] = {
    "adwin": lambda: drift.ADWIN(delta=0.002),
    "page-hinkley": lambda: drift.PageHinkley(),
    "kswin": lambda: drift.KSWIN(seed=42),
}
"""Detector name → factory of a fresh River detector."""


class ErrorDriftDetector:
    """A River drift detector fed 0/1 errors; ``update`` says whether it just alarmed."""

    __slots__ = ("name", "_detector")

    def __init__(self, name: str) -> None:
        try:
            self._detector = DETECTORS[name]()
        except KeyError:
            raise ValueError(f"unknown drift detector {name!r}; known: {', '.join(sorted(DETECTORS))}") from None
        self.name = name

    def update(self, error: float) -> bool:
        det = self._detector
        det.update(error)
        return det.drift_detected


def make_detector(name: str) -> ErrorDriftDetector:
    return ErrorDriftDetector(name)
