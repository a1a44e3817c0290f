"""Recent class shares as features: what the labels learned so far say about an event.

A multiclass classifier learns from the features it is given; on streams whose
labels move together in time (a day of storms makes every flight late) or per
category (a route that is often cancelled), the most telling features are the
labels themselves. :class:`ClassShares` wraps a classifier and adds, to every
``x`` it predicts or learns with, for each class ``c`` learned so far:

- ``target~recent=c``: the moving average of "the label was ``c``" over the labels
  learned (weight ``alpha`` for the newest): the class's share now;
- ``target~<column>=c``: for each one-hot column in ``x`` (features ``column=value``
  from :class:`~dataflows.features.KeyedFeaturizer`), the class's share among the
  labels of that value (the mean of its first ``1/alpha`` labels, then a moving
  average), shrunk towards the recent share with the weight of ``prior`` labels;
  several values of one column (hashed tokens) are averaged.

The shares lie in [0, 1] and are named like indicators (``name=value``), so
:class:`~dataflows.transformers.NumericStandardScaler` passes them unscaled: scaled,
a rare class's share (cancelled flights, 3 %) turned into spikes of 10 to 20 sd
and the model into an overconfident one (flights: accuracy 0.746 -> 0.750, log
loss 0.833 -> 0.810 over the first 40,000 flights, unscaled). The recent shares
also give the wrapped model the classes' base rates, which River's
``SoftmaxRegression`` (no intercept) cannot learn behind a scaler.

Only labels already learned enter (a label learns after its prediction): the
wrapper's state, so checkpoints and ``lake reproduce`` carry it. Memory is bounded:
past ``max_values`` category values, the fifth updated longest ago are forgotten.

>>> from monitoring.tasks import MajorityClassifier
>>> model = ClassShares(MajorityClassifier(), alpha=0.5, prior=0.0)
>>> model.learn_one({"origin=JFK": 1.0}, "late")
>>> model.learn_one({"origin=EWR": 1.0}, "on-time")
>>> model.features({"origin=JFK": 1.0, "hour": 7.0})
{'origin=JFK': 1.0, 'hour': 7.0, 'target~recent=late': 0.5, 'target~recent=on-time': 0.5, \
'target~origin=late': 1.0, 'target~origin=on-time': 0.0}
>>> model.predict_proba_one({"origin=LGA": 1.0})
{'late': 0.5, 'on-time': 0.5}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ClassShares:
    """``classifier`` learning and predicting with the recent class shares added to ``x`` (see the module)."""

    def __init__(self, classifier: Any, *, alpha: float = 0.02, prior: float = 10.0,
                 max_values: int = 100_000) -> None:
        if not hasattr(classifier, "predict_proba_one") or not hasattr(classifier, "learn_one"):
            raise TypeError(f"classifier must have predict_proba_one and learn_one, got {classifier!r}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        if prior < 0:
            raise ValueError(f"prior must be >= 0, got {prior!r}")
        if max_values < 10:
            raise ValueError(f"max_values must be >= 10, got {max_values!r}")
        self.classifier = classifier
        self.alpha = float(alpha)
        self.prior = float(prior)
        self.max_values = int(max_values)
        self.n = 0
        self.classes: list[Any] = []  # in the order first learned
        self.recent: list[float] = []  # one share per class
        self.values: dict[str, list[Any]] = {}  # "column=value" -> [labels, last update (self.n), shares]

    def predict_proba_one(self, x: Mapping[str, float]) -> dict[Any, float]:
        return self.classifier.predict_proba_one(self.features(x))

    def learn_one(self, x: Mapping[str, float], y: Any) -> None:
        self.classifier.learn_one(self.features(x), y)
        self.observe(x, y)

    def observe(self, x: Mapping[str, float], y: Any) -> None:
        """Update the shares with label ``y`` of ``x`` (after the classifier learned it)."""
        if y not in self.classes:
            self.classes.append(y)
            self.recent.append(0.0)
            for state in self.values.values():
                state[2].append(0.0)
        target = [1.0 if c == y else 0.0 for c in self.classes]
        self.n += 1
        rate = max(self.alpha, 1.0 / self.n)
        self.recent = [r + rate * (t - r) for r, t in zip(self.recent, target, strict=True)]
        values = self.values
        for name, value in x.items():
            if "=" not in name or not value:
                continue
            state = values.get(name)
            if state is None:
                state = values[name] = [0, 0, list(target)]
            state[0] += 1
            state[1] = self.n
            rate = max(self.alpha, 1.0 / state[0])
            state[2] = [a + rate * (t - a) for a, t in zip(state[2], target, strict=True)]
        if len(values) > self.max_values:
            keep = int(self.max_values * 0.8)
            for name in sorted(values, key=lambda v: values[v][1])[: len(values) - keep]:
                del values[name]

    def features(self, x: Mapping[str, float]) -> dict[str, float]:
        """``x`` plus the class shares (a new dict; ``x`` is not changed)."""
        out = dict(x)
        recent, classes = self.recent, self.classes
        for c, r in zip(classes, recent, strict=True):
            out[f"target~recent={c}"] = r
        if not classes:
            return out
        sums: dict[str, list[float]] = {}
        counts: dict[str, int] = {}
        prior, cap = self.prior, 1.0 / self.alpha
        for feature, value in x.items():
            column, eq, _ = feature.partition("=")
            if not eq or not value:
                continue
            state = self.values.get(feature)
            if state is None:
                shares = recent
            else:
                w = min(state[0], cap)
                shares = [(w * a + prior * r) / (w + prior) for a, r in zip(state[2], recent, strict=True)]
            if column in sums:
                sums[column] = [s + e for s, e in zip(sums[column], shares, strict=True)]
                counts[column] += 1
            else:
                sums[column], counts[column] = list(shares), 1
        for column, total in sums.items():
            k = counts[column]
            for c, s in zip(classes, total, strict=True):
                out[f"target~{column}={c}"] = s / k
        return out
