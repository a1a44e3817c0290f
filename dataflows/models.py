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

from river import forest, linear_model, optim, preprocessing, tree

from dataflows.class_shares import ClassShares
from dataflows.regressors import RangeGuard
from dataflows.seeded import SeededGaussianSplitter, seeded_gaussian_nb
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
    # (River's GaussianSplitter with its Gaussians' generators seeded: the same run pickles the same bytes.)
    return tree.HoeffdingAdaptiveTreeClassifier(grace_period=200, leaf_prediction="mc", seed=seed,
                                                splitter=SeededGaussianSplitter(seed=seed))


def _hoeffding_tree(seed: int) -> Any:
    # The demo's second model. On the 2013 flights the adaptive tree above ends below the no-skill
    # accuracy (0.741 vs 0.763, mean daily ROC AUC 0.498): its drift adaptation keeps swapping
    # subtrees for ones that rank nothing. This plain Hoeffding tree gives 0.779, log loss 0.518,
    # ROC AUC 0.608 at a third of the CPU (flows/bench/model_choice.py; BENCHMARKS.md). It draws nothing at
    # random; the seed goes to its splitter's Gaussians (their generators are pickled, never drawn from).
    return tree.HoeffdingTreeClassifier(grace_period=200, leaf_prediction="mc",
                                        splitter=SeededGaussianSplitter(seed=seed))


def _naive_bayes(seed: int) -> Any:
    # River's GaussianNB, its Gaussians' generators seeded: the same run pickles the same checkpoint bytes.
    return seeded_gaussian_nb(seed)


def _forest(seed: int) -> Any:
    return forest.ARFClassifier(n_models=10, seed=seed, splitter=SeededGaussianSplitter(seed=seed))


# --------------------------------------------------------------------------- regression
# Measured with dataflows/bench/task_models.py (its docstring has the numbers; labels learned when they
# arrive, as in the dataflow). River's default StandardScaler | LinearRegression (plain SGD 0.01 on the
# raw target) diverges as soon as the target's scale is not ~1 (flights delays in minutes: MAE 8.8e7),
# and so do the trees' default linear leaf models. Learning on the standardised target with AdaGrad and
# clipped gradients keeps every step meaningful on any scale. The loss is Huber with its threshold at
# one standard deviation of the target: on a heavy-tailed target (arrival delays: a few flights hours
# late) squared-loss steps follow the outliers and the model ended below the mean predictor (first
# 40,000 flights: MAE 25.37 vs 23.77, RMSE 40.44 vs 39.83); Huber's bounded steps give 23.21 and 39.13,
# and the same as squared loss on Gaussian noise (friedman-drift 2.178 vs 2.185; temperature 1.214 vs
# 1.220, persistence 1.262). Scaled features are clipped at 5 sd: on a stream with a log-normal amount
# (the shapes' many-keys, 100,000 events) the unclipped model's RMSE was above the mean's (11.80 vs 11.73)
# and is 10.17 clipped (neutral on the others). A leaf model young in its leaf once answered 1e15 on
# flights: every regressor answers within the labels' range widened by its span (RangeGuard).


def _stable_linear() -> Any:
    """Scaled features (clipped at 5 sd), AdaGrad, Huber loss at 1 sd, gradients clipped at 10 (target sd units)."""
    return NumericStandardScaler(clip=5.0) | linear_model.LinearRegression(
        optimizer=optim.AdaGrad(0.05), loss=optim.losses.Huber(1.0), intercept_lr=0.01, clip_gradient=10.0)


def _linear_regression(seed: int) -> Any:
    return RangeGuard(preprocessing.TargetStandardScaler(regressor=_stable_linear()))


def _tree_regression(seed: int) -> Any:
    # A Hoeffding tree on the target as given (splits and leaf means need no scaling; a tree under
    # TargetStandardScaler keeps leaf means in the units of the scaler's past, which drift as the sd
    # grows), each leaf's linear model on its own standardised target; adaptive leaves (mean or model,
    # whichever has erred less). First 40,000 flights: MAE 23.15, RMSE 39.11 (mean 23.77, 39.83; the
    # whole year through the dataflow 25.77 and 42.86 vs 27.81 and 44.58). River's adaptive tree
    # (HoeffdingAdaptiveTreeRegressor) is not used: its per-node drift detectors fire on heavy-tailed
    # errors and swap in young subtrees (flights: MAE 27.1 to 38.6, RMSE 66 to 167, whatever the leaves
    # or the detector's delta), although it is the better tree on clean synthetic drift (friedman-drift
    # 2.02 vs 2.33).
    del seed  # draws nothing at random
    return RangeGuard(tree.HoeffdingTreeRegressor(
        grace_period=200, leaf_prediction="adaptive",
        leaf_model=preprocessing.TargetStandardScaler(regressor=_stable_linear())))


def _forest_regression(seed: int) -> Any:
    # Built as the tree above (raw target, standardised leaf models). First 10,000 flights: MAE 19.82, RMSE
    # 36.36 (mean 21.17, 36.89; under one TargetStandardScaler 20.55, 37.03); 5,000 events of
    # friedman-drift 2.221 (2.213), temperature 1.226 (1.284).
    return RangeGuard(forest.ARFRegressor(
        n_models=10, leaf_prediction="adaptive", seed=seed,
        leaf_model=preprocessing.TargetStandardScaler(regressor=_stable_linear())))


# --------------------------------------------------------------------------- multiclass


def _linear_multiclass(seed: int) -> Any:
    # Measured with dataflows/bench/task_models.py and through the dataflow (BENCHMARKS.md, issue 18).
    # The recent share of each class, overall and per category value, as features (ClassShares): on
    # flights the schedule alone does not tell a late flight from an on-time one (batch logistic
    # regression on it: accuracy 0.680 on the next month, the majority class 0.715), the recent
    # arrivals do (0.733). Steps of 0.002: with 0.01 the most probable class swaps on noise (flights,
    # first 40,000: accuracy 0.731 < the majority's 0.741; 0.005: 0.745; 0.002: 0.750), at a cost on
    # clean synthetic drift (rbf-drift, 20,000: 0.562 with 0.01, 0.522 with 0.002; majority 0.303).
    # Features clipped at 5 sd, as for regression (one-key shape, log loss 1.263 -> 1.197; majority 1.254).
    return ClassShares(NumericStandardScaler(clip=5.0) | linear_model.SoftmaxRegression(optimizer=optim.SGD(0.002)))


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
                      "features clipped at 5 sd, AdaGrad 0.05, Huber loss at 1 sd, gradients clipped at 10)",
                      _linear_regression, "regression"),
            ModelSpec("tree", "Hoeffding tree regressor, adaptive leaves with the linear model above (not the "
                      "adaptive tree: its drift handling fails on heavy-tailed errors)", _tree_regression,
                      "regression"),
            ModelSpec("hoeffding-tree", "Hoeffding tree regressor, adaptive leaves with the linear model above "
                      "(the same as tree)", _tree_regression, "regression"),
            ModelSpec("forest", "Adaptive random forest regressor, 10 trees, adaptive leaves as the tree's (slow)",
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
            ModelSpec("linear", "NumericStandardScaler (clipped at 5 sd) | SoftmaxRegression (SGD, lr=0.002) with "
                      "the recent class shares overall and per category as features", _linear_multiclass,
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
