"""The tabular columnar step (dataflows.tabular) gives River's floats, bit for bit.

Every test runs a stream two ways: item by item, as the learner's item path does (the
featurizer's dict, River's ``NumericStandardScaler | LogisticRegression``), and through
:class:`~dataflows.tabular.TabularStep` in batches of columns (a batch it declines goes item by
item on the same models). Scores, weights, scaler statistics, the featurizer's history and the
pickled models must be identical.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataflows.features import KeyedFeaturizer
from dataflows.models import get_spec, score_one
from dataflows.tabular import TabularLayout, TabularStep, available
from tests.test_tabular_columnar import _interned

pytestmark = pytest.mark.skipif(not available(), reason="numba does not load here")

EV, LB = 0, 1


def _stream(seed: int, n: int, *, new_column_at: int | None, dup_every: int = 0) -> list[tuple]:
    """Items ``(EV, event_id, t, key, payload)`` / ``(LB, event_id, label)``: nulls, NaN, booleans,
    ints, categories (new ones appear late), labels late, twice, or for unknown events."""
    rng = random.Random(seed)
    items: list[tuple] = []
    waiting: list[tuple[int, str, int]] = []
    t = 1_700_000_000_000_000
    cats = ["a", "b", "c"]
    for i in range(n):
        t += rng.randrange(0, 3_000_000_000)
        if i == n // 2:
            cats += ["d", "e" * 80, "a=b"]  # new categories, a long one cut, one holding "="
        payload = {
            "amount": None if rng.random() < 0.1 else (float("nan") if rng.random() < 0.05 else rng.gauss(50, 30)),
            "shop": None if rng.random() < 0.15 else rng.choice(cats),
            "count": rng.randrange(-5, 100),
            "flag": None if rng.random() < 0.1 else rng.random() < 0.3,
            "ratio": rng.random() * 1e-3,
        }
        if new_column_at is not None and i >= new_column_at:
            payload["extra"] = rng.choice(["x", "y", None])
            payload["score2"] = rng.expovariate(0.1)
        eid = f"e{i}"
        if dup_every and i % dup_every == dup_every - 1:
            eid = f"e{i - 1}"  # a duplicate id
        items.append((EV, eid, t, rng.choice(["k1", "k2", "k3", "k4"]), payload))
        waiting.append((i + rng.randrange(0, 40), eid, int(rng.random() < 0.4)))
        for w in [w for w in waiting if w[0] <= i]:
            waiting.remove(w)
            items.append((LB, w[1], w[2]))
            if rng.random() < 0.03:
                items.append((LB, w[1], w[2]))  # twice
        if rng.random() < 0.02:
            items.append((LB, f"ghost{i}", 1))  # unknown event
    items += [(LB, eid, y) for _, eid, y in waiting]
    return items


class _Dict:
    """The item path's pending store."""

    def __init__(self) -> None:
        self.d: dict[str, tuple] = {}

    def __contains__(self, eid: str) -> bool:
        return eid in self.d

    def pop(self, eid: str):
        return self.d.pop(eid, None)

    def put(self, eid: str, entry: tuple) -> None:
        self.d[eid] = entry


class _StepStore:
    """The step's pending rows, as the item path sees them on a declined batch."""

    def __init__(self, step: TabularStep) -> None:
        self.step = step

    def __contains__(self, eid: str) -> bool:
        return eid in self.step.pending

    def pop(self, eid: str):
        return self.step.pop_entry(eid)

    def put(self, eid: str, entry: tuple) -> None:
        if len(eid) % 2:
            x, t, key, scores = entry
            self.step.adopt(eid, x, t, key, scores)
        else:  # left as the item path keeps it (a pending dict shared with the learner)
            self.step.pending[eid] = entry


def _item_path(items, featurizer, models, store, labelled: set, scores_out: dict) -> None:
    for item in items:
        if item[0] == EV:
            _, eid, t, key, payload = item
            if eid in store or eid in labelled:
                continue  # a dead letter
            x = featurizer.transform_one(payload, key=key, event_time_us=t)
            scores = [score_one(m, x) for m in models]  # (the learner's reading: 0.5 with no class yet)
            featurizer.learn_one(payload, key=key, event_time_us=t)
            store.put(eid, (x, t, key, scores))
            scores_out[eid] = scores
        else:
            _, eid, y = item
            entry = store.pop(eid)
            if entry is None:
                continue
            x, t, key, _ = entry
            for m in models:
                m.learn_one(x, y == 1)
            featurizer.learn_label(key=key, y=y == 1)
            labelled.add(eid)


