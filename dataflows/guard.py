"""Guards that keep one extreme value from poisoning the models for the rest of a run.

A finite but huge feature (``1e308``) overflows the models' arithmetic: a
logistic regression's weights become ``inf`` and then every score ``NaN``, a
Hoeffding tree raises ``OverflowError`` halfway through a learn step. Three
guards, cheap on the normal path:

* Validation (:mod:`dataflows.validate`, and the replay's column checks) dead-letters
  an event with a float beyond :data:`MAX_ABS_FEATURE` before any model sees it; the
  featurizer's own features (counts, logs, sines) are bounded, integers are 64-bit.
* :func:`score_problem`: a score that is not a finite number dead-letters the
  event at ``predict`` (predicting changes no model).
* :class:`LearnUndo`: the learn step of one label is all or nothing across the
  shard's models. It keeps the models' pickled bytes from the last checkpoint (or
  the last rebase) and the learn steps since; when a model raises or is left with
  non-finite weights (:func:`weights_check`), every model is rebuilt from those
  bytes plus the steps before, and the label is dead-lettered at ``learn``: the
  models, the learn log and ``lake reproduce`` agree.

>>> score_problem([0.2, 0.7], ("linear", "tree")) is None
True
>>> score_problem([0.2, float("nan")], ("linear", "tree"))
"model 'tree' scored nan"
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Sequence
from typing import Any

from river import linear_model, optim, preprocessing
from river.utils import VectorDict

from dataflows.sparse import SparseLogisticRegression
from dataflows.transformers import NumericStandardScaler

MAX_ABS_FEATURE = 1e100
"""Largest feature magnitude the models are given. Squares and sums of squares of such values
(the scaler's and the trees' variances) stay far from float overflow (1.8e308) for any stream
length; at 1e200 a logistic regression scores NaN and a Hoeffding tree raises within 3 events."""

UNDO_STEPS = 10_000
"""Learn steps kept for an undo at most; past it the models are pickled again (the next rebase)."""


def score_problem(scores: Sequence[float], names: Sequence[str]) -> str | None:
    """Why ``scores`` (one per model, in ``names`` order) cannot be stored, or ``None``."""
    if math.isfinite(sum(scores)):
        return None
    for name, score in zip(names, scores, strict=True):
        if not math.isfinite(score):
            return f"model {name!r} scored {score!r}"
    return None


def weights_check(estimator: Any) -> Callable[[dict[Any, float], Any], bool] | None:
    """A check ``(x, key) -> bool``: whether a learn step on ``x`` left ``estimator`` with a
    non-finite weight; ``None`` for models without weights. Other models show non-finite
    arithmetic by raising, or by a score that :func:`score_problem` catches before any model
    learns from the event. Built once per model (the learner rebuilds it when a model is replaced)."""
    if getattr(estimator, "keyed", False):  # one model per key (dataflows.perkey): resolve per key
        if _linear_part(estimator.blank) is None:
            return None
        model_for = estimator.model_for
        local = _learns_locally(estimator.blank)

        def keyed(x: dict[Any, float], key: Any) -> bool:
            return _non_finite(_linear_part(model_for(key)), x, local=local)
        return keyed
    model = _linear_part(estimator)
    if model is None:
        return None
    local = _learns_locally(estimator)
    return lambda x, key: _non_finite(model, x, local=local)


_KEY_KEEPING = (preprocessing.StandardScaler, NumericStandardScaler)
"""Transformers whose output has exactly the keys of their input (by exact type: a subclass may not)."""


def _learns_locally(estimator: Any) -> bool:
    """Whether a learn step of ``estimator`` changes only the weights of the features it learns from and the
    intercept: a River linear model with plain SGD and no penalty (its gradient holds ``x``'s keys alone, and
    the step subtracts it key by key), alone or after transformers that keep the keys of ``x``. Any other
    optimizer (momentum, Adam's state) or an L1/L2 penalty can move every weight."""
    steps = getattr(estimator, "steps", None)
    if steps:
        *before, last = steps.values()
        if not all(type(t) in _KEY_KEEPING for t in before):
            return False
        estimator = last
    if not isinstance(estimator, linear_model.base.GLM):
        return False
    return (type(estimator.optimizer) is optim.SGD and estimator.l2 == 0 and getattr(estimator, "l1", 0) == 0
            and isinstance(getattr(estimator, "_weights", None), VectorDict))


def _linear_part(estimator: Any) -> Any:
    """The weighted linear model of ``estimator`` (itself, or a pipeline's last step), else ``None``."""
    if type(estimator) is SparseLogisticRegression:
        return estimator
    steps = getattr(estimator, "steps", None)  # a River pipeline
    if steps:
        estimator = steps[next(reversed(steps))]
    if isinstance(getattr(estimator, "intercept", None), float) and hasattr(estimator, "weights"):
        return estimator
    return None


def _non_finite(model: Any, x: dict[Any, float], *, local: bool = False) -> bool:
    """Whether the weights a learn step on ``x`` changes hold a NaN or an infinity: then their sum is not
    finite. Those of ``x``'s features and the intercept where the model learns locally (``local``, see
    :func:`_learns_locally`; :class:`SparseLogisticRegression` always does): ~1 us for the dozen features of
    a flights event where summing every weight took 6-35 us (hundreds to thousands of one-hot weights,
    after every label); every weight otherwise."""
    total = model.intercept
    if type(model) is SparseLogisticRegression:
        get, w = model.index.get, model.values
        for name in x:
            i = get(name)
            if i is not None:
                total += w[i]
        return not math.isfinite(total)
    if local:
        w = model._weights
        try:
            for name in x:
                total += w[name]
        except KeyError:  # (a feature the step did not store a weight for: read them all)
            return not math.isfinite(model.intercept + sum(_weight_values(model)))
        return not math.isfinite(total)
    return not math.isfinite(total + sum(_weight_values(model)))


def _weight_values(model: Any) -> Any:
    """The weights of a River linear model, read in place.

    River's only public read, ``weights``, copies them into a new dict: ~8 us for the 800 weights of
    the flights model, after every label. Its weights live in a :class:`river.utils.VectorDict`
    (``_weights``, river 0.26), whose public ``values()`` reads them without a copy (~3 us); a model
    that keeps them otherwise is read through ``weights`` as before.
    """
    stored = getattr(model, "_weights", None)
    if isinstance(stored, VectorDict):
        return stored.values()
    return model.weights.values()


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
