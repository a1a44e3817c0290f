"""Numeric columns out of feature dicts, fast: the shared step of windows, detectors and anomaly scores.

>>> xs = [{"a": 1, "s": "x"}, {"b": 2.5}, {"a": True, "b": float("nan")}]
>>> numeric_keys(xs)
['a', 'b']
>>> feature_matrix(xs, ["a", "b"]).tolist()
[[1.0, nan], [nan, 2.5], [1.0, nan]]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

_NAN = math.nan


def is_number(v: Any) -> bool:
    """Whether ``v`` is an int, float or bool (booleans count as 0/1)."""
    return isinstance(v, int | float)


def numeric_keys(xs: Sequence[Mapping[str, Any]], exclude: Iterable[str] = ()) -> list[str]:
    """Keys of ``xs`` in order of first appearance whose first value is numeric, leaving out ``exclude`` (a set is
    used as it is: a caller that knows most keys already looks up only the others).

    >>> numeric_keys([{"a": 1.0, "c=x": 1.0}, {"s": "t", "b": 2}, {"s": 3.0, "a": 1.0}], {"a"})
    ['c=x', 'b']
    """
    skip = exclude if isinstance(exclude, set | frozenset) else set(exclude)
    if isinstance(xs, DenseFeatures):  # every value a number, the names in order of first appearance
        return [k for k in xs.names if k not in skip]
    first: dict[str, Any] = {}
    # One pass (a scan of xs per key was quadratic on hashed streams: thousands of keys per batch); items
    # holding no key outside ``exclude`` are skipped by a C-level subset test, the others look up each key.
    for x in xs:
        if x.keys() <= skip:
            continue
        for k, v in x.items():
            if k not in first and k not in skip:
                first[k] = v
    return [k for k, v in first.items() if is_number(v)]


def feature_column(xs: Sequence[Mapping[str, Any]], name: str) -> np.ndarray:
    """Values of ``name`` as floats; ``NaN`` where missing or not numeric.

    >>> feature_column([{"a": 1}, {}, {"a": "x"}], "a").tolist()
    [1.0, nan, nan]
    """
    n = len(xs)
    try:
        return np.fromiter((x.get(name, _NAN) for x in xs), np.float64, n)
    except (TypeError, ValueError):  # a string or other non-number somewhere: the slow, safe path
        return np.fromiter((v if is_number(v := x.get(name, _NAN)) else _NAN for x in xs), np.float64, n)


class DenseFeatures:
    """A batch's numeric features as one matrix (rows: events; ``NaN``: missing), standing in for
    the list of feature dicts where the columnar path has no dicts. One-hot indicators (hashed
    tokens) are not in it: the monitors skip them anyway.

    >>> d = DenseFeatures(["a", "b"], np.array([[1.0, 2.0], [3.0, np.nan]]))
    >>> feature_matrix(d, ["b", "z"]).tolist()
    [[2.0, nan], [nan, nan]]
    >>> len(d.select(np.array([False, True])))
    1
    """

    __slots__ = ("names", "matrix", "_at")

    def __init__(self, names: Sequence[str], matrix: np.ndarray) -> None:
        self.names = list(names)
        self.matrix = matrix
        self._at = {n: j for j, n in enumerate(self.names)}

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def select(self, mask: np.ndarray) -> DenseFeatures:
        return DenseFeatures(self.names, self.matrix[mask])

    def columns_for(self, names: Sequence[str]) -> np.ndarray:
        out = np.full((len(self), len(names)), np.nan)
        for j, name in enumerate(names):
            k = self._at.get(name)
            if k is not None:
                out[:, j] = self.matrix[:, k]
        return out


def feature_matrix(xs: Sequence[Mapping[str, Any]] | DenseFeatures, names: Sequence[str]) -> np.ndarray:
    """``len(xs) × len(names)`` floats, ``NaN`` where missing or not numeric.

    >>> feature_matrix([{"a": 1, "b": 2.0}, {"a": 3, "b": True}], ["b", "a"]).tolist()
    [[2.0, 1.0], [1.0, 3.0]]
    """
    if isinstance(xs, DenseFeatures):
        return xs.columns_for(names)
    if len(names) == 1:
        return feature_column(xs, names[0]).reshape(len(xs), 1)
    if names and xs:
        # Fast path: every item has every name, all numbers (one C-level lookup per item, the
        # values streamed into the array without a list of tuples in between).
        get = itemgetter(*names)
        try:
            return np.fromiter(chain.from_iterable(map(get, xs)), np.float64,
                               len(xs) * len(names)).reshape(len(xs), len(names))
        except (KeyError, TypeError, ValueError):
            pass
    out = np.empty((len(xs), len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        out[:, j] = feature_column(xs, name)
    return out


def stack_rows(parts: Sequence[np.ndarray], d: int) -> np.ndarray:
    """Blocks of rows (each of at most ``d`` columns: features found later are missing from earlier blocks) as
    one ``rows × d`` matrix, ``NaN`` where a block had no column (a block already of that shape comes back as is).

    >>> stack_rows([np.array([[1.0]]), np.array([[2.0, 3.0]])], 2).tolist()
    [[1.0, nan], [2.0, 3.0]]
    """
    if len(parts) == 1 and parts[0].shape[1] == d:
        return parts[0]
    out = np.full((sum(m.shape[0] for m in parts), d), np.nan)
    at = 0
    for m in parts:
        out[at:at + m.shape[0], :m.shape[1]] = m
        at += m.shape[0]
    return out
