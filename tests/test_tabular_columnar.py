"""Tabular runs take the learner's columnar path (:mod:`dataflows.learner_tabular`) and write the item path's rows.

The same harness as ``tests/test_columnar.py``: two learners get the same batches, one as columns, the
other with its items materialised first (the item-by-item path, the reference); every table of every
batch must be equal, floats by their bits. The streams are tabular (numbers, booleans, categories,
nulls) with the default monitoring on.
"""

from __future__ import annotations

import pickle
import random
import shutil
import sys

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataflows.bench.history import history
from dataflows.items import EVENT, LABEL, Output
from dataflows.learner import RunConfig, ShardLearner
from dataflows.learner_tabular import TabularColumns
from dataflows.online import run_replay
from lake.ingest import ingest_frame
from monitoring.stream import MonitorConfig
from tests.test_columnar import LAKE_TABLES, _assert_same, _batch, _columns, _differing, _write_lake_rows

S = 1_000_000
HOUR = 3_600 * S
SCHEMA = {"amount": pl.Float64, "count": pl.Int64, "flag": pl.Boolean, "shop": pl.String}
LATE = {"extra": pl.Float32, "tier": pl.String}  # columns that appear mid-stream


def _stream(n: int, *, seed: int, keys: int = 5, p_null: float = 0.1, dup: float = 0.0, unknown: float = 0.0,
            label_delay_h: float = 2.0, early: float = 0.0) -> list[tuple]:
    """``n`` events (with nulls, categories that appear as the stream goes on) and their labels, in
    arrival order as items ``(seq, kind, ...)``; some event ids twice, some labels for no event, some
    (``early``) arriving before their event."""
    rng = random.Random(seed)
    arrivals = []
    for i in range(n):
        t = i * 60 * S + rng.randrange(60 * S)
        shops = [f"s{j}" for j in range(2 + i * 8 // n)]  # new categories mid-stream
        payload = {"amount": rng.gauss(50, 20), "count": rng.randrange(10), "flag": rng.random() < 0.3,
                   "shop": rng.choice(shops), "extra": rng.random(), "tier": rng.choice("abc")}
        for c in list(payload):
            if rng.random() < p_null:
                payload[c] = None
        eid = f"e{i}" if not (i and rng.random() < dup) else f"e{rng.randrange(i)}"
        key = f"k{rng.randrange(keys)}"
        arrivals.append((t, EVENT, eid, t, key, payload))
        y = int((payload["amount"] or 50) + 10 * (payload["shop"] == "s1") + rng.gauss(0, 10) > 55)
        if rng.random() < 0.9:
            lt = t + int(rng.expovariate(1 / (label_delay_h * HOUR)))
            if rng.random() < early:
                lt = t - rng.randrange(1, 10 * 60 * S)
            arrivals.append((lt, LABEL, eid, y, lt, key))
        if rng.random() < unknown:
            arrivals.append((t, LABEL, f"nope{i}", 1, t, key))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    return [(seq, *a[1:]) for seq, a in enumerate(arrivals)]


def _cut(items: list[tuple], sizes: list[int], *, late_from: int | None = None, base: dict | None = None) -> list:
    """``items`` cut into batches of ``sizes`` (cycled); from item ``late_from`` on, the batches carry
    the late columns too (schema evolution), before it they do not."""
    out, at, k = [], 0, 0
    while at < len(items):
        part = items[at: at + sizes[k % len(sizes)]]
        schema = dict(SCHEMA if base is None else base)
        if late_from is not None and part[0][0] >= late_from:
            schema.update(LATE)
        out.append(_columns(part, schema))
        at += len(part)
        k += 1
    return out


def _interned(obj, seen: set[int]) -> None:
    """Make equal strings one object in ``obj``'s dicts (keys and values, in place, order kept)."""
    if id(obj) in seen or isinstance(obj, str | int | float | bytes | type(None)):
        return
    seen.add(id(obj))
    if isinstance(obj, dict):
        items = [(sys.intern(k) if type(k) is str else k, sys.intern(v) if type(v) is str else v)
                 for k, v in obj.items()]
        obj.clear()
        obj.update(items)
        for _, v in items:
            _interned(v, seen)
    elif isinstance(obj, list):
        obj[:] = [sys.intern(v) if type(v) is str else v for v in obj]
        for v in obj:
            _interned(v, seen)
    elif isinstance(obj, tuple | set | frozenset):
        for v in obj:
            _interned(v, seen)
    elif hasattr(obj, "__dict__"):
        _interned(vars(obj), seen)


def _canonical(out: Output) -> Output:
    """``out`` with its checkpoints' model bytes made comparable: equal strings are made one object.
    After a learner is unpickled (a resume), the item path keys new entries by the payload's fresh
    name strings and the columnar path by its feature space's, so the pickles share strings
    differently (the same model, other bytes)."""
    table = out.tables.get("checkpoints")
    if table is None:
        return out
    data = []
    for raw in table.column("model_bytes").to_pylist():
        model = pickle.loads(raw)
        _interned(model, set())
        data.append(pickle.dumps(model, protocol=5))
    table = table.set_column(table.schema.get_field_index("model_bytes"), "model_bytes",
                             pa.array(data, table.schema.field("model_bytes").type))
    return Output(out.shard, {**out.tables, "checkpoints": table.drop_columns(["sha256", "hmac"])})


def _config(**kw) -> RunConfig:
    return RunConfig(run_id="r", **kw)


def _replay_both(config: RunConfig, batches: list, *, materialize=lambda i: False, pickle_at: int | None = None):
    learner, reference = ShardLearner(config, shard=0), ShardLearner(config, shard=0)
    assert type(learner.columnar_step) is TabularColumns
    taken = 0
    counts: dict[str, int] = {}
    for i, cols in enumerate(batches):
        if i == pickle_at:
            learner = pickle.loads(pickle.dumps(learner))
            reference = pickle.loads(pickle.dumps(reference))
        before = learner.columnar_batches
        got = learner.process(_batch(cols, materialize=materialize(i)))
        taken += learner.columnar_batches - before
        want = reference.process(_batch(cols, materialize=True))
        _assert_same(_canonical(got), _canonical(want), f"batch {i} (seq {cols.start})")
        for name, t in want.tables.items():
            counts[name] = counts.get(name, 0) + t.num_rows
    _assert_same(_canonical(learner.finish()), _canonical(reference.finish()), "finish")
    assert reference.columnar_batches == 0
    return taken, counts


def test_default_settings_take_the_columnar_path_with_every_monitor_on():
    items = _stream(3_000, seed=1, dup=0.001, unknown=0.02)
    batches = _cut(items, [250, 97, 400])
    config = _config(checkpoint_every=300, label_ttl_us=3 * HOUR,
                     monitor=MonitorConfig(stats_window_us=6 * HOUR, anomaly="zscore(block=100)"))
    taken, counts = _replay_both(config, batches)
    assert taken >= len(batches) - 5  # (batches with a duplicate id decline)
    for table in ("predictions", "learn_log", "metrics", "checkpoints", "window_stats", "dead_letters", "expired",
                  "anomalies"):
        assert counts.get(table, 0) > 0, table


def test_the_default_monitor_config_takes_the_columnar_path():
    items = _stream(1_500, seed=4)
    taken, counts = _replay_both(_config(), _cut(items, [300]))
    assert taken == len(_cut(items, [300]))
    assert counts["predictions"] == 1_500


@pytest.mark.parametrize("models", [("linear", "naive-bayes"), ("naive-bayes",)])
def test_several_models_with_schema_evolution_give_the_item_paths_rows(models):
    items = _stream(2_000, seed=2)
    batches = _cut(items, [200, 333], late_from=len(items) // 2)
    taken, counts = _replay_both(_config(models=models, checkpoint_every=150), batches)
    assert taken == len(batches)
    assert counts["predictions"] == len(models) * 2_000


def test_a_numeric_stream_without_nulls_gives_the_item_paths_window_statistics_and_scores():
    """Every event with the same features: the monitors' matrix is the feature rows as they are."""
    items = _stream(2_000, seed=8, p_null=0.0)
    batches = _cut(items, [300, 170], base={"amount": pl.Float64, "count": pl.Int64})
    config = _config(models=("linear", "naive-bayes"), checkpoint_every=500,
                     monitor=MonitorConfig(stats_window_us=2 * HOUR, anomaly="zscore(block=100)"))
    taken, counts = _replay_both(config, batches)
    assert taken == len(batches) and counts["window_stats"] > 10 and counts["anomalies"] > 0


def test_checkpoints_near_the_key_limit_keep_the_item_paths_featurizer():
    """Five keys under a limit of eight: a batch's known keys and the featurizer's together pass the limit
    (the checkpoints' featurizer is rebuilt from a copy taken before the batch), no key is forgotten, every
    batch takes the columnar path and its checkpoints hold the item path's featurizer bytes."""
    items = _stream(2_000, seed=9, keys=5)
    batches = _cut(items, [300, 170])
    taken, counts = _replay_both(_config(featurizer={"max_keys": 8}, checkpoint_every=90), batches)
    assert taken == len(batches) and counts["checkpoints"] > 15


def test_batches_alternating_between_the_paths_and_a_snapshot_mid_stream():
    items = _stream(2_500, seed=5, dup=0.005, unknown=0.01, early=0.01)
    batches = _cut(items, [180, 260], late_from=len(items) // 3)
    taken, _ = _replay_both(_config(models=("linear", "naive-bayes"), checkpoint_every=200), batches,
                            materialize=lambda i: i % 3 == 1, pickle_at=len(batches) // 2)
    assert 0 < taken < len(batches)


def test_the_item_path_switch_sends_every_batch_item_by_item(monkeypatch):
    monkeypatch.setattr(ShardLearner, "columnar", False)
    items = _stream(600, seed=6)
    taken, counts = _replay_both(_config(), _cut(items, [200]))
    assert taken == 0 and counts["predictions"] == 600


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_tabular_streams_split_anyhow_give_the_item_paths_rows(data):
    n = data.draw(st.integers(50, 400), label="n")
    items = _stream(n, seed=data.draw(st.integers(0, 10**6), label="seed"),
                    keys=data.draw(st.sampled_from([1, 3, 50]), label="keys"),
                    p_null=data.draw(st.sampled_from([0.0, 0.2, 0.6]), label="p_null"),
                    dup=data.draw(st.sampled_from([0.0, 0.02]), label="dup"),
                    unknown=data.draw(st.sampled_from([0.0, 0.05]), label="unknown"),
                    label_delay_h=data.draw(st.sampled_from([0.01, 1.0, 10.0]), label="delay"),
                    early=data.draw(st.sampled_from([0.0, 0.05]), label="early"))
    sizes = data.draw(st.lists(st.integers(1, 120), min_size=1, max_size=4), label="sizes")
    late_from = data.draw(st.one_of(st.none(), st.integers(0, len(items))), label="late_from")
    batches = _cut(items, sizes, late_from=late_from)
    every = data.draw(st.sampled_from([1, 7, 50, 10_000]), label="every")
    models = data.draw(st.sampled_from([("linear",), ("linear", "naive-bayes"), ("naive-bayes", "linear")]))
    mask = data.draw(st.integers(0, 2**16), label="materialize")
    pickle_at = data.draw(st.one_of(st.none(), st.integers(0, len(batches))), label="pickle_at")
    config = _config(models=models, checkpoint_every=every, label_ttl_us=HOUR,
                     monitor=MonitorConfig(stats_window_us=HOUR, anomaly="zscore(block=20)"))
    _replay_both(config, batches, materialize=lambda i: bool(mask >> (i % 16) & 1), pickle_at=pickle_at)


def test_a_replay_of_a_categorical_history_writes_the_same_lake_either_way(tmp_path, monkeypatch):
    """The whole dataflow on defaults (anomaly scores, window statistics, expiry chosen from the data),
    two shards: the lake's tables are the same with the columnar path on and off."""
    base = str(tmp_path / "base")
    ingest_frame(base, history("categorical", 3_000, seed=3), source="history", id_col="event_id",
                 time_col="event_time", key_col="key", label_col="label", label_time_col="label_time")
    calls: list[bool] = []
    columnar = ShardLearner._process_columnar

    def counted(self, batch):
        out = columnar(self, batch)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(ShardLearner, "_process_columnar", counted)
    lakes = {}
    for flag in (False, True):
        lake = str(tmp_path / f"columnar-{flag}")
        shutil.copytree(base, lake)
        monkeypatch.setattr(ShardLearner, "columnar", flag)
        run_replay(lake, "linear", recovery=False, run_id="same", batch_size=500, shards=2, checkpoint_every=400)
        lakes[flag] = _write_lake_rows(lake, (*LAKE_TABLES, "anomalies"))
        if not flag:
            assert calls == []
    assert len(calls) >= 10 and all(calls)  # every batch of both shards took the columnar path
    item, col = lakes[False], lakes[True]
    assert item.keys() == col.keys()
    assert {"predictions", "learn_log", "metrics", "checkpoints", "window_stats"} <= item.keys()
    assert item["predictions"].num_rows == 3_000
    assert item["predictions"].column("anomaly_score").null_count < 3_000  # zscore scores, once warmed up
    for name in item:
        assert not _differing(col[name], item[name]), f"{name}: {_differing(col[name], item[name])}"


def test_without_the_compiled_loops_tabular_batches_go_item_by_item(monkeypatch):
    import sys

    import dataflows
    from dataflows import tabular

    monkeypatch.delattr(dataflows, "_tabular_kernels", raising=False)
    monkeypatch.setitem(sys.modules, "dataflows._tabular_kernels", None)  # numba cannot load: the import fails
    tabular.available.cache_clear()
    try:
        items = _stream(400, seed=9)
        taken, counts = _replay_both(_config(), _cut(items, [100]))
        assert taken == 0 and counts["predictions"] == 400
    finally:
        tabular.available.cache_clear()


def test_a_batch_that_would_leave_non_finite_weights_goes_item_by_item(monkeypatch):
    """A ``linear`` pipeline whose step overflows its weights: the batch goes to the item path, whose guard
    dead-letters each such label and keeps the models finite (dataflows.guard); the rows are the item path's."""
    from river import linear_model, optim

    from dataflows.models import SPECS, ModelSpec
    from dataflows.transformers import NumericStandardScaler

    monkeypatch.setitem(SPECS, "sgd-overflow", ModelSpec("sgd-overflow", "the linear pipeline with a huge step",
                                                         lambda seed: NumericStandardScaler() | linear_model.
                                                         LogisticRegression(optimizer=optim.SGD(1.7e308), l2=0.0)))
    items = _stream(1_200, seed=11, p_null=0.0, label_delay_h=0.2)
    batches = _cut(items, [150])
    taken, counts = _replay_both(_config(models=("linear", "sgd-overflow"), checkpoint_every=100), batches)
    assert taken < len(batches) and counts["dead_letters"] > 0
    learner = ShardLearner(_config(models=("linear", "sgd-overflow"), checkpoint_every=100), shard=0)
    reasons = set()
    for cols in batches:
        dead = learner.process(_batch(cols, materialize=False)).tables.get("dead_letters")
        reasons.update(dead.column("reason").to_pylist() if dead is not None else ())
    assert "model 'sgd-overflow' would be left with non-finite weights" in reasons
