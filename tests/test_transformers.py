"""The numeric scaler's one-pass loops give River's doubles and River's state, bit for bit."""

from __future__ import annotations

import math
import pickle
import random
from typing import Any

import pytest
from river import preprocessing

from dataflows.transformers import NumericStandardScaler


class _RiverRoute(NumericStandardScaler):
    """The scaler as it was written first: River's own methods on a filtered copy, indicators after."""

    def learn_one(self, x: dict[str, Any]) -> None:
        preprocessing.StandardScaler.learn_one(self, {k: v for k, v in x.items() if "=" not in k})

    def transform_one(self, x: dict[str, Any]) -> dict[str, Any]:
        numeric = {k: v for k, v in x.items() if "=" not in k}
        out = {k: v for k, v in x.items() if "=" in k}
        scaled = preprocessing.StandardScaler.transform_one(self, numeric)
        clip = self.__dict__.get("clip")
        if clip is not None:
            scaled = {k: min(max(v, -clip), clip) for k, v in scaled.items()}
        scaled.update(out)
        return scaled


def _stream(seed: int, n: int) -> list[dict[str, Any]]:
    """Events of mixed shapes: heavy tails, ints, a constant, features that come and go, indicators
    between numeric features, infinities and a NaN."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x: dict[str, Any] = {}
        if rng.random() < 0.5:
            x[f"cat={rng.choice('abc')}"] = 1.0
        x["amount"] = math.exp(rng.gauss(0, 3))
        if rng.random() < 0.7:
            x["count"] = rng.randrange(0, 5)
        x["const"] = 2.5
        if i > n // 2:
            x["late_feature"] = rng.gauss(100, 1)  # (found mid-stream: unseen when first scaled)
        x[f"dow={i % 7}"] = 1.0
        x["tiny"] = rng.gauss(0, 1e-300)
        if i == n - 3:
            x["amount"] = math.inf
        if i == n - 2:
            x["count"] = math.nan
        out.append(x)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return a == b and type(a) is type(b)


@pytest.mark.parametrize(("with_std", "clip", "window_size"), [
    (True, None, None), (True, 3.0, None), (False, None, None), (False, 2.0, None), (True, None, 20),
    (True, 3.0, 20)])
def test_the_scaler_gives_rivers_values_and_state_exactly(with_std: bool, clip: float | None,
                                                          window_size: int | None) -> None:
    fast, ref = NumericStandardScaler(with_std=with_std, clip=clip), _RiverRoute(with_std=with_std, clip=clip)
    for s in (fast, ref):
        s.window_size = window_size
        if window_size is not None:  # (River's rolling state, built as River's own constructor builds it)
            s.__dict__.update(preprocessing.StandardScaler(with_std=with_std, window_size=window_size).__dict__)
    for x in _stream(7, 400):
        got, want = fast.transform_one(x), ref.transform_one(x)  # predict first: unseen names included
        assert list(got) == list(want)  # (the order: a linear model's dot product adds in it)
        assert all(_same(got[k], want[k]) for k in want), x
        fast.learn_one(x)
        ref.learn_one(x)
        got, want = fast.transform_one(x), ref.transform_one(x)  # (after learning)
        assert list(got) == list(want) and all(_same(got[k], want[k]) for k in want), x
    if window_size is None:
        # The same state, key order included: a checkpoint pickles the same bytes.
        for name in ("counts", "means", "vars"):
            assert list(getattr(fast, name)) == list(getattr(ref, name))
            assert all(_same(getattr(fast, name)[k], getattr(ref, name)[k]) for k in getattr(ref, name))
        assert pickle.dumps(dict(fast.__dict__)) == pickle.dumps(dict(ref.__dict__))
