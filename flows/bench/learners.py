"""Batch learners the periodic and static strategies fit (:mod:`flows.bench.strategies`).

``sk-logreg`` and ``sk-sgd`` (:class:`SkLearner`: scikit-learn on the sparse feature dicts,
max-abs scaled), ``hgb`` (:class:`HgbLearner`: ``HistGradientBoostingClassifier`` on a
:class:`DenseProjection`), ``river-SPEC`` (:class:`RiverBatchLearner`: a River spec fitted in one
pass over the window, in event order). :func:`make_learner` builds one by name.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from flows.bench.stream import Stream

_MAX_CATEGORIES = 254  # HistGradientBoosting: category codes must be < max_bins (255)


class _Constant:
    """What a batch learner serves when its training set holds one class only."""

    def __init__(self, p: float) -> None:
        self.p = p


class SkLearner:
    """scikit-learn on the sparse features (``sk-logreg``, ``sk-sgd``)."""

    def __init__(self, stream: Stream, name: str, seed: int) -> None:
        self.name = name
        self.seed = seed
        self.stream = stream
        self.y = stream.y

    def _estimator(self) -> Any:
        from sklearn.linear_model import LogisticRegression, SGDClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import MaxAbsScaler

        if self.name == "sk-sgd":
            clf = SGDClassifier(loss="log_loss", alpha=1e-5, max_iter=5, tol=None, random_state=self.seed)
        else:
            # lbfgs capped at 50 iterations. Measured on 164k flights rows: held-out log loss 0.543 at
            # 50 iterations, 0.546 at 100, 0.548 at 200 (none converged); 50 costs a quarter of 200.
            clf = LogisticRegression(C=1.0, max_iter=50)
        return make_pipeline(MaxAbsScaler(), clf)

    def matrix(self, rows: np.ndarray) -> Any:
        return self.stream.csr(rows)

    def fit(self, rows: np.ndarray) -> Any:
        ys = self.y[rows]
        if ys.min() == ys.max():
            return _Constant(float(ys[0]))
        model = self._estimator()
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter is part of the budget
            model.fit(self.matrix(rows), ys)
        return model

    def predict(self, model: Any, lo: int, hi: int) -> np.ndarray:
        if isinstance(model, _Constant):
            return np.full(hi - lo, model.p)
        return model.predict_proba(self.matrix(np.arange(lo, hi)))[:, 1]

    def latency_ns(self, model: Any, e: int) -> int:
        return _time_one(model, self.matrix(np.array([e])))


def _time_one(model: Any, row: Any) -> int:
    if isinstance(model, _Constant):
        return 0
    t0 = time.perf_counter_ns()
    model.predict_proba(row)
    return time.perf_counter_ns() - t0


class HgbLearner(SkLearner):
    """``HistGradientBoostingClassifier`` on a dense projection of the features.

    Numeric features are columns as they are (missing: NaN); each one-hot field
    (``"carrier=UA"``) becomes one categorical column whose codes follow the order in
    which the stream first showed the values; past the 254th value a field's values
    are missing to the model (a limit of the estimator).
    """

    def __init__(self, stream: Stream, name: str, seed: int) -> None:
        super().__init__(stream, name, seed)
        self.projection = DenseProjection(stream)

    def _estimator(self) -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, early_stopping=False,
                                              categorical_features=self.projection.categorical,
                                              random_state=self.seed)

    def matrix(self, rows: np.ndarray) -> np.ndarray:
        return self.projection(rows)


class DenseProjection:
    """Rows of the stream as a dense float32 matrix: see :class:`HgbLearner`."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        columns: dict[str, int] = {}
        self.col = np.empty(len(stream.names), dtype=np.int64)
        self.code = np.full(len(stream.names), np.nan)
        self.is_cat = np.zeros(len(stream.names), dtype=bool)
        seen: dict[str, int] = {}
        # Hashed tokens (``url=#1f3a``) are multi-hot: many per row, so they cannot share one
        # categorical column; the projection leaves them out (numeric features only for such fields).
        self.keep = np.array([not n.partition("=")[2].startswith("#") for n in stream.names], dtype=bool)
        for j, name in enumerate(stream.names):
            if not self.keep[j]:
                self.col[j] = -1
                continue
            field, eq, _ = name.partition("=")
            self.col[j] = columns.setdefault(field + eq, len(columns))
            if eq:
                self.is_cat[j] = True
                c = seen.get(field, 0)
                seen[field] = c + 1
                if c < _MAX_CATEGORIES:
                    self.code[j] = c
        self.columns = list(columns)
        self.categorical = np.array([c.endswith("=") for c in self.columns], dtype=bool)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        indptr, pos = self.stream.entries(rows)
        j = np.asarray(self.stream.indices)[pos]
        out = np.full((len(indptr) - 1, len(self.columns)), np.nan, dtype=np.float32)
        which = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        kept = self.keep[j]
        which, j, pos = which[kept], j[kept], pos[kept]
        out[which, self.col[j]] = np.where(self.is_cat[j], self.code[j], np.asarray(self.stream.values)[pos])
        return out


class RiverBatchLearner:
    """A River spec (``river-linear``) fitted from scratch in one pass over the training rows."""

    def __init__(self, stream: Stream, name: str, seed: int) -> None:
        from dataflows.models import get_spec

        self.stream = stream
        self.spec = get_spec(name.removeprefix("river-"))
        self.seed = seed
        self.cpu = 0.0  # model calls only; dicts are built outside the timed parts

    def fit(self, rows: np.ndarray) -> Any:
        model = self.spec.build(seed=self.seed)
        y = self.stream.y
        pos = 0
        for xs in self.stream.rows(rows):
            ys = (y[rows[pos:pos + len(xs)]] == 1).tolist()
            c0 = time.process_time()
            for x, label in zip(xs, ys, strict=True):
                model.learn_one(x, label)
            self.cpu += time.process_time() - c0
            pos += len(xs)
        return model

    def predict(self, model: Any, lo: int, hi: int) -> np.ndarray:
        out = np.empty(hi - lo)
        i = 0
        for xs in self.stream.rows(np.arange(lo, hi)):
            c0 = time.process_time()
            for x in xs:
                p = model.predict_proba_one(x)
                out[i] = p.get(True, 0.0) if p else 0.5
                i += 1
            self.cpu += time.process_time() - c0
        return out

    def latency_ns(self, model: Any, e: int) -> int:
        x = self.stream.row(e)
        t0 = time.perf_counter_ns()
        model.predict_proba_one(x)
        return time.perf_counter_ns() - t0


def make_learner(stream: Stream, name: str, seed: int) -> Any:
    if name == "hgb":
        return HgbLearner(stream, name, seed)
    if name.startswith("river-"):
        return RiverBatchLearner(stream, name, seed)
    return SkLearner(stream, name, seed)
