"""Compiled loop of the tabular columnar step (:mod:`dataflows.tabular`), imported on first use.

One model ``NumericStandardScaler | LogisticRegression(SGD)`` over a batch, in item order, with
River's arithmetic operation by operation (see :func:`_linear_tabular`).
"""

from __future__ import annotations

import math

import numba

from dataflows._numba_cache import load_lightly

# Positions in a model's ``params`` (floats) and ``counters`` (integers).
P_INTERCEPT, P_LR, P_ILR, P_HALF = 0, 1, 2, 3
C_STAMP, C_ITER = 0, 1


@numba.njit(cache=True, nogil=True)
def _scale(f, x, count, mean, var, vstamp, counters, half):  # pragma: no cover
    """StandardScaler.transform_one of one numeric value (``vars_[f]`` is created when absent)."""
    if vstamp[f] < 0:
        vstamp[f] = counters[C_STAMP]
        counters[C_STAMP] += 1
    v = var[f]
    if v:
        # ``v ** half`` with a run-time exponent: libm's pow, as CPython's ``v ** 0.5`` (a constant
        # exponent lets LLVM turn it into sqrt, which differs in the last bit now and then).
        return (x - mean[f]) / v ** half
    return 0.0


@numba.njit(cache=True, nogil=True)
def _linear_tabular(kinds, start, stop, ev_pos, lb_pos, ev_slot, lb_slot, lb_y,  # pragma: no cover
                    a_off, a_len, p_f, p_v, is_num,
                    count, mean, var, lstamp, vstamp, w, wstamp, params, counters, buf, scores):
    """Predict each event (``kinds`` 0), learn each label (``kinds`` 1), skip the rest, in item order.

    Rows are the featurizer's dicts as CSR (``p_f`` feature ids, ``p_v`` values, in the dict's order);
    ``is_num[f]``: a numeric feature (scaled), else a one-hot indicator (passed through, after the
    numeric ones, as ``NumericStandardScaler.transform_one`` orders them). Per feature: the scaler's
    ``count``/``mean``/``var`` and the stamps that order River's dicts (``lstamp``: ``counts`` and
    ``means``; ``vstamp``: ``vars``; ``wstamp``: the weights; -1 absent), the weight ``w``.
    ``params``: intercept, lr, intercept lr, 0.5; ``counters``: next stamp, learn steps. ``buf``: scratch, as long
    as the longest row. Scores go to ``scores[ev_pos[i]]``.
    """
    half = params[P_HALF]
    for i in range(start, stop):
        kind = kinds[i]
        if kind == 0:
            slot = ev_slot[ev_pos[i]]
        elif kind == 1:
            slot = lb_slot[lb_pos[i]]
        else:
            continue
        a = a_off[slot]
        b = a + a_len[slot]
        if kind == 1:
            # NumericStandardScaler.learn_one: the numeric features, in the dict's order.
            for m in range(a, b):
                f = p_f[m]
                if not is_num[f]:
                    continue
                xi = p_v[m]
                if lstamp[f] < 0:
                    lstamp[f] = counters[C_STAMP]
                    if vstamp[f] < 0:
                        vstamp[f] = counters[C_STAMP]
                    counters[C_STAMP] += 1
                count[f] += 1
                old = mean[f]
                mean[f] += (xi - old) / count[f]
                var[f] += ((xi - old) * (xi - mean[f]) - var[f]) / count[f]
        # transform_one: the numeric features scaled, then the indicators (into ``buf``, LR order).
        n = 0
        for m in range(a, b):
            f = p_f[m]
            if is_num[f]:
                buf[n] = _scale(f, p_v[m], count, mean, var, vstamp, counters, half)
                n += 1
        # LogisticRegression: VectorDict.dot over the dict's items in order, then the intercept.
        dot = 0.0
        q = 0
        for pass_num in (True, False):
            for m in range(a, b):
                f = p_f[m]
                if is_num[f] != pass_num:
                    continue
                xv = buf[q] if pass_num else p_v[m]
                q += 1 if pass_num else 0
                if wstamp[f] < 0:
                    if kind == 1:  # learning: the weight is created (zero) by the masked dot
                        wstamp[f] = counters[C_STAMP]
                        counters[C_STAMP] += 1
                        w[f] = 0.0
                    continue
                dot += w[f] * xv
        z = dot + params[P_INTERCEPT]
        if kind == 0:
            if z < -30.0:
                p = 0.0
            elif z > 30.0:
                p = 1.0
            else:
                p = 1.0 / (1.0 + math.exp(-z))
            scores[ev_pos[i]] = p
            continue
        # optim.losses.Log.gradient, then the intercept, then SGD on the weights.
        if lb_y[lb_pos[i]]:
            if z > 18.0:
                g = -math.exp(-z)
            elif z < -18.0:
                g = -1.0
            else:
                g = -1.0 / (math.exp(z) + 1.0)
        else:
            zn = -z
            if zn > 18.0:
                g = math.exp(-zn)
            elif zn < -18.0:
                g = 1.0
            else:
                g = 1.0 / (math.exp(zn) + 1.0)
        params[P_INTERCEPT] -= params[P_ILR] * g
        lr = params[P_LR]
        q = 0
        for pass_num in (True, False):
            for m in range(a, b):
                f = p_f[m]
                if is_num[f] != pass_num:
                    continue
                xv = buf[q] if pass_num else p_v[m]
                q += 1 if pass_num else 0
                w[f] -= lr * (xv * g)
        counters[C_ITER] += 1


