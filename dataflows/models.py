"""Named model specs: the River estimators a user picks by name, per task.

A spec builds a fresh, seeded estimator that speaks River's protocol for its
task (:mod:`lake.tasks`) on dicts of floats: ``predict_proba_one(x)`` /
``learn_one(x, y)`` for ``binary`` (y 0/1) and ``multiclass`` (y the class),
``predict_one(x)`` / ``learn_one(x, y)`` for ``regression`` (y a float).
:func:`monitoring.tasks.predict` reads any of them into the lake's columns.

>>> spec = get_spec("linear")
>>> model = spec.build(seed=7)
>>> round(score_one(model, {"a": 1.0}), 3)
0.5
>>> sorted(SPECS)
['forest', 'hoeffding-tree', 'linear', 'linear-hash', 'naive-bayes', 'tree']
>>> sorted(TASK_SPECS["regression"])
['forest', 'hoeffding-tree', 'linear', 'mean', 'persistence', 'tree']
>>> get_spec("tree", task="multiclass").task
'multiclass'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from river import forest, linear_model, naive_bayes, optim, preprocessing, tree

from dataflows.regressors import RangeGuard
from dataflows.sparse import SparseLogisticRegression
from dataflows.transformers import NumericStandardScaler
from lake.scoring import score_one as score_one  # the rule lives below the dataflow (lake.reproduce uses it)
from monitoring.tasks import MajorityClassifier, MeanRegressor, Persistence


@dataclass(frozen=True)
class ModelSpec:
    """A named recipe for an online estimator of one task (binary classifier by default)."""

    name: str
    description: str
    factory: Callable[[int], Any]
    task: str = "binary"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")

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


# --------------------------------------------------------------------------- regression
# Measured with dataflows/bench/task_models.py (its docstring has the numbers):
# River's default StandardScaler | LinearRegression (plain SGD 0.01 on the raw target) diverges as
# soon as the target's scale is not ~1 (flights delays in minutes: MAE 8.8e7), and so do the trees'
# default linear leaf models (HoeffdingAdaptiveTreeRegressor: MAE 569). Learning on the standardised
# target with AdaGrad and clipped gradients keeps every step meaningful on any scale; the trees use
# the same linear model in their leaves (adaptive: mean or model, whichever has erred less). A leaf
# model young in its leaf still answered 1e15 once on flights (tree MAE 4.7e11 over 20k events):
# every regressor answers within the labels' range widened by its span (RangeGuard).


def _stable_linear() -> Any:
    """Scaled features, AdaGrad (per-feature steps), gradients clipped at 10 (in target sd units)."""
    return NumericStandardScaler() | linear_model.LinearRegression(
        optimizer=optim.AdaGrad(0.05), intercept_lr=0.01, clip_gradient=10.0)


def _linear_regression(seed: int) -> Any:
    return RangeGuard(preprocessing.TargetStandardScaler(regressor=_stable_linear()))


def _tree_regression(seed: int) -> Any:
    return RangeGuard(preprocessing.TargetStandardScaler(regressor=tree.HoeffdingAdaptiveTreeRegressor(
        grace_period=200, leaf_prediction="adaptive", leaf_model=_stable_linear(), seed=seed)))


def _hoeffding_tree_regression(seed: int) -> Any:
    del seed  # draws nothing at random
    return RangeGuard(preprocessing.TargetStandardScaler(regressor=tree.HoeffdingTreeRegressor(
        grace_period=200, leaf_prediction="adaptive", leaf_model=_stable_linear())))


def _forest_regression(seed: int) -> Any:
    return RangeGuard(preprocessing.TargetStandardScaler(regressor=forest.ARFRegressor(
        n_models=10, leaf_prediction="adaptive", leaf_model=_stable_linear(), seed=seed)))


# --------------------------------------------------------------------------- multiclass


def _linear_multiclass(seed: int) -> Any:
    return NumericStandardScaler() | linear_model.SoftmaxRegression(optimizer=optim.SGD(0.01))


TASKS = ("binary", "multiclass", "regression")

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


TASK_SPECS: dict[str, dict[str, ModelSpec]] = {
    "binary": SPECS,
    "regression": {
        s.name: s
        for s in (
            ModelSpec("linear", "Linear regression on the standardised target (NumericStandardScaler, "
                      "AdaGrad 0.05, gradients clipped at 10)", _linear_regression, "regression"),
            ModelSpec("tree", "Hoeffding adaptive tree regressor, adaptive leaves with the linear model above",
                      _tree_regression, "regression"),
            ModelSpec("hoeffding-tree", "Hoeffding tree regressor, adaptive leaves with the linear model above",
                      _hoeffding_tree_regression, "regression"),
            ModelSpec("forest", "Adaptive random forest regressor, 10 trees, adaptive leaves (slow)",
                      _forest_regression, "regression"),
            ModelSpec("mean", "No-skill baseline: the mean of the labels so far", lambda seed: MeanRegressor(),
                      "regression"),
            ModelSpec("persistence", "No-skill baseline: the last label learned", lambda seed: Persistence(),
                      "regression"),
        )
    },
    "multiclass": {
        s.name: s
        for s in (
            ModelSpec("linear", "NumericStandardScaler | SoftmaxRegression (SGD, lr=0.01)", _linear_multiclass,
                      "multiclass"),
            ModelSpec("tree", "Hoeffding adaptive tree (drift-aware), majority-class leaves", _tree, "multiclass"),
            ModelSpec("hoeffding-tree", "Hoeffding tree, majority-class leaves (grace 200)", _hoeffding_tree,
                      "multiclass"),
            ModelSpec("naive-bayes", "Gaussian naive Bayes", _naive_bayes, "multiclass"),
            ModelSpec("forest", "Adaptive random forest, 10 trees (slow)", _forest, "multiclass"),
            ModelSpec("majority", "No-skill baseline: the most frequent class, frequencies as probabilities",
                      lambda seed: MajorityClassifier(), "multiclass"),
        )
    },
}
"""Specs by task, then name; ``TASK_SPECS["binary"]`` is :data:`SPECS`."""


def register(spec: ModelSpec) -> None:
    """Make ``spec`` available by name for its task (e.g. from a plugin module)."""
    if not spec.name or not isinstance(spec.name, str):
        raise ValueError(f"spec name must be a non-empty string, got {spec.name!r}")
    TASK_SPECS[spec.task][spec.name] = spec


def get_spec(name: str, *, task: str = "binary") -> ModelSpec:
    """The spec registered as ``name`` for ``task``; the error lists the names known for it."""
    if task not in TASK_SPECS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    known = TASK_SPECS[task]
    try:
        return known[name]
    except KeyError:
        which = "known" if task == "binary" else f"known for {task}"
        raise ValueError(f"unknown model {name!r}; {which}: {', '.join(sorted(known))}") from None
