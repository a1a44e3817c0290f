"""One contract suite for every registered model spec and the featurizer."""

from __future__ import annotations

import copy
import pickle
import random

import pytest

from dataflows.features import KeyedFeaturizer
from dataflows.models import SPECS, get_spec, score_one


def _stream(n=400, seed=3):
    rng = random.Random(seed)
    for i in range(n):
        x = {"a": rng.random(), "b": rng.gauss(0, 1)}
        if i > n // 2:  # a feature appears ...
            x["late"] = rng.random()
        if i % 7 == 0:  # ... and one disappears now and then
            del x["b"]
        yield x, x["a"] > 0.5


@pytest.mark.parametrize("name", sorted(SPECS))
def test_model_spec_contract(name):
    spec = get_spec(name)
    m1, m2 = spec.build(seed=11), spec.build(seed=11)
    scores1, scores2 = [], []
    for x, y in _stream():
        frozen = copy.deepcopy(x)
        scores1.append(score_one(m1, x))
        scores2.append(score_one(m2, x))
        m1.learn_one(x, y)
        m2.learn_one(x, y)
        assert x == frozen, "a model must not mutate its input"
    assert scores1 == scores2, "same seed, same stream: identical scores"
    assert pickle.dumps(m1) == pickle.dumps(m2), "same seed, same stream: the same checkpoint bytes"
    assert all(0.0 <= s <= 1.0 for s in scores1)
    clone = pickle.loads(pickle.dumps(m1))
    probe = {"a": 0.9, "b": 0.1, "late": 0.3}
    assert score_one(clone, probe) == score_one(m1, probe)
    # it learned something: late scores separate the classes better than chance
    tail = list(_stream())[-100:]
    pos = [s for s, (_, y) in zip(scores1[-100:], tail, strict=True) if y]
    neg = [s for s, (_, y) in zip(scores1[-100:], tail, strict=True) if not y]
    assert sum(pos) / len(pos) > sum(neg) / len(neg)


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="unknown model 'nope'; known: .*linear"):
        get_spec("nope")


def test_featurizer_contract():
    f = KeyedFeaturizer()
    x = {"n": 3, "flag": True, "cat": "A", "missing": None, "nan": float("nan")}
    frozen = dict(x)
    out = f.transform_one(x, key="k", event_time_us=3_600_000_000)
    assert x == frozen
    assert out["n"] == 3.0 and out["flag"] == 1.0 and out["cat=A"] == 1.0
    assert "missing" not in out and "nan" not in out
    assert all(isinstance(v, float) for v in out.values())
    assert out["hour_sin"] == pytest.approx(0.258819, abs=1e-6)  # 01:00 UTC
    # transform reads state, never writes it
    assert f.transform_one(x, key="k", event_time_us=3_600_000_000) == out
    f.learn_one(x, key="k", event_time_us=0)
    clone = pickle.loads(pickle.dumps(f))
    assert clone.transform_one(x, key="k", event_time_us=10) == f.transform_one(x, key="k", event_time_us=10)


def test_featurizer_key_history_uses_only_arrived_labels():
    f = KeyedFeaturizer(time_features=False, smoothing=0.0)
    for t in range(4):
        f.learn_one({}, key="k", event_time_us=t * 1_000_000)
    before = f.transform_one({}, key="k", event_time_us=10_000_000)
    assert before["key_n"] == pytest.approx(1.6094379)  # log1p(4)
    assert before["key_gap"] == pytest.approx(2.0794415)  # log1p(7 s)
    f.learn_label(key="k", y=True)
    f.learn_label(key="k", y=False)
    after = f.transform_one({}, key="k", event_time_us=10_000_000)
    assert after["key_rate"] == 0.5
    other = f.transform_one({}, key="new", event_time_us=0)
    assert other["key_n"] == 0.0


def test_featurizer_options_are_validated():
    with pytest.raises(ValueError, match="recent_alpha"):
        KeyedFeaturizer(recent_alpha=0)
    with pytest.raises(TypeError, match="not a string"):
        KeyedFeaturizer(exclude="tailnum")
    f = KeyedFeaturizer(exclude=["tailnum"], categorical=["month"], time_features=False,
                        key_features=False, max_category_length=3)
    assert f.transform_one({"tailnum": "N1", "month": 5, "s": "abcdef"}, key="k", event_time_us=0) == {
        "month=5": 1.0, "s=abc": 1.0}


def test_featurizer_forgets_the_keys_idle_longest_beyond_max_keys():
    f = KeyedFeaturizer(max_keys=10, time_features=False)
    for i in range(11):
        f.learn_one({}, key=f"k{i}", event_time_us=i)
    assert f.n_keys == 8 and f.keys_forgotten == 3
    assert f.transform_one({}, key="k0", event_time_us=20)["key_n"] == 0.0  # forgotten: starts afresh
    assert f.transform_one({}, key="k10", event_time_us=20)["key_n"] > 0.0
