"""Named model specs: the River estimators a user picks by name.

A spec builds a fresh, seeded estimator that speaks River's binary-classifier
protocol (``predict_proba_one(x)`` / ``learn_one(x, y)`` on dicts of floats).

>>> spec = get_spec("linear")
>>> model = spec.build(seed=7)
>>> round(score_one(model, {"a": 1.0}), 3)
0.5
>>> sorted(SPECS)
['forest', 'hoeffding-tree', 'linear', 'linear-hash', 'naive-bayes', 'tree']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from river import forest, linear_model, naive_bayes, optim, tree

from dataflows.sparse import SparseLogisticRegression
from dataflows.transformers import NumericStandardScaler
from lake.scoring import score_one as score_one  # the rule lives below the dataflow (lake.reproduce uses it)


@dataclass(frozen=True)
class ModelSpec:
    """A named recipe for an online binary classifier."""

    name: str
    description: str
    factory: Callable[[int], Any]

    def build(self, *, seed: int) -> Any:
        """A fresh estimator; the same seed gives the same model."""
        return self.factory(seed)


def _linear(seed: int) -> Any:
    return NumericStandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(0.005), l2=0.0
    )


def _linear_hash(seed: int) -> Any:
    # No scaler: hashed indicators are 0/1 and the featurizer's numbers are log-scaled or
    # bounded (measured on urls, 300k events: accuracy 0.981 without, 0.946 with a scaler,
    # and 40% faster). A larger step suits rare tokens. The same SGD as River's
    # LogisticRegression(optimizer=SGD(0.05), l2=0) (identical scores), 4x cheaper per event.
    return SparseLogisticRegression(lr=0.05, intercept_lr=0.01)


def _tree(seed: int) -> Any:
    # Majority-class leaves give calibrated-enough probabilities; naive-Bayes leaves
    # (River's default) swing to 0/1 and blow up the log loss on flights (1.57 vs 0.57).
    return tree.HoeffdingAdaptiveTreeClassifier(grace_period=200, leaf_prediction="mc", seed=seed)


def _hoeffding_tree(seed: int) -> Any:
    # The demo's second model. On the 2013 flights the adaptive tree above ends below the no-skill
    # accuracy (0.741 vs 0.763, mean daily ROC AUC 0.498): its drift adaptation keeps swapping
    # subtrees for ones that rank nothing. This plain Hoeffding tree gives 0.779, log loss 0.518,
    # ROC AUC 0.608 at a third of the CPU (flows/bench/model_choice.py; BENCHMARKS.md). No seed to take:
    # it draws nothing at random.
    del seed
    return tree.HoeffdingTreeClassifier(grace_period=200, leaf_prediction="mc")


def _naive_bayes(seed: int) -> Any:
    return naive_bayes.GaussianNB()


def _forest(seed: int) -> Any:
    return forest.ARFClassifier(n_models=10, seed=seed)


SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("linear", "NumericStandardScaler | LogisticRegression (SGD, lr=0.005)", _linear),
        ModelSpec("linear-hash", "Sparse logistic regression for hashed features, no scaler (SGD, lr=0.05)",
                  _linear_hash),
        ModelSpec("tree", "Hoeffding adaptive tree (drift-aware)", _tree),
        ModelSpec("hoeffding-tree", "Hoeffding tree, majority-class leaves (grace 200)", _hoeffding_tree),
        ModelSpec("naive-bayes", "Gaussian naive Bayes", _naive_bayes),
        ModelSpec("forest", "Adaptive random forest, 10 trees (slow)", _forest),
    )
}


def register(spec: ModelSpec) -> None:
    """Make ``spec`` available by name (e.g. from a plugin module)."""
    if not spec.name or not isinstance(spec.name, str):
        raise ValueError(f"spec name must be a non-empty string, got {spec.name!r}")
    SPECS[spec.name] = spec


def get_spec(name: str) -> ModelSpec:
    """The spec registered as ``name``; the error lists the known names."""
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(SPECS))}") from None