def _frames(items: list[tuple]) -> tuple[np.ndarray, pl.DataFrame, pl.DataFrame]:
    kinds = np.array([it[0] for it in items], np.int8)
    evs = [it for it in items if it[0] == EV]
    lbs = [it for it in items if it[0] == LB]
    columns = list(dict.fromkeys(c for it in evs for c in it[4]))
    data = {"event_id": [it[1] for it in evs], "event_time": [it[2] for it in evs], "key": [it[3] for it in evs]}
    schema = {"event_id": pl.String, "event_time": pl.Int64, "key": pl.String,
              "amount": pl.Float64, "shop": pl.String, "count": pl.Int64, "flag": pl.Boolean,
              "ratio": pl.Float64, "extra": pl.String, "score2": pl.Float64}
    for c in columns:
        data[c] = [it[4].get(c) for it in evs]
    ev = pl.DataFrame(data, schema={c: schema[c] for c in data})
    lb = pl.DataFrame({"event_id": [it[1] for it in lbs], "label": [it[2] for it in lbs]},
                      schema={"event_id": pl.String, "label": pl.Int64})
    return kinds, ev, lb


def _spec_model(name: str) -> Any:
    return get_spec(name).build(seed=0)


def _run_both(items, *, batch: int, n_models: int = 2, featurizer_args: dict | None = None,
              specs: tuple[str, ...] = ("linear",), build: Callable[[str], Any] = _spec_model):
    args = featurizer_args or {}
    ref_f = KeyedFeaturizer(**args)
    ref_models = [build(specs[i % len(specs)]) for i in range(n_models)]
    ref_scores: dict = {}
    _item_path(items, ref_f, ref_models, _Dict(), set(), ref_scores)

    f = KeyedFeaturizer(**args)
    models = [build(specs[i % len(specs)]) for i in range(n_models)]
    step = TabularStep(f, models)
    scores: dict = {}
    labelled: set = set()
    declined = 0
    for a in range(0, len(items), batch):
        chunk = items[a: a + batch]
        # A batch's payload columns are those of its events (a new column: a new layout).
        kinds, ev, lb = _frames(chunk)
        out = None
        if labelled.isdisjoint(ev.get_column("event_id").to_list()):
            out = step.process(kinds=kinds, events=ev, labels=lb)
        if out is None:  # the item path, on the same models
            declined += 1
            step.sync_models()
            _item_path(chunk, f, models, _StepStore(step), labelled, scores)
            step.reload_models()
            continue
        ids = ev.get_column("event_id").to_list()
        for e, eid in enumerate(ids):
            scores[eid] = out.scores[:, e].tolist()
        lb_ids = lb.get_column("event_id").to_list()
        labelled.update(lb_ids[j] for j in out.accepted.tolist())
    step.sync_models()
    return (ref_f, ref_models, ref_scores), (f, models, scores, step, declined)


def _assert_same(ref, got, *, pickles: bool = True) -> None:
    ref_f, ref_models, ref_scores = ref
    f, models, scores, _, declined = got
    assert list(scores) == list(ref_scores)
    a = np.array(list(scores.values()), np.float64)
    b = np.array(list(ref_scores.values()), np.float64)
    assert np.array_equal(a.view(np.int64), b.view(np.int64))  # bit for bit
    for m, r in zip(models, ref_models, strict=True):
        if not hasattr(m, "steps"):  # GaussianNB
            assert list(m.class_counts.items()) == list(r.class_counts.items())
            assert list(m.gaussians) == list(r.gaussians)
            for c in r.gaussians:
                assert [(k, g._var.mean.n, g._var.mean._mean, g._var._S) for k, g in m.gaussians[c].items()] == [
                    (k, g._var.mean.n, g._var.mean._mean, g._var._S) for k, g in r.gaussians[c].items()]
            if declined:  # the paths took turns on one model: its one-hot names shared as each made them
                _interned(m, set())
                _interned(r, set())
        else:
            scaler, lr = m.steps.values()
            r_scaler, r_lr = r.steps.values()
            assert list(lr.weights.items()) == list(r_lr.weights.items())
            assert lr.intercept == r_lr.intercept
            assert list(scaler.counts.items()) == list(r_scaler.counts.items())
            assert list(scaler.means.items()) == list(r_scaler.means.items())
            assert list(scaler.vars.items()) == list(r_scaler.vars.items())
        if pickles:
            assert pickle.dumps(m) == pickle.dumps(r)  # the same checkpoint bytes
    assert pickle.dumps(f) == pickle.dumps(ref_f)


