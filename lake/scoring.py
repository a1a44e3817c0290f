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
