"""The scoring rule shared by every layer: a model's probability of the positive class.

The dataflow's model specs (:mod:`dataflows.models`) speak River's binary-classifier
protocol; this is how a score is read from one. It lives at the bottom so that
:mod:`lake.reproduce` rebuilds a stored score with the dataflow's own rule without
importing the dataflow.

>>> class Untrained:
...     def predict_proba_one(self, x):
...         return {}
>>> score_one(Untrained(), {"a": 1.0})
0.5
"""

from __future__ import annotations

from typing import Any


def score_one(model: Any, x: dict[str, float], key: str | None = None) -> float:
    """Probability of the positive class; 0.5 before the model has seen any class.

    ``key`` is the event's entity key, used by per-key models (:mod:`dataflows.perkey`).
    """
    proba = model.predict_proba_one(x, key) if getattr(model, "keyed", False) else model.predict_proba_one(x)
    if not proba:
        return 0.5
    return float(proba.get(True, 0.0))


def task_answer(task: str, model: Any, x: dict[str, float], key: str | None = None, *,
                threshold: float = 0.5) -> tuple[Any, float, dict[str, float] | None]:
    """``(prediction, score, probabilities)`` of ``model`` for ``x`` in a lake of ``task``.

    The rule :func:`monitoring.tasks.predict` serves and :mod:`lake.reproduce` rebuilds.
    Binary: the score is :func:`score_one`, the prediction ``score >= threshold``.
    Multiclass: the most probable class as text (ties: the smallest as text; ``""``
    before any class was learned), its probability, and every class's probability.
    Regression: ``predict_one(x)`` as a float (0.0 where the model answers ``None``),
    as prediction and score.

    >>> class Two:
    ...     def predict_proba_one(self, x):
    ...         return {"b": 0.4, "a": 0.4, "c": 0.2}
    >>> task_answer("multiclass", Two(), {})
    ('a', 0.4, {'b': 0.4, 'a': 0.4, 'c': 0.2})
    """
    keyed = getattr(model, "keyed", False)
    if task == "regression":
        value = model.predict_one(x, key) if keyed else model.predict_one(x)
        value = 0.0 if value is None else float(value)
        return value, value, None
    if task == "binary":
        score = score_one(model, x, key)
        return int(score >= threshold), score, None
    if task != "multiclass":
        raise ValueError(f"task must be one of binary, multiclass, regression, got {task!r}")
    proba = model.predict_proba_one(x, key) if keyed else model.predict_proba_one(x)
    probabilities = {str(c): float(p) for c, p in (proba or {}).items()}
    if not probabilities:
        return "", 0.0, {}
    best = min(probabilities, key=lambda c: (-probabilities[c], c))
    return best, probabilities[best], probabilities
