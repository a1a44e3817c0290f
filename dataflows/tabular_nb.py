"""The ``naive-bayes`` model (River's ``GaussianNB``) as arrays, for the tabular step.

:class:`NBState` keeps what ``GaussianNB`` keeps (per class: its count and, per feature, the
running count, mean and sum of squares of a ``stats.Var`` with ``ddof=0``) as arrays over the
feature ids of a :class:`~dataflows.tabular.FeatureSpace`, with the insertion order of River's
dicts. :func:`dataflows._tabular_kernels._gaussian_nb` learns and computes every event's joint
log-likelihoods in item order; the log-sum-exp over the classes is then numpy's, as
``scipy.special.logsumexp`` computes it for River (``np.exp``, ``np.log1p``), and the
probability ``math.exp(jll - lse)`` the C library's.
"""

from __future__ import annotations

import math
from sys import intern as _intern
from typing import Any

import numpy as np

_PDF_EPS = 10e-10


def supports_nb(model: Any) -> bool:
    """Whether ``model`` is a plain ``GaussianNB`` (the ``naive-bayes`` spec)."""
    from river import naive_bayes

    return type(model) is naive_bayes.GaussianNB


class NBState:
    """One ``GaussianNB`` over boolean classes (False = 0, True = 1) as arrays."""

    def __init__(self) -> None:
        self.cls_count = np.zeros(2, np.int64)
        self.cls_stamp = np.full(2, -1, np.int64)
        self.cls_gstamp = np.full(2, -1, np.int64)
        self.counters = np.zeros(1, np.int64)
        self.consts = np.array([_PDF_EPS, math.log(_PDF_EPS), math.sqrt(2.0 * math.pi)], np.float64)
        self.n = np.zeros((2, 0), np.float64)
        self.mean = np.zeros((2, 0), np.float64)
        self.s2 = np.zeros((2, 0), np.float64)
        self.stamp = np.zeros((2, 0), np.int64)
        self._batch: tuple | None = None

    def ensure(self, size: int) -> None:
        have = self.n.shape[1]
        if size <= have:
            return
        cap = max(size, 2 * have, 64)
        for name, fill in (("n", 0.0), ("mean", 0.0), ("s2", 0.0), ("stamp", -1)):
            old = getattr(self, name)
            new = np.full((2, cap), fill, old.dtype)
            new[:, :have] = old
            setattr(self, name, new)

    @classmethod
    def from_river(cls, model: Any, space: Any) -> NBState | None:
        if not supports_nb(model):
            return None
        classes = list(model.class_counts)
        if any(type(c) is not bool for c in classes) or any(type(c) is not bool for c in model.gaussians):
            return None
        state = cls()
        stamp = 0
        for c in classes:
            state.cls_stamp[int(c)] = stamp
            state.cls_count[int(c)] = model.class_counts[c]
            stamp += 1
        for c, inner in model.gaussians.items():
            state.cls_gstamp[int(c)] = stamp
            stamp += 1
            for name, g in inner.items():
                var = g._var
                if var.ddof != 0:
                    return None
                f = space.id(name)
                state.ensure(f + 1)
                state.stamp[int(c), f] = stamp
                stamp += 1
                state.n[int(c), f] = var.mean.n
                state.mean[int(c), f] = var.mean._mean
                state.s2[int(c), f] = var._S
        state.counters[0] = stamp
        state.ensure(len(space))
        return state

    def to_river(self, model: Any, space: Any) -> None:
        """Write this state into ``model`` in place (its Gaussians kept where they exist)."""
        names = space.names
        model.class_counts.clear()
        for c in _ordered(self.cls_stamp):
            model.class_counts[bool(c)] = int(self.cls_count[c])
        old = {c: dict(inner) for c, inner in model.gaussians.items()}
        # The names as the class dicts hold them (the same string objects): a pickle of the model
        # (a checkpoint) shares strings exactly as the item path's model does, byte for byte.
        own = {c: {k: k for k in inner} for c, inner in old.items()}
        model.gaussians.clear()
        for c in _ordered(self.cls_gstamp):
            inner = model.gaussians[bool(c)]  # (a new class dict, from the model's own factory)
            kept = old.get(bool(c), {})
            held = own.get(bool(c), {})
            row = self.stamp[c]
            present = np.flatnonzero(row >= 0)
            for f in present[np.argsort(row[present], kind="stable")].tolist():
                name = names[f]
                key = held.get(name)
                if key is None:  # the item path's key: its featurizer interns one-hot names
                    key = _intern(name) if "=" in name else name
                g = kept.get(name)
                if g is None:
                    g = inner[key]
                else:
                    inner[key] = g
                g._var.mean.n = float(self.n[c, f])
                g._var.mean._mean = float(self.mean[c, f])
                g._var._S = float(self.s2[c, f])

    # -- a batch -------------------------------------------------------------------------------
    def begin(self, n_ev: int) -> None:
        self._batch = (np.zeros((n_ev, 2), np.float64), np.zeros((n_ev, 2), np.int64), np.zeros(n_ev, np.int64))

    def run(self, kinds, start, stop, ev_pos, lb_pos, ev_slot, lb_slot, lb_y, arena, is_num, buf, scores) -> None:
        from dataflows import _tabular_kernels

        jll, cls_at, n_cls = self._batch
        _tabular_kernels._gaussian_nb(kinds, start, stop, ev_pos, lb_pos, ev_slot, lb_slot, lb_y,
                                      arena.a_off, arena.a_len, arena.p_f, arena.p_v, self.cls_count,
                                      self.cls_stamp, self.cls_gstamp, self.n, self.mean, self.s2, self.stamp,
                                      self.counters, self.consts, jll, cls_at, n_cls)

    def finite(self) -> bool:
        """Always: the item path's guard watches the weights of linear models (GaussianNB has none)."""
        return True

    def finish(self, scores: np.ndarray) -> None:
        """Every event's ``predict_proba_one(x).get(True, 0.0)`` (0.5 while no class is known)."""
        from dataflows import _tabular_kernels

        jll, cls_at, n_cls = self._batch
        self._batch = None
        scores[:] = 0.5
        one = n_cls == 1
        scores[one] = (cls_at[one, 0] == 1).astype(np.float64)  # exp(jll - jll) = 1.0 for the only class
        two = np.flatnonzero(n_cls == 2)
        if two.size:
            a = jll[two]
            a_max = a.max(axis=1)
            other = a.min(axis=1)
            # scipy.special.logsumexp of [a_max, other]: log1p(exp(other - a_max)) + log(1) + a_max
            lse = np.log1p(np.exp(other - a_max)) + np.log(np.ones(two.size)) + a_max
            true_at = (cls_at[two, 1] == 1).astype(np.int64)
            ll_true = a[np.arange(two.size), true_at]
            out = np.empty(two.size, np.float64)
            _tabular_kernels._exp_diff(ll_true, lse, out)
            scores[two] = out


def _ordered(stamps: np.ndarray) -> list[int]:
    present = np.flatnonzero(stamps >= 0)
    return present[np.argsort(stamps[present], kind="stable")].tolist()
