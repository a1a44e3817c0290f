"""Unsupervised anomaly scores per event, with alarms above a threshold: no labels needed.

Two scorers, by name (spec strings as for detectors: ``"zscore(threshold=5)"``):

- ``zscore`` (default; ~1 µs per event in batches): distance to the recent past.
  Events are scored against the mean and standard deviation of each numeric
  feature over the last ``n_blocks`` blocks of ``block`` events (blocks are counted
  in events, so batches give the same scores as one event at a time). The score is
  the root mean square of the features' z-scores (``how="rms"``) or the largest
  one (``how="max"``); ``NaN`` until the first block is complete.
- ``hst``: River's ``HalfSpaceTrees`` on min-max scaled features, score in [0, 1]
  (~40 µs per event: for low rates or sampled streams).

Every scorer scores an event first and learns from it after.

>>> scorer = make_scorer("zscore(block=100, threshold=6.0)")
>>> import random
>>> rng = random.Random(1)
>>> xs = [{"a": rng.gauss(0, 1), "b": rng.gauss(10, 2)} for _ in range(300)] + [{"a": 9.0, "b": 40.0}]
>>> scores, alarms = scorer.update_many(xs, event_ids=[f"e{i}" for i in range(301)], event_times=range(301))
>>> [(a.event_id, a.signal, a.position) for a in alarms]
[('e300', 'anomaly', 301)]
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from monitoring.columns import feature_matrix, numeric_keys, stack_rows
from monitoring.detectors import is_finite_number, is_int, parse_spec
from monitoring.monitor import Alarm

_Z_CAP = 1e6

HOLD_ROWS = 64
"""Events whose statistics :class:`ZScoreScorer` holds before merging them into the block being filled."""


class _Scorer:
    """What every scorer shares: feature selection, the alarm threshold, positions."""

    name = ""

    def __init__(self, *, threshold: float, features: Sequence[str] | None, max_features: int) -> None:
        if not is_finite_number(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold!r}")
        if not is_int(max_features) or max_features < 1:
            raise ValueError(f"max_features must be an integer >= 1, got {max_features!r}")
        if features is not None and (isinstance(features, str) or not all(isinstance(f, str) for f in features)):
            raise ValueError(f"features must be a sequence of names, got {features!r}")
        self.threshold = float(threshold)
        self.fixed = features is not None
        self.names: list[str] = list(dict.fromkeys(features)) if features is not None else []
        self.capacity = len(self.names) if self.fixed else max_features
        self.n_seen = 0
        self.label = self.name

    def _discover(self, xs: Sequence[Mapping[str, Any]]) -> None:
        if not self.fixed and len(self.names) < self.capacity:
            # The keys chosen and the one-hot keys ("name=value", never chosen) are not looked at again: a
            # batch that brings no other key costs a subset test per event (a live step of a few events).
            known = self.__dict__.setdefault("_known", set(self.names))
            fresh = numeric_keys(xs, known)
            if not fresh:
                return
            known.update(k for k in fresh if "=" in k)
            fresh = [k for k in fresh if "=" not in k][: self.capacity - len(self.names)]
            self.names.extend(fresh)
            known.update(fresh)

    def score_one(self, x: Mapping[str, Any]) -> float:
        return float(self.score_many([x])[0])

    def score_many(self, xs: Sequence[Mapping[str, Any]]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def update_many(self, xs: Sequence[Mapping[str, Any]], *, event_ids: Sequence[str | None],
                    event_times: Sequence[int] | np.ndarray,
                    seqs: Sequence[int] | None = None) -> tuple[np.ndarray, list[Alarm]]:
        """Scores of ``xs`` (learning from them after scoring) and an alarm per score above the threshold."""
        if len(event_ids) != len(xs) or len(event_times) != len(xs):
            raise ValueError(f"xs, event_ids and event_times must have the same length, got {len(xs)}, "
                             f"{len(event_ids)}, {len(event_times)}")
        start = self.n_seen
        scores = self.score_many(xs)
        times = list(event_times)
        alarms = [Alarm(self.label, "anomaly", start + i + 1, event_ids[i], int(times[i]),
                        None if seqs is None else int(seqs[i]))
                  for i in np.flatnonzero(scores > self.threshold).tolist()]
        return scores, alarms


class ZScoreScorer(_Scorer):
    """Distance of each event to the last ``n_blocks`` blocks of ``block`` events (see the module doc)."""

    name = "zscore"

    def __init__(self, *, block: int = 1_000, n_blocks: int = 5, threshold: float = 4.0, how: str = "rms",
                 features: Sequence[str] | None = None, max_features: int = 64) -> None:
        super().__init__(threshold=threshold, features=features, max_features=max_features)
        if not is_int(block) or block < 2:
            raise ValueError(f"block must be an integer >= 2, got {block!r}")
        if not is_int(n_blocks) or n_blocks < 1:
            raise ValueError(f"n_blocks must be an integer >= 1, got {n_blocks!r}")
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {threshold!r}")
        if how not in ("rms", "max"):
            raise ValueError(f"how must be 'rms' or 'max', got {how!r}")
        self.block, self.n_blocks, self.how = block, n_blocks, how
        d = self.capacity
        self._blocks: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque(maxlen=n_blocks)
        self._cur = (np.zeros(d), np.zeros(d), np.zeros(d))  # count, mean, m2 of the block being filled
        self._in_block = 0
        self._ref: tuple[np.ndarray, np.ndarray] | None = None  # mean, std

    def score_many(self, xs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        n = len(xs)
        self._discover(xs)
        x = feature_matrix(xs, self.names)
        out = np.empty(n)
        i = 0
        while i < n:
            j = min(n, i + self.block - self._in_block)
            out[i:j] = self._score(x[i:j])
            self._learn(x[i:j])
            i = j
        self.n_seen += n
        return out

    # (hostile magnitudes give inf/NaN, not warnings; one errstate a call: entering one costs about as much
    # as the arithmetic on a live batch)
    @np.errstate(over="ignore", invalid="ignore", divide="ignore")
    def _score(self, x: np.ndarray) -> np.ndarray:
        if self._ref is None:
            return np.full(x.shape[0], np.nan)
        mean, std = self._ref
        d = x.shape[1]
        mean, std = mean[:d], std[:d]
        z = np.abs(x - mean) / std
        z = np.where(np.isfinite(std), z, np.nan)  # features without a reference yet
        z = np.minimum(z, _Z_CAP)
        present = ~np.isnan(z)
        counts = present.sum(axis=1)
        if self.how == "max":
            score = np.max(np.where(present, z, -np.inf), axis=1)
        else:
            score = np.sqrt(np.where(present, z * z, 0.0).sum(axis=1) / counts)
        return np.where(counts > 0, score, np.nan)

    def _learn(self, x: np.ndarray) -> None:
        """Learn from events just scored: they count in the block at once; their statistics are held until
        :data:`HOLD_ROWS` events wait or the block completes (the reference the scores use changes only then),
        and merged together (a few events merged on their own cost ~20 numpy calls)."""
        held = self.__dict__.setdefault("_held", [])
        held.append(x)
        self._in_block += x.shape[0]
        n_held = self._n_held = self.__dict__.get("_n_held", 0) + x.shape[0]
        if n_held < HOLD_ROWS and self._in_block < self.block:
            return
        x = stack_rows(held, max(m.shape[1] for m in held))
        held.clear()
        self._n_held = 0
        self._merge(x)
        if self._in_block >= self.block:
            self._blocks.append(self._cur)
            self._cur = (np.zeros(self.capacity), np.zeros(self.capacity), np.zeros(self.capacity))
            self._in_block = 0
            self._ref = self._pooled()

    @np.errstate(over="ignore", invalid="ignore", divide="ignore")  # (as _score)
    def _merge(self, x: np.ndarray) -> None:
        d = x.shape[1]
        cnt, mean, m2 = self._cur
        missing = np.isnan(x)
        nb = (~missing).sum(axis=0).astype(np.float64)
        mb = np.where(nb > 0, np.where(missing, 0.0, x).sum(axis=0) / np.where(nb > 0, nb, 1.0), 0.0)
        dev = np.where(missing, 0.0, x - mb)
        m2b = (dev * dev).sum(axis=0)
        na = cnt[:d]
        tot = na + nb
        frac = np.where(tot > 0, nb / np.where(tot > 0, tot, 1.0), 0.0)
        delta = mb - mean[:d]
        m2[:d] += m2b + delta * delta * na * frac
        mean[:d] += delta * frac
        cnt[:d] = tot

    def _pooled(self) -> tuple[np.ndarray, np.ndarray]:
        d = self.capacity
        cnt, mean, m2 = np.zeros(d), np.zeros(d), np.zeros(d)
        for cb, mb, m2b in self._blocks:
            tot = cnt + cb
            with np.errstate(invalid="ignore", divide="ignore"):
                frac = np.where(tot > 0, cb / np.where(tot > 0, tot, 1.0), 0.0)
            delta = mb - mean
            m2 = m2 + m2b + delta * delta * cnt * frac
            mean = mean + delta * frac
            cnt = tot
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.where(cnt >= 2, np.sqrt(m2 / np.maximum(cnt - 1, 1)), np.nan)
        floor = 1e-9 * np.maximum(1.0, np.abs(mean))
        return mean, np.where(np.isnan(std), np.nan, np.maximum(std, floor))


class HalfSpaceTreesScorer(_Scorer):
    """River's ``HalfSpaceTrees`` on min-max scaled numeric features (score in [0, 1], high = anomalous)."""

    name = "hst"

    def __init__(self, *, n_trees: int = 10, height: int = 8, window_size: int = 250, threshold: float = 0.9,
                 seed: int = 42, features: Sequence[str] | None = None, max_features: int = 64) -> None:
        super().__init__(threshold=threshold, features=features, max_features=max_features)
        for arg, value, low in (("n_trees", n_trees, 1), ("height", height, 1), ("window_size", window_size, 1)):
            if not is_int(value) or value < low:
                raise ValueError(f"{arg} must be an integer >= {low}, got {value!r}")
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
        if not is_int(seed):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        from river import anomaly, preprocessing

        self.model = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed)

    def score_many(self, xs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        self._discover(xs)
        names = self.names
        model = self.model
        out = np.empty(len(xs))
        for i, row in enumerate(feature_matrix(xs, names).tolist()):
            x = {k: v for k, v in zip(names, row, strict=True) if v == v}
            out[i] = model.score_one(x)
            model.learn_one(x)
        self.n_seen += len(xs)
        return out


SCORERS: dict[str, type[_Scorer]] = {"zscore": ZScoreScorer, "hst": HalfSpaceTreesScorer}
"""Scorer name → class; its keyword arguments are the spec's parameters."""


def make_scorer(spec: str = "zscore", **params: Any) -> _Scorer:
    """An anomaly scorer from a spec (``"zscore"``, ``"hst(threshold=0.8)"``) plus keyword params.

    >>> make_scorer("zscore(how=mean)")
    Traceback (most recent call last):
    ValueError: how must be 'rms' or 'max', got 'mean'
    """
    name, parsed = parse_spec(spec)
    try:
        cls = SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown anomaly scorer {name!r}; known: {', '.join(sorted(SCORERS))}") from None
    merged = {**parsed, **params}
    try:
        scorer = cls(**merged)
    except TypeError as ex:  # an unknown parameter
        raise ValueError(f"{name}: {ex}") from None
    defaults = inspect.signature(cls).parameters
    changed = {k: v for k, v in sorted(merged.items()) if defaults[k].default != v}
    scorer.label = name + ("(" + ", ".join(f"{k}={v!r}" for k, v in changed.items()) + ")" if changed else "")
    return scorer
