"""A guard for online regressors: predictions stay within the range of the labels seen.

A linear leaf model fed a feature whose spread it has barely seen can answer
1e15 once; the guard caps any answer at the labels' range widened by one span
on each side (a stream whose values grow still gets predictions beyond what it
has seen, never absurd ones). Before the first label it answers the inner
model's value unchanged.

>>> from monitoring.tasks import Persistence
>>> guard = RangeGuard(Persistence())
>>> for y in (10.0, 20.0):
...     guard.learn_one({}, y)
>>> guard.predict_one({})
20.0
>>> guard.regressor.last = 1e15  # what a diverged model might say
>>> guard.predict_one({})
30.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class RangeGuard:
    """``regressor`` whose predictions are clipped to [min - span, max + span] of the labels learned."""

    def __init__(self, regressor: Any) -> None:
        if not hasattr(regressor, "predict_one") or not hasattr(regressor, "learn_one"):
            raise TypeError(f"regressor must have predict_one and learn_one, got {regressor!r}")
        self.regressor = regressor
        self.low = math.inf
        self.high = -math.inf

    def learn_one(self, x: Mapping[str, float], y: float) -> None:
        y = float(y)
        self.low, self.high = min(self.low, y), max(self.high, y)
        self.regressor.learn_one(x, y)

    def predict_one(self, x: Mapping[str, float]) -> float:
        value = self.regressor.predict_one(x)
        value = 0.0 if value is None else float(value)
        if self.low > self.high:  # nothing learned yet
            return value
        span = self.high - self.low
        if not math.isfinite(value):
            return (self.low + self.high) / 2.0
        return min(max(value, self.low - span), self.high + span)