def test_tabular_stream_matches_river_bit_for_bit() -> None:
    items = _stream(1, 3000, new_column_at=1800)
    ref, got = _run_both(items, batch=257)
    _assert_same(ref, got)
    step = got[3]
    assert got[4] == 0  # every batch took the compiled step
    assert "shop=" + "e" * 64 in step.space.index  # the long category cut as the featurizer cuts it
    assert len(ref[1][0]["LogisticRegression"].weights) > 15


def test_naive_bayes_beside_linear_matches_river_bit_for_bit() -> None:
    items = _stream(6, 2500, new_column_at=1500, dup_every=300)
    ref, got = _run_both(items, batch=211, n_models=3, specs=("naive-bayes", "linear"))
    _assert_same(ref, got)
    assert 0 < got[4] < 2500 // 211  # some batches declined (duplicates), the others compiled
    nb_scores = [s[0] for s in got[2].values()]
    assert len(set(nb_scores)) > 100 and 0.0 < np.mean(nb_scores) < 1.0


def test_an_older_naive_bayes_checkpoint_still_takes_the_tabular_step() -> None:
    """Checkpoints pickled before the Gaussians were seeded hold River's plain ``GaussianNB``
    (one OS-seeded generator per Gaussian): unpickled, it runs on the compiled step as River does."""
    from river import naive_bayes

    def older(name: str) -> Any:
        model = naive_bayes.GaussianNB()
        model.learn_one({"amount": 40.0, "count": 3.0}, True)
        model.learn_one({"amount": 60.0, "count": 9.0}, False)
        return pickle.loads(pickle.dumps(model))

    items = _stream(6, 1200, new_column_at=700)
    ref, got = _run_both(items, batch=211, n_models=1, specs=("naive-bayes",), build=older)
    _assert_same(ref, got, pickles=False)  # (their generators differ: the numbers are compared)
    assert got[4] == 0  # every batch took the compiled step


def test_duplicate_ids_decline_and_continue_on_the_same_models() -> None:
    items = _stream(2, 2000, new_column_at=None, dup_every=150)
    ref, got = _run_both(items, batch=100)
    _assert_same(ref, got)
    assert 0 < got[4] < 2000 // 100  # some batches declined, the others compiled


def test_label_ahead_of_its_event_declines() -> None:
    f = KeyedFeaturizer()
    step = TabularStep(f, [get_spec("linear").build(seed=0)])
    ev = pl.DataFrame({"event_id": ["a"], "event_time": [0], "key": ["k"], "v": [1.0]})
    lb = pl.DataFrame({"event_id": ["a"], "label": [1]})
    before = pickle.dumps(f)
    assert step.process(kinds=np.array([1, 0], np.int8), events=ev, labels=lb) is None
    assert pickle.dumps(f) == before and not step.pending  # nothing changed


def test_payloads_without_an_exact_layout_decline() -> None:
    f = KeyedFeaturizer(categorical=["code"])
    assert TabularLayout.of(f, {"when": pl.Datetime("us", "UTC")}) is None
    assert TabularLayout.of(f, {"price": pl.Decimal(10, 2)}) is None
    assert TabularLayout.of(f, {"key_n": pl.Float64}) is None  # a payload named like a derived feature
    assert TabularLayout.of(f, {"code": pl.Int64, "v": pl.Float32}).entries == (("code", "cat"), ("v", "num"))
    step = TabularStep(f, [get_spec("linear").build(seed=0)])
    ev = pl.DataFrame({"event_id": ["a"], "event_time": [0], "key": ["k"], "v": [float("inf")]})
    assert step.process(kinds=np.array([0], np.int8), events=ev, labels=pl.DataFrame(
        {"event_id": [], "label": []}, schema={"event_id": pl.String, "label": pl.Int64})) is None


