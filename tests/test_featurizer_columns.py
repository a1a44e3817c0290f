"""The featurizer's per-key histories as columns (``KeyedFeaturizer``): what it pickles and how it
behaves are those of the dict of lists it kept before, and the tabular step leaves it as the item path does.

Checkpoints in existing lakes hold the featurizer's pickle, and the contract tests compare those bytes
between the item path and the tabular path: the bytes must not change, and old pickles must load.
"""

from __future__ import annotations

import math
import pickle
import random
from array import array

import numpy as np
import polars as pl
import pytest

from dataflows.features import KeyedFeaturizer
from dataflows.models import get_spec
from dataflows.tabular import TabularStep, available

# A featurizer pickled by the dict-of-lists implementation (keys a, b, c; three labels, one positive).
_OLD_PICKLE = bytes.fromhex(
    "800595db010000000000008c1264617461666c6f77732e6665617475726573948c0f4b65796564466561747572697a6572"
    "9493942981947d94288c076578636c756465948c0269649485948c0b63617465676f726963616c94298c0d74696d655f66"
    "6561747572657394888c0c6b65795f666561747572657394888c09736d6f6f7468696e67944740340000000000008c0c72"
    "6563656e745f616c70686194473fa999999999999a8c136d61785f63617465676f72795f6c656e677468944b408c0b6861"
    "73685f6669656c647394298c096e5f6275636b657473944a000010008c086d61785f6b657973944b0a8c0c736861726564"
    "5f7072696f7294888c0e6b6579735f666f72676f7474656e944b008c055f6b65797394288c07636f6c756d6e73948c0561"
    "006200639443180200000000000000010000000000000000000000000000009443184054890000000000c0cf6a00000000"
    "000000000000000000944318020000000000000000000000000000000100000000000000944318010000000000000000"
    "000000000000000000000000000000944318666666666666ee3f000000000000f87f00000000000000009474948c095f6e"
    "5f6c6162656c73944b038c0b5f6e5f706f736974697665944b018c0c5f746f6b656e5f6e616d6573947d9475622e")


class _DictHistories:
    """The per-key state as the featurizer kept it before its columns: key -> [n, last, n_lab, n_pos, recent]."""

    def __init__(self, max_keys: int, alpha: float = 0.05) -> None:
        self.keys: dict[str, list] = {}
        self.max_keys, self.alpha, self.forgotten = max_keys, alpha, 0

    def learn_one(self, key: str, t: int) -> None:
        st = self.keys.get(key)
        if st is None:
            self.keys[key] = [1, t, 0, 0, None]
            if len(self.keys) > self.max_keys:
                self.prune()
        else:
            st[0] += 1
            st[1] = max(st[1], t)

    def learn_label(self, key: str, y: bool) -> None:
        st = self.keys.setdefault(key, [0, 0, 0, 0, None])
        st[2] += 1
        st[3] += bool(y)
        target = 1.0 if y else 0.0
        st[4] = target if st[4] is None else st[4] + self.alpha * (target - st[4])

    def prune(self) -> None:
        by_time = sorted(self.keys.items(), key=lambda kv: kv[1][1])  # stable: ties oldest first
        for k, _ in by_time[: len(self.keys) - int(self.max_keys * 0.8)]:
            del self.keys[k]
            self.forgotten += 1

    def packed(self) -> tuple:
        rows = list(self.keys.values())
        return ("columns", "\x00".join(self.keys), *(array("q", [r[i] for r in rows]).tobytes() for i in range(4)),
                array("d", [math.nan if r[4] is None else r[4] for r in rows]).tobytes())


