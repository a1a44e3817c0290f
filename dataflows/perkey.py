"""One model per entity key (per route, per carrier, per host) behind one estimator.

:class:`PerKeyModel` holds a fresh copy of a blank estimator for every key it
has learned from; ``predict_proba_one(x, key)`` asks that key's model (a key
never learned from gets the blank model's answer, so the first event of a key is
scored like the first event of a run), ``learn_one(x, y, key)`` teaches only that
key's model. A key's model sees exactly the events of its key in stream order,
whatever the number of shards, workers or processes the keys are spread over:
per-key runs give the same predictions at any scale.

Memory is bounded by ``max_keys``: past it, the keys that learned least recently
are forgotten (a forgotten key starts again from the blank model) and counted in
``keys_forgotten``.

This module imports only the standard library: a pickled :class:`PerKeyModel`
loads wherever its inner estimator loads (it is copied next to logged MLflow
models).

>>> from river import linear_model
>>> m = PerKeyModel(linear_model.LogisticRegression())
>>> for _ in range(50):
...     m.learn_one({"x": 1.0}, True, "JFK-LAX")
...     m.learn_one({"x": 1.0}, False, "EWR-ORD")
>>> m.predict_proba_one({"x": 1.0}, "JFK-LAX")[True] > 0.6 > m.predict_proba_one({"x": 1.0}, "EWR-ORD")[True]
True
>>> m.predict_proba_one({"x": 1.0}, "LGA-ATL")[True]  # never learned from: the blank model
0.5
>>> m.n_keys
2
"""

from __future__ import annotations

import copy
from typing import Any


class PerKeyModel:
    """A copy of ``blank`` per key; River's binary-classifier protocol with the key as an extra argument.

    Parameters
    ----------
    blank
        A fresh (untrained) estimator; every key starts from a deep copy of it, so every
        key's model is built with the same seed.
    max_keys
        Keys with a model kept at most; past it the keys that learned least recently are
        forgotten, down to 80% of ``max_keys``.
    """

    keyed = True
    """Marks estimators whose ``predict_proba_one``/``learn_one`` take the event's key."""

    def __init__(self, blank: Any, *, max_keys: int = 100_000) -> None:
        if not (hasattr(blank, "predict_proba_one") and hasattr(blank, "learn_one")):
            raise TypeError(f"blank must be a River binary classifier, got {type(blank).__name__}")
        if not isinstance(max_keys, int) or isinstance(max_keys, bool) or max_keys < 1:
            raise ValueError(f"max_keys must be an integer >= 1, got {max_keys!r}")
        self.blank = blank
        self.max_keys = max_keys
        # key -> estimator, in order of last learn (oldest first): eviction pops from the front.
        self.models: dict[Any, Any] = {}
        self.keys_forgotten = 0

    @property
    def n_keys(self) -> int:
        """Keys with a model of their own."""
        return len(self.models)

    def has_model(self, key: Any) -> bool:
        """Whether ``key`` has a model of its own (it learned, and was not forgotten since)."""
        return key in self.models

    def model_for(self, key: Any) -> Any:
        """The model that serves ``key`` (the blank model for a key never learned from)."""
        return self.models.get(key, self.blank)

    def predict_proba_one(self, x: dict[Any, float], key: Any = None) -> dict[bool, float]:
        model = self.models.get(key)
        return (self.blank if model is None else model).predict_proba_one(x)

    def learn_one(self, x: dict[Any, float], y: Any, key: Any = None) -> None:
        models = self.models
        model = models.pop(key, None)
        if model is None:
            model = copy.deepcopy(self.blank)
        model.learn_one(x, y)
        models[key] = model  # (re)inserted last: the most recently learned key
        if len(models) > self.max_keys:
            self._forget()

    def _forget(self) -> None:
        keep = int(self.max_keys * 0.8)
        models = self.models
        for key in list(models)[: len(models) - keep]:
            del models[key]
            self.keys_forgotten += 1

    def __repr__(self) -> str:
        return f"PerKeyModel({self.blank!r}, keys={len(self.models)}, max_keys={self.max_keys})"
