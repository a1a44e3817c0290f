"""Compiled loops of the columnar path (:mod:`dataflows.columnar`), imported on first use: numba
and LLVM take ~1 s to import; the cached machine code loads without numba's compile-time set-up
(:mod:`dataflows._numba_cache`). Paid only by runs that use it."""

from __future__ import annotations

import math

import numba
import numpy as np

from dataflows._numba_cache import load_lightly


@numba.njit(cache=True, nogil=True)
def _tokenize(data, offsets, valid, n_buckets, crc, tok_off, tok_b, n_chars, n_tok, odd):  # pragma: no cover
    n = offsets.size - 1
    k = 0
    for r in range(n):
        tok_off[r] = k
        if not valid[r]:
            n_chars[r] = -1
            n_tok[r] = 0
            continue
        a = offsets[r]
        b = offsets[r + 1]
        row_start = k
        nt = 0
        chars = 0
        c = 0
        intok = False
        for i in range(a, b + 1):
            alnum = False
            ch = 0
            if i < b:
                ch = data[i]
                if ch < 0x80 or ch >= 0xC0:
                    chars += 1
                if ch == 0xC4 and i + 1 < b and data[i + 1] == 0xB0:  # U+0130 lowercases to "i" + a dot
                    odd[r] = True
                if ch == 0xE2 and i + 2 < b and data[i + 1] == 0x84 and data[i + 2] == 0xAA:  # U+212A: "k"
                    odd[r] = True
                if 65 <= ch <= 90:
                    ch += 32
                alnum = (48 <= ch <= 57) or (97 <= ch <= 122)
            if alnum:
                if not intok:
                    c = 0xFFFFFFFF
                    intok = True
                c = crc[(c ^ ch) & 0xFF] ^ (c >> 8)
            elif intok:
                intok = False
                nt += 1
                h = (c ^ 0xFFFFFFFF) % n_buckets
                dup = False
                for j in range(row_start, k):
                    if tok_b[j] == h:
                        dup = True
                        break
                if not dup:
                    tok_b[k] = h
                    k += 1
        n_chars[r] = chars
        n_tok[r] = nt
    tok_off[n] = k
    return k


@numba.njit(cache=True, nogil=True)
def _log1p_counts(counts, out):  # pragma: no cover
    for i in range(counts.size):
        out[i] = math.log1p(counts[i]) if counts[i] >= 0 else np.nan