@pytest.mark.parametrize("seed", range(6))
def test_pickles_are_the_dict_of_lists_forms_on_random_key_sequences(seed):
    """Events, labels, pruning past ``max_keys``, forgotten and re-set keys, thousands of keys (rows of
    forgotten keys reclaimed): the pickled state, key order and features are the old form's."""
    rng = random.Random(seed)
    max_keys = rng.choice([4, 40, 300])
    f, ref = KeyedFeaturizer(max_keys=max_keys), _DictHistories(max_keys)
    n_keys = rng.choice([6, 100, 3000])
    for i in range(6000):
        key, t, r = f"k{rng.randrange(n_keys)}", rng.randrange(100) * 1_000_000, rng.random()
        if r < 0.5:
            assert f.transform_one({}, key=key, event_time_us=t)["key_n"] == math.log1p(ref.keys.get(key, [0])[0])
            f.learn_one({}, key=key, event_time_us=t)
            ref.learn_one(key, t)
        elif r < 0.9:
            y = rng.random() < 0.3
            f.learn_label(key=key, y=y)
            ref.learn_label(key, y)
        elif r < 0.95:
            assert f.forget_keys([key]) == (ref.keys.pop(key, None) is not None)
        else:
            state = (rng.randrange(9), t, 2, 1, rng.choice([None, 0.25]))
            f.set_key_state(key, state)
            ref.keys[key] = list(state)
        if i % 997 == 0:
            f = pickle.loads(pickle.dumps(f))
    state = f.__getstate__()
    assert state["_keys"] == ref.packed() and f.keys_forgotten == ref.forgotten
    assert list(state) == ["exclude", "categorical", "time_features", "key_features", "smoothing", "recent_alpha",
                           "max_category_length", "hash_fields", "n_buckets", "max_keys", "shared_prior",
                           "keys_forgotten", "_keys", "_n_labels", "_n_positive", "_token_names"]
    assert f.key_states(list(ref.keys)) == list(ref.keys.values())
    assert f.n_rows <= 2 * f.n_keys + 1024  # rows of forgotten keys do not pile up


def test_a_pickle_of_the_dict_of_lists_featurizer_loads_and_pickles_to_the_same_bytes():
    f = pickle.loads(_OLD_PICKLE)
    assert f.key_states(["a", "b", "c", "d"]) == [[2, 9_000_000, 2, 1, 0.95], [1, 7_000_000, 0, 0, None],
                                                  [0, 0, 1, 0, 0.0], None]
    assert f.label_totals == (3, 1) and f.exclude == {"id"}
    assert pickle.dumps(f, protocol=5) == _OLD_PICKLE
    f.learn_one({}, key="d", event_time_us=1)  # and it goes on learning
    assert list(f.__getstate__()["_keys"][1].split("\x00")) == ["a", "b", "c", "d"]
    # the oldest form: the dict of lists itself
    old = pickle.loads(_OLD_PICKLE).__getstate__()
    old["_keys"] = {"a": [2, 9_000_000, 2, 1, 0.95], "b": [1, 7_000_000, 0, 0, None], "c": [0, 0, 1, 0, 0.0]}
    g = KeyedFeaturizer.__new__(KeyedFeaturizer)
    g.__setstate__(old)
    assert pickle.dumps(g, protocol=5) == _OLD_PICKLE


def test_keys_that_are_not_strings_pickle_as_a_dict_of_lists():
    f = KeyedFeaturizer()
    f.learn_one({}, key=7, event_time_us=3)
    f.learn_label(key="x\x00y", y=True)
    assert f.__getstate__()["_keys"] == {7: [1, 3, 0, 0, None], "x\x00y": [0, 0, 1, 1, 1.0]}
    g = pickle.loads(pickle.dumps(f))
    assert g.key_states([7, "x\x00y"]) == [[1, 3, 0, 0, None], [0, 0, 1, 1, 1.0]]


def _frames(items: list[tuple]) -> tuple[np.ndarray, pl.DataFrame, pl.DataFrame]:
    evs = [it for it in items if it[0] == 0]
    lbs = [it for it in items if it[0] == 1]
    events = pl.DataFrame({"event_id": [e[1] for e in evs], "event_time": [e[2] for e in evs],
                           "key": [e[3] for e in evs], "amount": [e[4] for e in evs], "shop": [e[5] for e in evs]},
                          schema={"event_id": pl.String, "event_time": pl.Int64, "key": pl.String,
                                  "amount": pl.Float64, "shop": pl.String})
    labels = pl.DataFrame({"event_id": [lb[1] for lb in lbs], "label": [lb[2] for lb in lbs]},
                          schema={"event_id": pl.String, "label": pl.Int64})
    return np.array([it[0] for it in items], np.int8), events, labels


