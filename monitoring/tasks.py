"""What the learner does per task (:mod:`lake.tasks`): predict, the error stream, no-skill baselines.

Pure functions over River's dict protocol (the scoring rule itself is
:func:`lake.scoring.task_answer`, which :mod:`lake.reproduce` shares); nothing here
imports River or the dataflows, so the learner (``dataflows``) and the flows can
import it freely.

- :func:`predict` turns a model's answer into the ``predictions`` row's values:
  ``prediction`` (0/1, the class, or the value), ``score`` (P(positive); the
  predicted class's probability; the predicted value) and ``probabilities``
  (multiclass: class -> probability; else ``None``).
- :func:`error` is the value a drift detector sees for one label: the 0/1 error
  as today for binary and multiclass, the absolute error for regression.
- :func:`log_loss` is the per-label log loss of the classification tasks.
- :class:`MeanRegressor`, :class:`Persistence` and :class:`MajorityClassifier` are
  the no-skill baselines (mean predictor; "same as the last label"; the class
  seen most often, with the classes' frequencies as probabilities).

>>> model = MajorityClassifier()
>>> for y in ("late", "on-time", "late"):
...     model.learn_one({}, y)
>>> p = predict("multiclass", model, {"x": 1.0})
>>> p.prediction, round(p.score, 3), error("multiclass", p, "on-time")
('late', 0.667, 1.0)
>>> reg = MeanRegressor()
>>> for y in (1.0, 2.0, 6.0):
...     reg.learn_one({}, y)
>>> p = predict("regression", reg, {})
>>> p.prediction, error("regression", p, 1.0)
(3.0, 2.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lake.scoring import task_answer

_EPS = 1e-15
_TASKS = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class Prediction:
    """One model's answer for one event, in the ``predictions`` table's terms."""

    prediction: Any
    """0/1 (binary), the class as text (multiclass; ``""`` before any class was learned), the value."""
    score: float
    """P(positive) (binary), the predicted class's probability (multiclass), the value (regression)."""
    probabilities: dict[str, float] | None = None
    """Multiclass: every known class's probability, classes as text; ``None`` for the other tasks."""


def _check(task: str) -> None:
    if task not in _TASKS:
        raise ValueError(f"task must be one of {', '.join(_TASKS)}, got {task!r}")


def predict(task: str, model: Any, x: Mapping[str, float], *, key: Any = None,
            threshold: float = 0.5) -> Prediction:
    """``model``'s prediction for ``x`` as the lake stores it (see :class:`Prediction`).

    ``key`` goes to per-key models (``model.keyed``). Binary: the score is
    ``predict_proba_one(x)[True]`` (0.5 before the model knows a class), the
    prediction ``score >= threshold``. Multiclass: the most probable class (ties: the
    smallest as text), its probability and all of them. Regression:
    ``predict_one(x)``, 0.0 where the model answers ``None``.
    """
    _check(task)
    return Prediction(*task_answer(task, model, x, key, threshold=threshold))


def label_value(task: str, y: Any) -> Any:
    """``y`` as the task learns it, or :class:`ValueError` naming it (the dataflow dead-letters those).

    Binary: 0/1 (bools and 0.0/1.0 too); multiclass: the class as text, not empty;
    regression: a finite float.

    >>> label_value("regression", "2.5"), label_value("multiclass", 3), label_value("binary", True)
    (2.5, '3', 1)
    >>> label_value("regression", float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: label must be a finite number, got nan
    """
    _check(task)
    if task == "regression":
        try:
            value = float(y)
        except (TypeError, ValueError):
            raise ValueError(f"label must be a finite number, got {y!r}") from None
        if not math.isfinite(value) or isinstance(y, bool):
            raise ValueError(f"label must be a finite number, got {y!r}")
        return value
    if task == "multiclass":
        if y is None or isinstance(y, dict | list | tuple | set) or isinstance(y, float) and not math.isfinite(y):
            raise ValueError(f"label must be a class, got {y!r}")
        text = str(int(y)) if isinstance(y, float) and y == int(y) else str(y)
        if not text.strip():
            raise ValueError(f"label must be a class, got {y!r}")
        return text
    if y in (0, 1) and not isinstance(y, str):
        return int(y)
    raise ValueError(f"label must be 0 or 1, got {y!r}")


def error(task: str, prediction: Prediction, y: Any) -> float:
    """The error a drift detector sees for label ``y``: 0/1 (binary, multiclass), ``|y - ŷ|`` (regression)."""
    _check(task)
    if task == "regression":
        return abs(float(y) - float(prediction.prediction))
    if task == "binary":
        return 0.0 if prediction.prediction == int(y) else 1.0
    return 0.0 if prediction.prediction == str(y) else 1.0


def log_loss(task: str, prediction: Prediction, y: Any) -> float:
    """Log loss of one label (probabilities clipped to [1e-15, 1]); classification tasks only."""
    _check(task)
    if task == "regression":
        raise ValueError("log loss is a classification metric; regression has none")
    if task == "binary":
        p = prediction.score if int(y) == 1 else 1.0 - prediction.score
    else:
        p = (prediction.probabilities or {}).get(str(y), 0.0)
    return -math.log(min(max(p, _EPS), 1.0))


# --------------------------------------------------------------------------- no-skill baselines


class MeanRegressor:
    """Predicts the mean of the labels learned so far (0.0 before the first)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0

    def learn_one(self, x: Mapping[str, float], y: float) -> None:
        self.n += 1
        self.mean += (float(y) - self.mean) / self.n

    def predict_one(self, x: Mapping[str, float]) -> float:
        return self.mean


class Persistence:
    """Predicts the last label learned ("same as the last one"; 0.0 before the first).

    With labels that come in event order this is "same as yesterday" for a daily
    series. It is global: on a stream of several keys, the last label of any key.
    """

    def __init__(self) -> None:
        self.last = 0.0

    def learn_one(self, x: Mapping[str, float], y: float) -> None:
        self.last = float(y)

    def predict_one(self, x: Mapping[str, float]) -> float:
        return self.last


class MajorityClassifier:
    """Predicts the class seen most often; its probabilities are the classes' frequencies.

    For binary labels it is the constant score at the base rate.
    """

    def __init__(self) -> None:
        self.counts: dict[Any, int] = {}
        self.n = 0

    def learn_one(self, x: Mapping[str, float], y: Any) -> None:
        self.counts[y] = self.counts.get(y, 0) + 1
        self.n += 1

    def predict_proba_one(self, x: Mapping[str, float]) -> dict[Any, float]:
        return {c: k / self.n for c, k in self.counts.items()}

    def predict_one(self, x: Mapping[str, float]) -> Any:
        if not self.counts:
            return None
        return min(self.counts, key=lambda c: (-self.counts[c], str(c)))