@numba.njit(cache=True, nogil=True)
def _featurize(kinds, start, stop, ev_pos, lb_pos,  # items: kinds[i], their event or label index  # pragma: no cover
               tok_off, tok_f, dense, dense_f, layout_kind, layout_j,
               ev_t, ev_kid, ev_slot, lb_kid, lb_y,
               k_n, k_last, k_nlab, k_npos, k_rec, k_hasrec, k_present, k_first, glob,
               time_features, time_at, key_features, key_at, smoothing, alpha, shared_prior,
               a_off, a_len, p_f, p_v, top):
    """Events: write the feature row (payload entries, time, key history) at ``top`` of the pool;
    labels: update their key's history. Returns the new ``top``."""
    for i in range(start, stop):
        if kinds[i] == 0:
            e = ev_pos[i]
            slot = ev_slot[e]
            a_off[slot] = top
            for q in range(layout_kind.size):
                j = layout_j[q]
                if layout_kind[q] == 0:
                    for m in range(tok_off[j, e], tok_off[j, e + 1]):
                        p_f[top] = tok_f[m]
                        p_v[top] = 1.0
                        top += 1
                else:
                    v = dense[e, j]
                    if v == v:
                        p_f[top] = dense_f[j]
                        p_v[top] = v
                        top += 1
            t = ev_t[e]
            if time_features:
                hour = (t % 86_400_000_000) / 3_600_000_000
                day = ((t // 86_400_000_000) + 3) % 7
                p_f[top] = time_at
                p_v[top] = math.sin(6.283185307179586 * hour / 24.0)
                p_f[top + 1] = time_at + 1
                p_v[top + 1] = math.cos(6.283185307179586 * hour / 24.0)
                p_f[top + 2] = time_at + 2
                p_v[top + 2] = math.sin(6.283185307179586 * day / 7.0)
                p_f[top + 3] = time_at + 3
                p_v[top + 3] = math.cos(6.283185307179586 * day / 7.0)
                top += 4
            if key_features:
                prior = (glob[1] + 1.0) / (glob[0] + 2.0) if shared_prior else 0.5
                k = ev_kid[e]
                if not k_present[k]:
                    kn, kg, kr, krec = 0.0, 0.0, prior, prior
                    k_present[k] = True
                    k_first[k] = i
                    k_n[k] = 1
                    k_last[k] = t
                    k_nlab[k] = 0
                    k_npos[k] = 0
                    k_hasrec[k] = False
                else:
                    gap = max(0, t - k_last[k]) / 1_000_000.0
                    kn = math.log1p(k_n[k])
                    kg = math.log1p(gap)
                    denom = k_nlab[k] + smoothing
                    kr = (k_npos[k] + smoothing * prior) / denom if denom else prior
                    krec = k_rec[k] if k_hasrec[k] else prior
                    k_n[k] += 1
                    if t > k_last[k]:
                        k_last[k] = t
                p_f[top] = key_at
                p_v[top] = kn
                p_f[top + 1] = key_at + 1
                p_v[top + 1] = kg
                p_f[top + 2] = key_at + 2
                p_v[top + 2] = kr
                p_f[top + 3] = key_at + 3
                p_v[top + 3] = krec
                top += 4
            a_len[slot] = top - a_off[slot]
        elif kinds[i] == 1:
            j = lb_pos[i]
            y = lb_y[j]
            glob[0] += 1
            glob[1] += y
            if key_features:
                k = lb_kid[j]
                if not k_present[k]:
                    k_present[k] = True
                    k_first[k] = i
                    k_n[k] = 0
                    k_last[k] = 0
                    k_nlab[k] = 0
                    k_npos[k] = 0
                    k_hasrec[k] = False
                k_nlab[k] += 1
                k_npos[k] += y
                target = 1.0 if y else 0.0
                if k_hasrec[k]:
                    k_rec[k] = k_rec[k] + alpha * (target - k_rec[k])
                else:
                    k_rec[k] = target
                    k_hasrec[k] = True
    return top


@numba.njit(cache=True, nogil=True)
def _linear(kinds, start, stop, ev_pos, lb_pos, ev_slot, lb_slot, lb_y,  # pragma: no cover
            a_off, a_len, p_f, p_v, tr, w, w_new, n_w, new_f, n_new, state, lr, ilr, clip, scores):
    """Predict each event, learn each label, in item order (SparseLogisticRegression's arithmetic).
    ``state`` = [intercept]; ``w`` the weights so far (positions ``0 .. n_w - 1``); features without
    a weight get the next position, their weights in ``w_new`` and their ids in ``new_f``.
    Returns the number of weights."""
    intercept = state[0]
    n_w0 = n_w
    clip_lr = clip * lr
    for i in range(start, stop):
        if kinds[i] == 0:
            slot = ev_slot[ev_pos[i]]
            label = False
        elif kinds[i] == 1:
            slot = lb_slot[lb_pos[i]]
            label = True
        else:  # a label dead-lettered before the step
            continue
        z = intercept
        a = a_off[slot]
        for m in range(a, a + a_len[slot]):
            s = tr[p_f[m]]
            if s >= 0:
                z += (w[s] if s < n_w0 else w_new[s - n_w0]) * p_v[m]
        if z >= 35.0:
            z = 35.0
        elif z <= -35.0:
            z = -35.0
        p = 1.0 / (1.0 + math.exp(-z))
        if not label:
            scores[ev_pos[i]] = p
            continue
        g = p - (1.0 if lb_y[lb_pos[i]] else 0.0)
        step = lr * g
        for m in range(a, a + a_len[slot]):
            d = step * p_v[m]
            if d > clip_lr:
                d = clip_lr
            elif d < -clip_lr:
                d = -clip_lr
            f = p_f[m]
            s = tr[f]
            if s < 0:
                s = n_w
                n_w += 1
                tr[f] = s
                new_f[n_new[0]] = f
                n_new[0] += 1
                w_new[s - n_w0] = 0.0 - d
            elif s < n_w0:
                w[s] -= d
            else:
                w_new[s - n_w0] -= d
        intercept -= ilr * g
    state[0] = intercept
    return n_w


@numba.njit(cache=True, nogil=True)
def _gather(a_off, a_len, slots, p_f, p_v, out_f, out_v, new_off):  # pragma: no cover
    top = 0
    for q in range(slots.size):
        s = slots[q]
        new_off[q] = top
        for m in range(a_off[s], a_off[s] + a_len[s]):
            out_f[top] = p_f[m]
            out_v[top] = p_v[m]
            top += 1
    return top


load_lightly(_tokenize, _log1p_counts, _featurize, _linear, _gather)