def test_checkpoints_mid_batch_pickle_as_the_item_path() -> None:
    """The River pipeline handed to a checkpoint after the k-th label equals the item path's."""
    items = _stream(4, 1200, new_column_at=None)
    every = 37
    ref_f, ref_model = KeyedFeaturizer(), get_spec("linear").build(seed=0)
    expected, pending, n = [], {}, 0
    for item in items:
        if item[0] == EV:
            _, eid, t, key, payload = item
            x = ref_f.transform_one(payload, key=key, event_time_us=t)
            ref_model.predict_proba_one(x)
            ref_f.learn_one(payload, key=key, event_time_us=t)
            pending[eid] = (x, key)
        elif item[1] in pending:
            x, key = pending.pop(item[1])
            ref_model.learn_one(x, item[2] == 1)
            ref_f.learn_label(key=key, y=item[2] == 1)
            n += 1
            if n % every == 0:
                expected.append((pickle.dumps(ref_model), item[1]))
    model = get_spec("linear").build(seed=0)
    step = TabularStep(KeyedFeaturizer(), [model])
    got, learned = [], 0
    for a in range(0, len(items), 300):
        kinds, ev, lb = _frames(items[a: a + 300])
        n_acc = int(lb.height)  # an upper bound: cuts past the accepted labels are ignored
        cuts = [k for k in range(1, n_acc + 1) if (learned + k) % every == 0]
        ids = lb.get_column("event_id").to_list()
        out = step.process(kinds=kinds, events=ev, labels=lb, checkpoint_after=cuts,
                           on_checkpoint=lambda k, j, ids=ids: got.append((pickle.dumps(model), ids[j])))
        learned += out.accepted.size
    assert len(got) == len(expected) > 20
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert [g[1] for g in got] == [e[1] for e in expected]  # the label each checkpoint follows


def test_state_round_trips_through_river() -> None:
    items = _stream(3, 800, new_column_at=None)
    _, got = _run_both(items, batch=200, n_models=1)
    copy = pickle.loads(pickle.dumps(got[1][0]))  # a trained model, as a checkpoint restores it
    before = pickle.dumps(copy)
    step = TabularStep(KeyedFeaturizer(), [copy])
    step.sync_models()  # River -> arrays -> River
    assert pickle.dumps(copy) == before
    assert len(step.states[0].w) >= len(copy["LogisticRegression"].weights) > 10


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 400), batch=st.integers(1, 120),
       new_column=st.booleans(), categorical_count=st.booleans(), key_features=st.booleans(),
       shared_prior=st.booleans(), max_keys=st.sampled_from([3, 200_000]),
       specs=st.sampled_from([("linear",), ("naive-bayes", "linear")]))