@pytest.mark.skipif(not available(), reason="numba does not load here")
def test_the_tabular_step_leaves_the_item_paths_featurizer_and_pickles_it_at_each_checkpoint():
    """Batches through the compiled featurizer, writing into the featurizer's columns: at each checkpoint
    (``rewind``) and after each batch its pickle is the item path's; new keys keep their order of arrival."""
    rng = random.Random(3)
    items, waiting, t = [], [], 0
    for i in range(3000):
        t += rng.randrange(10**8)
        key = f"k{rng.randrange(40 + i // 10)}"  # new keys all along
        items.append((0, f"e{i}", t, key, rng.choice([None, rng.gauss(0, 1)]), rng.choice([None, "a", "b"])))
        waiting.append(f"e{i}")
        while waiting and rng.random() < 0.45:
            items.append((1, waiting.pop(rng.randrange(len(waiting))), int(rng.random() < 0.3)))
    ref, keys_of = KeyedFeaturizer(), {}
    f = KeyedFeaturizer()
    step = TabularStep(f, [get_spec("linear").build(seed=0)])
    want, got = [], []
    a = 0
    while a < len(items):
        b = a + rng.randrange(1, 400)
        forget = [f"k{rng.randrange(60)}" for _ in range(3)]  # (their labels to come re-add them)
        f.forget_keys(forget)
        ref.forget_keys(forget)
        for it in items[a:b]:
            if it[0] == 0:
                ref.learn_one({}, key=it[3], event_time_us=it[2])
                keys_of[it[1]] = it[3]
            else:
                ref.learn_label(key=keys_of[it[1]], y=it[2] == 1)
                want.append(pickle.dumps(ref, protocol=5))
        kinds, events, labels = _frames(items[a:b])
        out = step.process(kinds=kinds, events=events, labels=labels, rewind=True,
                           checkpoint_after=range(1, labels.height + 1), on_checkpoint=lambda k, j, s: got.append(s))
        assert out is not None and out.accepted.size == labels.height
        assert pickle.dumps(f, protocol=5) == pickle.dumps(ref, protocol=5)
        a = b
    assert got == want


@pytest.mark.skipif(not available(), reason="numba does not load here")
def test_a_batch_undone_for_non_finite_weights_leaves_the_featurizer_as_it_was():
    from river import linear_model, optim

    from dataflows.transformers import NumericStandardScaler

    f = KeyedFeaturizer()
    huge = NumericStandardScaler() | linear_model.LogisticRegression(optimizer=optim.SGD(1.7e308), l2=0.0)
    step = TabularStep(f, [huge])
    first = [(0, "e0", 0, "k0", 1.0, "a"), (0, "e1", 5, "k1", -2.0, None), (1, "e0", 1)]
    assert step.process(**dict(zip(("kinds", "events", "labels"), _frames(first), strict=True))) is not None
    before, rows = pickle.dumps(f, protocol=5), f.n_rows
    poison = [(0, "e2", 9, "k9", 1e300, "b"), (0, "e3", 11, "k1", -1e300, "a"), (1, "e2", 1), (1, "e3", 0),
              (0, "e4", 12, "k8", 3.0, "a"), (1, "e1", 1)]
    assert step.process(**dict(zip(("kinds", "events", "labels"), _frames(poison), strict=True))) is None
    assert pickle.dumps(f, protocol=5) == before and f.n_rows == rows and f.key_state("k9") is None


@pytest.mark.parametrize("n", [5, 300])
def test_histories_set_and_read_in_bulk_are_those_set_one_by_one(n):
    """``set_key_states`` / ``key_states`` (column by column from 64 keys on): known keys, new keys (added in
    the order given), both mixed, a key given twice (the last state wins), unknown keys read as ``None``."""
    rng = random.Random(n)
    bulk, single = KeyedFeaturizer(), KeyedFeaturizer()
    for r in range(8):
        keys = ([f"k{i}" for i in rng.sample(range(2 * n), n)] if r % 4 else  # distinct: new, mixed, known
                [f"k{rng.randrange(2 * n)}" for _ in range(n)])  # some twice
        states = [(rng.randrange(9), rng.randrange(10**12), rng.randrange(5), rng.randrange(5),
                   rng.choice([None, rng.random()])) for _ in keys]
        bulk.set_key_states(keys, states)
        for k, st in zip(keys, states, strict=True):
            single.set_key_state(k, st)
        probe = [f"k{i}" for i in range(2 * n + 3)]
        assert bulk.key_states(probe) == single.key_states(probe)
        assert pickle.dumps(bulk) == pickle.dumps(single)
    with pytest.raises(ValueError, match="keys and"):
        bulk.set_key_states(["a", "b"], [(1, 2, 0, 0, None)])
