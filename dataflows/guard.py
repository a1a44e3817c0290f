"""Guards that keep one extreme value from poisoning the models for the rest of a run.

A finite but huge feature (``1e308``) overflows the models' arithmetic: a
logistic regression's weights become ``inf`` and then every score ``NaN``, a
Hoeffding tree raises ``OverflowError`` halfway through a learn step. Three
guards, cheap on the normal path:

* :func:`feature_problem`: before any model sees an event, its features must be
  finite and within :data:`MAX_ABS_FEATURE`; otherwise the event is dead-lettered
  at ``predict`` and no model ever learns from it.
* :func:`score_problem`: a score that is not a finite number dead-letters the
  event (predicting changes no model).
* :class:`LearnUndo`: the learn step of one label is all or nothing across the
  shard's models. It keeps the models' pickled bytes from the last checkpoint (or
  the last rebase) and the learn steps since; when a model raises or is left with
  non-finite weights (:func:`weights_problem`), every model is rebuilt from those
  bytes plus the steps before, so the models, the learn log and ``lake reproduce``
  agree.

>>> feature_problem({"a": 1.0, "b": -3.5}) is None
True
>>> feature_problem({"a": 1.0, "b": 1e308})
"feature 'b' is 1e+308, beyond what the models can learn from (|value| <= 1e+100)"
>>> score_problem([0.2, float("nan")], ("linear", "tree"))
"model 'tree' scored nan"
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from typing import Any

from dataflows.sparse import SparseLogisticRegression

MAX_ABS_FEATURE = 1e100
"""Largest feature magnitude the models are given. Squares and sums of squares of such values
(the scaler's and the trees' variances) stay far from float overflow (1.8e308) for any stream
length; at 1e200 a logistic regression scores NaN and a Hoeffding tree raises within 3 events."""

UNDO_STEPS = 10_000
"""Learn steps kept for an undo at most; past it the models are pickled again (the next rebase)."""


def feature_problem(x: dict[Any, float]) -> str | None:
    """Why the features ``x`` must not reach a model (non-finite or too large), or ``None``."""
    total = sum(map(abs, x.values()))  # NaN, inf and any value past the bound make this large or NaN
    if total <= MAX_ABS_FEATURE:
        return None
    for name, value in x.items():
        if not -MAX_ABS_FEATURE <= value <= MAX_ABS_FEATURE:
            return (f"feature {name!r} is {value!r}, beyond what the models can learn from "
                    f"(|value| <= {MAX_ABS_FEATURE:g})")
    return None  # many large values whose sum passes the bound, each within it


def score_problem(scores: Sequence[float], names: Sequence[str]) -> str | None:
    """Why ``scores`` (one per model, in ``names`` order) cannot be stored, or ``None``."""
    if math.isfinite(sum(scores)):
        return None
    for name, score in zip(names, scores, strict=True):
        if not math.isfinite(score):
            return f"model {name!r} scored {score!r}"
    return None


def weights_problem(estimator: Any, x: dict[Any, float], key: Any = None) -> bool:
    """Whether a learn step on ``x`` left ``estimator`` with a non-finite weight (the weights of
    ``x``'s features and the intercept: the only ones a step changes). Linear models only;
    other models show non-finite arithmetic by raising, or by a score that :func:`score_problem`
    catches before any model learns from the event."""
    if getattr(estimator, "keyed", False):
        estimator = estimator.model_for(key)
    if type(estimator) is SparseLogisticRegression:
        get, w = estimator.index.get, estimator.values
        total = estimator.intercept
        for name in x:
            i = get(name)
            if i is not None:
                total += abs(w[i])
        return not math.isfinite(total)
    steps = getattr(estimator, "steps", None)  # a River pipeline: its final linear model
    model = list(steps.values())[-1] if steps else estimator
    intercept = getattr(model, "intercept", None)
    if not isinstance(intercept, float) or not hasattr(model, "weights"):
        return False
    if not math.isfinite(intercept):
        return True
    return not math.isfinite(sum(map(abs, model.weights.values())))


class LearnUndo:
    """Undo of the last learn step of a shard's models: their bytes at a base point plus the
    learn steps since (``(x, y, key)``, the features the models learned from, kept by reference).

    Only process memory: the learner leaves it out of recovery snapshots, and a restored
    learner takes a new base at its first learn step.
    """

    __slots__ = ("base", "steps")

    def __init__(self) -> None:
        self.base: list[bytes] | None = None
        self.steps: list[tuple[dict, bool, Any]] = []

    def before_learn(self, estimators: Sequence[Any]) -> None:
        """Take a base (pickle every model) unless one is held."""
        if self.base is None:
            self.rebase([pickle.dumps(e, protocol=5) for e in estimators])

    def rebase(self, base: list[bytes] | None) -> None:
        """The models are ``base`` now (``None``: unknown, pickle them at the next learn step)."""
        self.base = base
        self.steps = []

    def learned(self, x: dict, y: bool, key: Any) -> None:
        """A learn step was applied to every model."""
        steps = self.steps
        steps.append((x, y, key))
        if len(steps) >= UNDO_STEPS:
            self.rebase(None)

    def restore(self, *, keyed: bool) -> list[Any]:
        """The models as they were after the last applied learn step (rebuilt from the base)."""
        if self.base is None:
            raise RuntimeError("no base to restore the models from")
        models = [pickle.loads(b) for b in self.base]  # bytes this process pickled, never stored
        for model in models:
            for x, y, key in self.steps:
                if keyed:
                    model.learn_one(x, y, key)
                else:
                    model.learn_one(x, y)
        return models