def test_random_tabular_streams_match_river(seed, n, batch, new_column, categorical_count, key_features,
                                            shared_prior, max_keys, specs) -> None:
    # (max_keys=3 with 4 keys: batches where the featurizer would forget keys go item by item)
    items = _stream(seed, n, new_column_at=n // 3 if new_column else None, dup_every=97)
    args = {"categorical": ["count"] if categorical_count else [], "key_features": key_features,
            "shared_prior": shared_prior, "max_keys": max_keys}
    ref, got = _run_both(items, batch=batch, featurizer_args=args, specs=specs)
    _assert_same(ref, got)


def test_column_types_match_the_item_path() -> None:
    """Float32, small and unsigned ints, Categorical and Enum strings, categorical booleans and floats
    (NaN one-hot as "nan"), an all-null column: each value as the item path's dict has it."""
    rng = random.Random(5)
    n = 400
    enum = pl.Enum(["lo", "mid", "hi"])
    ev = pl.DataFrame({
        "event_id": [f"e{i}" for i in range(n)],
        "event_time": [1_700_000_000_000_000 + i * 7_000_000_000 for i in range(n)],
        "key": [rng.choice(["a", "b"]) for _ in range(n)],
        "f32": pl.Series([rng.gauss(0, 3) for _ in range(n)], dtype=pl.Float32),
        "u8": pl.Series([rng.randrange(256) for _ in range(n)], dtype=pl.UInt8),
        "big": pl.Series([rng.randrange(2**63, 2**64) for _ in range(n)], dtype=pl.UInt64),
        "cat": pl.Series([rng.choice(["x", "y", None]) for _ in range(n)], dtype=pl.Categorical),
        "level": pl.Series([rng.choice(["lo", "mid", "hi", None]) for _ in range(n)], dtype=enum),
        "flagc": [rng.choice([True, False, None]) for _ in range(n)],
        "fc": [rng.choice([1.5, float("nan"), None, 2.0]) for _ in range(n)],
        "nothing": pl.Series([None] * n, dtype=pl.Null),
    })
    args = {"categorical": ["flagc", "fc"]}
    kinds, items = [], []
    payload_cols = [c for c in ev.columns if c not in ("event_id", "event_time", "key")]
    rows = ev.select(payload_cols).rows(named=True)
    for i in range(n):
        kinds.append(EV)
        items.append((EV, f"e{i}", ev["event_time"][i], ev["key"][i], rows[i]))
        if i >= 3:
            kinds.append(LB)
            items.append((LB, f"e{i - 3}", i % 2))
    ref_f, ref_m, ref_scores = KeyedFeaturizer(**args), get_spec("linear").build(seed=0), {}
    _item_path(items, ref_f, [ref_m], _Dict(), set(), ref_scores)
    f, m = KeyedFeaturizer(**args), get_spec("linear").build(seed=0)
    step = TabularStep(f, [m])
    lb = pl.DataFrame({"event_id": [it[1] for it in items if it[0] == LB],
                       "label": [it[2] for it in items if it[0] == LB]})
    out = step.process(kinds=np.array(kinds, np.int8), events=ev, labels=lb)
    assert out is not None
    step.sync_models()
    got = {f"e{e}": out.scores[:, e].tolist() for e in range(n)}
    _assert_same((ref_f, [ref_m], ref_scores), (f, [m], got, step, 0))
    assert "fc=nan" in m["LogisticRegression"].weights and "flagc=True" in m["LogisticRegression"].weights


def test_a_fresh_model_serves_the_prior_until_its_first_label() -> None:
    step = TabularStep(KeyedFeaturizer(), [get_spec("linear").build(seed=0), get_spec("linear").build(seed=0)])
    ev = pl.DataFrame({"event_id": ["a", "b", "c"], "event_time": [0, 1, 2], "key": ["k"] * 3, "v": [1.0, 2.0, 3.0]})
    lb = pl.DataFrame({"event_id": ["a"], "label": [1]})
    out = step.process(kinds=np.array([0, 0, 1, 0], np.int8), events=ev, labels=lb, fresh_prior=[0.25, None])
    assert out.scores[0, :2].tolist() == [0.25, 0.25] and out.scores[1, :2].tolist() == [0.5, 0.5]
    assert out.scores[0, 2] == out.scores[1, 2] != 0.25  # learned: both models score alike
    assert out.label_scores[:, 0].tolist() == [0.25, 0.5]  # the learn log keeps what was served


def test_bench_script_runs_and_prints_the_ratios(capsys) -> None:
    from dataflows.bench import tabular as bench_tabular

    assert bench_tabular.main(["--events", "1500", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    for kind in ("numeric", "categorical"):
        assert f"{kind}: 1,500 events" in out
    assert out.count("compiled_vs_bare_river:") == 2 and "load average" in out


def test_a_pickled_step_resumes_mid_stream_with_the_same_floats() -> None:
    """A recovery snapshot mid-stream (the step pickled with its featurizer, models and pending
    rows) continues exactly where the uninterrupted run goes."""
    items = _stream(7, 1500, new_column_at=900)
    ref, _ = _run_both(items, batch=500, n_models=2, specs=("naive-bayes", "linear"))
    step = TabularStep(KeyedFeaturizer(), [get_spec("naive-bayes").build(seed=0), get_spec("linear").build(seed=0)])
    scores: dict = {}
    for a in range(0, len(items), 250):
        if a == 750:
            step = pickle.loads(pickle.dumps(step))  # snapshot and resume
        kinds, ev, lb = _frames(items[a: a + 250])
        out = step.process(kinds=kinds, events=ev, labels=lb)
        scores.update(zip(ev.get_column("event_id").to_list(), out.scores.T.tolist(), strict=True))
    step.sync_models()
    assert step.pending == {}  # every label came
    # (An unpickled River pipeline pickles to other bytes than the one never pickled, on either
    # path: River's own round trip. The numbers are compared.)
    _assert_same(ref, (step.featurizer, step.models, scores, step, 0), pickles=False)
