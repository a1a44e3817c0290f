"""One ``linear`` model (``NumericStandardScaler | LogisticRegression``) as arrays, for the tabular step.

:class:`LinearState` keeps what the River pipeline keeps (the scaler's counts, means and variances,
the weights and the intercept, the optimizer's step count) as arrays over the feature ids of a
:class:`~dataflows.tabular.FeatureSpace`, plus the insertion order of each of River's dicts, so
that :meth:`LinearState.to_river` leaves the pipeline exactly as the item path would have (equal
pickles: equal checkpoints). :func:`dataflows._tabular_kernels._linear_tabular` runs it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def supports(model: Any) -> bool:
    """Whether ``model`` is a pipeline :class:`TabularStep` runs: ``NumericStandardScaler`` (with
    std, no window) ``| LogisticRegression`` with SGD at a constant rate, the log loss (unweighted),
    no regularisation, a constant intercept rate and zero initial weights (the ``linear`` spec)."""
    from river import compose, linear_model, optim

    from dataflows.transformers import NumericStandardScaler

    if type(model) is not compose.Pipeline or len(model.steps) != 2:
        return False
    scaler, lr = model.steps.values()
    return (type(scaler) is NumericStandardScaler and scaler.with_std and scaler.window_size is None
            and type(lr) is linear_model.LogisticRegression and type(lr.optimizer) is optim.SGD
            and type(lr.optimizer.lr) is optim.schedulers.Constant
            and type(lr.intercept_lr) is optim.schedulers.Constant
            and type(lr.loss) is optim.losses.Log and lr.loss.weight_pos == 1.0 and lr.loss.weight_neg == 1.0
            and lr.l2 == 0 and lr.l1 == 0 and lr.clip_gradient >= 1.0
            and type(lr.initializer) is optim.initializers.Zeros)


class LinearState:
    """One ``NumericStandardScaler | LogisticRegression`` as arrays over a :class:`FeatureSpace`'s ids.

    Per feature id: the scaler's count, mean and variance, the weight, and stamps giving each of
    River's dicts (``counts``/``means``, ``vars``, the weights) its insertion order (-1: absent), so
    :meth:`to_river` rebuilds the pipeline exactly as the item path would have left it (equal
    pickles, equal checkpoints).
    """

    def __init__(self, *, lr: float, intercept_lr: float, intercept: float, n_iterations: int, stamp: int) -> None:
        self.params = np.array([intercept, lr, intercept_lr, 0.5], np.float64)
        self.counters = np.array([stamp, n_iterations], np.int64)
        self.count = np.zeros(0, np.int64)
        self.mean = np.zeros(0, np.float64)
        self.var = np.zeros(0, np.float64)
        self.w = np.zeros(0, np.float64)
        self.lstamp = np.zeros(0, np.int64)
        self.vstamp = np.zeros(0, np.int64)
        self.wstamp = np.zeros(0, np.int64)

    def ensure(self, n: int) -> None:
        """Room for feature ids below ``n``."""
        size = self.count.size
        if n <= size:
            return
        cap = max(n, 2 * size, 64)
        for name, fill in (("count", 0), ("mean", 0.0), ("var", 0.0), ("w", 0.0),
                           ("lstamp", -1), ("vstamp", -1), ("wstamp", -1)):
            old = getattr(self, name)
            new = np.full(cap, fill, old.dtype)
            new[:size] = old
            setattr(self, name, new)

    @classmethod
    def from_river(cls, model: Any, space: Any) -> LinearState | None:
        """The state of a pipeline :func:`supports` accepts (``None`` for any other); new names are
        registered in ``space``."""
        if not supports(model):
            return None
        scaler, lr = model.steps.values()
        if list(scaler.means) != list(scaler.counts):
            return None  # (River's own learn_one cannot leave them apart)
        weights = lr.weights
        state = cls(lr=lr.optimizer.lr.learning_rate, intercept_lr=lr.intercept_lr.learning_rate,
                    intercept=lr.intercept, n_iterations=lr.optimizer.n_iterations,
                    stamp=max(len(scaler.counts), len(scaler.vars), len(weights)))
        # Each dict's names to ids (new names registered in this order: the counts', the variances', the
        # weights'), then its values and positions set at once: a live shard switches paths several times a
        # second, and a feature at a time took 1.9 ms for the flights' 3,600 one-hot weights.
        learned = space.ids(list(scaler.counts))
        varied = space.ids(list(scaler.vars))
        weighted = space.ids(list(weights))
        state.ensure(len(space))
        state.lstamp[learned] = np.arange(learned.size)
        state.count[learned] = np.fromiter(scaler.counts.values(), np.int64, learned.size)
        state.mean[learned] = np.fromiter(scaler.means.values(), np.float64, learned.size)
        state.vstamp[varied] = np.arange(varied.size)
        state.var[varied] = np.fromiter(scaler.vars.values(), np.float64, varied.size)
        state.wstamp[weighted] = np.arange(weighted.size)
        state.w[weighted] = np.fromiter(weights.values(), np.float64, weighted.size)
        return state

    def to_river(self, model: Any, space: Any) -> None:
        """Write this state into ``model`` (a pipeline of the same settings), in place."""
        from river import utils

        scaler, lr = model.steps.values()
        names = space.names
        # (the same dict objects refilled in stamp order; the values through tolist: Python ints and floats)
        learned = _by_stamp(self.lstamp)
        learned_names = [names[f] for f in learned.tolist()]
        scaler.counts.clear()
        dict.update(scaler.counts, zip(learned_names, self.count[learned].tolist(), strict=True))  # (not Counter's)
        scaler.means.clear()
        scaler.means.update(zip(learned_names, self.mean[learned].tolist(), strict=True))
        varied = _by_stamp(self.vstamp)
        scaler.vars.clear()
        scaler.vars.update(zip([names[f] for f in varied.tolist()], self.var[varied].tolist(), strict=True))
        weighted = _by_stamp(self.wstamp)
        lr._weights = utils.VectorDict(dict(zip([names[f] for f in weighted.tolist()], self.w[weighted].tolist(),
                                                strict=True)))
        lr.intercept = float(self.params[0])
        lr.optimizer.n_iterations = int(self.counters[1])

    # -- a batch (the interface :class:`~dataflows.tabular.TabularStep` drives) --------------------
    def begin(self, n_ev: int) -> None:
        """A batch of ``n_ev`` events starts."""

    def run(self, kinds, start, stop, ev_pos, lb_pos, ev_slot, lb_slot, lb_y, arena, is_num, buf, scores) -> None:
        """Items ``start <= i < stop``: scores of the events into ``scores``, labels learned."""
        from dataflows import _tabular_kernels

        _tabular_kernels._linear_tabular(kinds, start, stop, ev_pos, lb_pos, ev_slot, lb_slot, lb_y,
                                         arena.a_off, arena.a_len, arena.p_f, arena.p_v, is_num,
                                         self.count, self.mean, self.var, self.lstamp, self.vstamp, self.w,
                                         self.wstamp, self.params, self.counters, buf, scores)

    def finish(self, scores: np.ndarray) -> None:
        """The batch is done (its ``scores`` are final)."""

    def finite(self) -> bool:
        """Whether the weights and the intercept are all finite (the item path's guard, dataflows.guard)."""
        return math.isfinite(self.params[0]) and bool(np.isfinite(self.w).all())


def _by_stamp(stamps: np.ndarray) -> np.ndarray:
    """The ids present (stamp >= 0) in stamp order."""
    present = np.flatnonzero(stamps >= 0)
    return present[np.argsort(stamps[present], kind="stable")]
