"""The metrics of each task over a benchmark's scored events (:mod:`flows.bench.report` reports them).

Binary: accuracy, log loss, ROC AUC of P(positive); multiclass: accuracy, macro-F1 and log loss of
one row of class probabilities per event; regression: MAE, RMSE, R² of the predicted values.
:func:`no_skill` is what a constant answer scores on the same labels.

>>> y = np.array([1, 0, 1, 1]); p = np.array([0.9, 0.2, 0.4, 0.8])
>>> {k: round(v, 3) for k, v in overall(y, p).items()}
{'accuracy': 0.75, 'log_loss': 0.367, 'roc_auc': 1.0}
>>> {k: round(v, 3) for k, v in no_skill(y).items()}
{'accuracy': 0.75, 'log_loss': 0.562, 'roc_auc': 0.5}
>>> {k: round(v, 3) for k, v in overall(np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 3.0]),
...                                      task="regression").items()}
{'mae': 0.5, 'rmse': 0.645, 'r2': 0.732}
>>> p3 = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
>>> {k: round(v, 3) for k, v in overall(np.array([0, 1, 2]), p3, task="multiclass").items()}
{'accuracy': 0.667, 'macro_f1': 0.556, 'log_loss': 0.961}
"""

from __future__ import annotations

import numpy as np

from monitoring.prequential import roc_auc

_EPS = 1e-15

TASK_METRICS = {"binary": ("accuracy", "log_loss", "roc_auc"), "multiclass": ("accuracy", "macro_f1", "log_loss"),
                "regression": ("mae", "rmse", "r2")}
"""The metrics of each task, in the order the report shows them."""
LABELS = {"accuracy": "accuracy", "log_loss": "log loss", "roc_auc": "ROC AUC", "macro_f1": "macro-F1",
          "mae": "MAE", "rmse": "RMSE", "r2": "R²"}
"""What a reader sees for each metric."""


def overall(y: np.ndarray, p: np.ndarray, threshold: float = 0.5, *, task: str = "binary") -> dict[str, float | None]:
    """The ``task``'s metrics (:data:`TASK_METRICS`) of scores ``p`` for labels ``y`` (see
    :class:`flows.bench.stream.Stream`: 0/1, class indices with one row of probabilities each, values)."""
    if len(y) == 0:
        return dict.fromkeys(TASK_METRICS[task])
    if task == "regression":
        err = np.asarray(p, dtype=float) - y
        var = float(np.var(y))
        r2 = 1.0 - float(np.mean(err ** 2)) / var if len(y) > 1 and var > 0 else None
        return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err ** 2))), "r2": r2}
    if task == "multiclass":
        y = np.asarray(y, dtype=np.int64)
        pred = np.argmax(p, axis=1)  # ties: the first class (the smallest as text), as the dataflow
        ll = -np.log(np.clip(p[np.arange(len(y)), y], _EPS, 1.0))
        return {"accuracy": float((pred == y).mean()), "macro_f1": _macro_f1(y, pred), "log_loss": float(ll.mean())}
    pos = y == 1
    ll = -np.log(np.clip(np.where(pos, p, 1.0 - p), _EPS, 1.0))
    return {"accuracy": float(((p >= threshold) == pos).mean()), "log_loss": float(ll.mean()),
            "roc_auc": roc_auc(pos, p)}


def _macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean F1 over the classes seen in ``y`` or ``pred`` (as the dataflow's ``metrics``)."""
    f1 = []
    for c in np.union1d(y, pred).tolist():
        tp = float(np.sum((pred == c) & (y == c)))
        fp, fn = float(np.sum((pred == c) & (y != c))), float(np.sum((pred != c) & (y == c)))
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(f1))


def no_skill(y: np.ndarray, *, task: str = "binary", n_classes: int = 0) -> dict[str, float | None]:
    """Metrics of a constant score at the base rate of ``y`` (0/1): what a model must beat. Multiclass:
    the classes' shares (the majority class predicted); regression: the mean of ``y``."""
    if len(y) == 0:
        return dict.fromkeys(TASK_METRICS[task])
    if task == "regression":
        return overall(y, np.full(len(y), float(np.mean(y))), task=task) | {"r2": 0.0}
    if task == "multiclass":
        shares = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes) / len(y)
        return overall(y, np.tile(shares, (len(y), 1)), task=task)
    base = float(np.mean(y == 1))
    b = min(max(base, _EPS), 1.0 - _EPS)
    return {"accuracy": max(base, 1.0 - base), "log_loss": float(-(base * np.log(b) + (1 - base) * np.log(1 - b))),
            "roc_auc": 0.5}