@numba.njit(cache=True, nogil=True)
def _gaussian_nb(kinds, start, stop, ev_pos, lb_pos, ev_slot, lb_slot, lb_y,  # pragma: no cover
                 a_off, a_len, p_f, p_v, cls_count, cls_stamp, cls_gstamp, n, mean, s2, stamp, counters,
                 consts, jll, cls_at, n_cls):
    """GaussianNB over a batch, in item order: a label updates its class's count and running
    mean/variance (River's ``stats.Var``, ddof 0) of every feature of its row; an event gets each
    known class's joint log-likelihood, in ``class_counts`` order (``jll[e, k]`` of class
    ``cls_at[e, k]``, ``n_cls[e]`` classes). ``stamp[c, f]`` orders the class's Gaussians (-1:
    none), ``cls_stamp``/``cls_gstamp`` the classes in ``class_counts``/``gaussians``.
    ``consts``: the pdf's epsilon, its log, sqrt(2 pi). (The log-sum-exp over classes is numpy's,
    in :mod:`dataflows.tabular_nb`.)"""
    eps = consts[0]
    log_eps = consts[1]
    sqrt_tau = consts[2]
    for i in range(start, stop):
        kind = kinds[i]
        if kind == 0:
            slot = ev_slot[ev_pos[i]]
        elif kind == 1:
            slot = lb_slot[lb_pos[i]]
        else:
            continue
        a = a_off[slot]
        b = a + a_len[slot]
        if kind == 1:
            c = 1 if lb_y[lb_pos[i]] else 0
            if cls_stamp[c] < 0:
                cls_stamp[c] = counters[0]
                counters[0] += 1
            cls_count[c] += 1
            for m in range(a, b):
                f = p_f[m]
                x = p_v[m]
                if cls_gstamp[c] < 0:
                    cls_gstamp[c] = counters[0]
                    counters[0] += 1
                if stamp[c, f] < 0:
                    stamp[c, f] = counters[0]
                    counters[0] += 1
                    n[c, f] = 0.0
                    mean[c, f] = 0.0
                    s2[c, f] = 0.0
                old = mean[c, f]
                n[c, f] += 1.0
                mean[c, f] += (1.0 / n[c, f]) * (x - old)
                s2[c, f] += 1.0 * (x - old) * (x - mean[c, f])
            continue
        e = ev_pos[i]
        total = cls_count[0] + cls_count[1]
        k = 0
        first = 0 if cls_stamp[1] < 0 or (cls_stamp[0] >= 0 and cls_stamp[0] < cls_stamp[1]) else 1
        for q in range(2):
            c = first if q == 0 else 1 - first
            if cls_stamp[c] < 0:
                continue
            lp = math.log(cls_count[c] / total)
            s = 0.0
            for m in range(a, b):
                f = p_f[m]
                if stamp[c, f] < 0:
                    s += log_eps
                    continue
                pdf = 0.0
                nn = n[c, f]
                if nn > 0:
                    variance = s2[c, f] / nn
                    if variance > 0.0:
                        sigma = math.sqrt(variance)
                        z = (p_v[m] - mean[c, f]) / sigma
                        pdf = math.exp(-0.5 * z * z) / sqrt_tau / sigma
                s += math.log(eps + pdf)
            jll[e, k] = lp + s
            cls_at[e, k] = c
            k += 1
        n_cls[e] = k


@numba.njit(cache=True, nogil=True)
def _exp_diff(a, b, out):  # pragma: no cover
    """``math.exp(a - b)`` elementwise (the C library's exp, as River's ``math.exp``)."""
    for i in range(a.size):
        out[i] = math.exp(a[i] - b[i])


load_lightly(_scale, _linear_tabular, _gaussian_nb, _exp_diff)
