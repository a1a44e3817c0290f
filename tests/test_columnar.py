"""The columnar path of the predict/learn step (:mod:`dataflows.columnar`) writes the item path's rows, bit for bit.

Two learners get the same batches: one as columns (the replay's form, the columnar path when the run
allows it), the other with its items materialised first (the item-by-item path). Every table of every
batch must be equal (wall-clock columns aside), floats compared by their bits.
"""

from __future__ import annotations

import math
import pickle
import random
import re
import shutil
import zlib
from collections import Counter
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataflows.columnar import Layout, log1p_counts, tokenize
from dataflows.features import KeyedFeaturizer
from dataflows.items import EVENT, LABEL, Batch, Output
from dataflows.learner import RunConfig, ShardLearner
from dataflows.models import SPECS, ModelSpec
from dataflows.online import run_replay
from dataflows.replay import ReplayColumns, ReplayPlan, pin_versions
from dataflows.sparse import SparseLogisticRegression
from dataflows.validate import validate_batch
from lake.ingest import ingest_frame, ingest_scenario
from lake.table import exists, read_table
from monitoring.stream import MonitorConfig

S = 1_000_000
HOUR = 3_600 * S
WALL_CLOCK = ("created_at", "closed_at")
LAKE_TABLES = ("predictions", "learn_log", "metrics", "checkpoints", "window_stats", "drift_events", "expired",
               "dead_letters", "late_events")
ODD = ("\u0130", "\u212a")  # İ and the Kelvin sign: their lowercase is ASCII


# -- comparing outputs ------------------------------------------------------------------------------
def _float_bits(a: pa.Array) -> np.ndarray:
    return np.asarray(a.fill_null(0.0).to_numpy(zero_copy_only=False), np.float64).view(np.int64)


def _same_array(a: pa.Array, b: pa.Array) -> bool:
    """Equal types, nulls and values; floats by their bits (NaN equals NaN, -0.0 differs from 0.0)."""
    if a.type != b.type or len(a) != len(b) or a.null_count != b.null_count:
        return False
    if a.null_count and not a.is_null().equals(b.is_null()):
        return False
    if pa.types.is_floating(a.type):
        return np.array_equal(_float_bits(a), _float_bits(b))
    if pa.types.is_map(a.type):
        oa, ob = a.offsets.to_numpy(), b.offsets.to_numpy()
        if not np.array_equal(np.diff(oa), np.diff(ob)):
            return False
        na = int(oa[-1] - oa[0])
        return (_same_array(a.keys.slice(oa[0], na), b.keys.slice(ob[0], na))
                and _same_array(a.items.slice(oa[0], na), b.items.slice(ob[0], na)))
    return a.equals(b)


def _differing(a: pa.Table, b: pa.Table) -> list[str]:
    """Why two tables differ (schema, row count, or the columns that do), empty when they are equal."""
    if not a.schema.equals(b.schema):
        return [f"schema {a.schema} != {b.schema}"]
    if a.num_rows != b.num_rows:
        return [f"{a.num_rows} rows != {b.num_rows} rows"]
    return [name for name in a.column_names
            if not _same_array(a.column(name).combine_chunks(), b.column(name).combine_chunks())]


def _tables(out: Output) -> dict[str, pa.Table]:
    tables = {name: t.drop_columns([c for c in WALL_CLOCK if c in t.column_names]) for name, t in out.tables.items()}
    return tables


def _assert_same(got: Output, want: Output, where: str) -> None:
    g, w = _tables(got), _tables(want)
    assert g.keys() == w.keys(), f"{where}: tables {sorted(g)} != {sorted(w)}"
    for name in w:
        diff = _differing(g[name], w[name])
        assert not diff, f"{where}: {name} differs: {diff}"


def test_the_comparison_sees_a_flipped_bit_nan_and_the_sign_of_zero():
    base = pa.table({"x": [0.5, float("nan"), 0.0], "f": pa.array([[("a", 1.0)], [], [("b", 0.0)]],
                                                                   pa.map_(pa.string(), pa.float64()))})
    assert _differing(base, base.slice(0)) == []  # NaN equals NaN here (Arrow's equals says otherwise)
    flipped = base.set_column(0, "x", pa.array([np.nextafter(0.5, 1.0), float("nan"), 0.0]))
    signed = base.set_column(1, "f", pa.array([[("a", 1.0)], [], [("b", -0.0)]], pa.map_(pa.string(), pa.float64())))
    assert _differing(base, flipped) == ["x"] and _differing(base, signed) == ["f"]


# -- batches as the replay hands them over ------------------------------------------------------------
def _columns(items: list[tuple], schema: dict[str, pl.DataType]) -> ReplayColumns:
    """``items`` (events and labels, seq-ordered) as a replay batch of columns with payload ``schema``."""
    events = [it for it in items if it[1] == EVENT]
    labels = [it for it in items if it[1] == LABEL]
    ev = pl.DataFrame(
        {"event_id": [e[2] for e in events], "event_time": [e[3] for e in events], "key": [e[4] for e in events],
         **{c: pl.Series(c, [e[5].get(c) for e in events], dtype=dtype, strict=False) for c, dtype in schema.items()}},
        schema={"event_id": pl.String, "event_time": pl.Int64, "key": pl.String, **schema})
    lb = pl.DataFrame(
        {"event_id": [x[2] for x in labels], "label": [x[3] for x in labels], "label_time": [x[4] for x in labels],
         "key": [x[5] for x in labels]},
        schema={"event_id": pl.String, "label": pl.Int64, "label_time": pl.Int64, "key": pl.String})
    return ReplayColumns(items[0][0], np.array([it[1] for it in items], np.int8), ev, lb, list(schema))


def _batch(cols: ReplayColumns, *, materialize: bool) -> Batch:
    batch = Batch(0, columns=cols, suspects=set())
    if materialize:
        assert len(batch.items) == len(cols)  # the item-by-item path from here on
    return validate_batch(batch)


def _config(*, models=("linear-hash",), featurizer=None, monitor=None, **kw) -> RunConfig:
    return RunConfig(run_id="r", models=models, featurizer={"hash_fields": ["url"], "n_buckets": 2**8,
                                                            **(featurizer or {})},
                     monitor=monitor or MonitorConfig(anomaly=None), **kw)


def _replay_both(config: RunConfig, batches: list[ReplayColumns], *, materialize=lambda i: False):
    """Feed ``batches`` to a learner (as columns, but those ``materialize(i)`` says) and to an all-item
    learner; every output must be equal. Returns both learners and the rows written per table."""
    learner, reference = ShardLearner(config, shard=0), ShardLearner(config, shard=0)
    rows: Counter[str] = Counter()
    for i, cols in enumerate(batches):
        got = learner.process(_batch(cols, materialize=materialize(i)))
        want = reference.process(_batch(cols, materialize=True))
        _assert_same(got, want, f"batch {i} (seq {cols.start})")
        rows.update({name: t.num_rows for name, t in want.tables.items()})
    _assert_same(learner.finish(), reference.finish(), "finish")
    assert reference.columnar_batches == 0
    return learner, reference, rows


@pytest.fixture
def second_linear_model(monkeypatch: pytest.MonkeyPatch) -> str:
    """A challenger that is also a SparseLogisticRegression (other steps), so both take the columnar path."""
    name = "linear-hash-fast"
    monkeypatch.setitem(SPECS, name, ModelSpec(name, "sparse logistic regression, lr=0.2",
                                               lambda seed: SparseLogisticRegression(lr=0.2, intercept_lr=0.05)))
    return name


@pytest.fixture(scope="module")
def urls_lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    """4,000 URL events (11 h of traffic) and their labels, arriving 5 min to 12 h later."""
    lake = str(tmp_path_factory.mktemp("columnar") / "lake")
    ingest_scenario(lake, "urls", n=4_000, seed=2, rate=0.1)
    return lake


def _plan_batches(lake: str, size: int) -> list[ReplayColumns]:
    plan = ReplayPlan(lake, pin=pin_versions(lake))
    batches = [plan.batch(s, s + size) for s in range(0, len(plan), size)]
    assert all(not b.suspects for b in batches)  # clean columns: nothing for validation to check
    return [b.columns for b in batches]


# -- tokenize, log1p_counts, Layout -------------------------------------------------------------------
TEXTS = [
    "http://Login-1001.XYZ/signin/1001?id=7", "A-b a", "", None, "aaa aaa AAA", "---", "x", "9",
    "UPPER/lower/MiXeD", "café/über/naïve", "ÉCOLE", "日本語/テスト/abc", "emoji😀x😀y", "tab\tnew\nline\x00nul",
    "%20encoded%2Fslash", "a" * 300, " lead and trail ", "http://İstanbul.example/x", "5\u212a", "ſtraße",
]


def _expected(text: str | None, n_buckets: int) -> dict:
    f = KeyedFeaturizer(hash_fields=["url"], n_buckets=n_buckets, time_features=False, key_features=False)
    return f.transform_one({"url": text}, key="k", event_time_us=0)


def _check_tokenize(texts: list[str | None], n_buckets: int, arr: pa.Array | pa.ChunkedArray | None = None) -> None:
    off, buckets, chars, ntok, odd = tokenize(pa.array(texts, pa.large_string()) if arr is None else arr, n_buckets)
    assert off.size == len(texts) + 1 and off[0] == 0 and off[-1] == buckets.size
    lens, counts = log1p_counts(chars), log1p_counts(np.where(chars >= 0, ntok, -1))
    for i, text in enumerate(texts):
        x = _expected(text, n_buckets)
        if text is None:
            assert (chars[i], ntok[i], off[i + 1] - off[i], bool(odd[i])) == (-1, 0, 0, False)
            assert x == {} and math.isnan(lens[i]) and math.isnan(counts[i])
            continue
        assert bool(odd[i]) == any(c in text for c in ODD), text
        assert chars[i] == len(text), text
        assert lens[i] == x["url_len"] and math.copysign(1, lens[i]) == 1, text  # log1p(len), bit for bit
        if odd[i]:
            continue  # Python's str.lower decides these rows: they take the item path
        tokens = re.findall(r"[a-z0-9]+", text.lower())
        assert ntok[i] == len(tokens), text
        assert counts[i] == x["url_tokens"], text
        mine = buckets[off[i]: off[i + 1]].tolist()
        assert mine == list(dict.fromkeys(zlib.crc32(t.encode()) % n_buckets for t in tokens)), text
        assert mine == [int(k[len("url=#"):], 16) for k in x if k.startswith("url=#")], text  # dict order


@pytest.mark.parametrize("n_buckets", [2, 16, 2**20])
def test_tokenize_hashes_as_the_featurizer_does(n_buckets):
    _check_tokenize(TEXTS, n_buckets)
    assert tokenize(pa.array(TEXTS), n_buckets)[4].tolist() == [t is not None and any(c in t for c in ODD)
                                                               for t in TEXTS]


def test_tokenize_reads_slices_chunks_and_plain_strings():
    arr = pa.array(["skip me", *TEXTS, "and me"], pa.string())
    _check_tokenize(TEXTS, 2**12, arr.slice(1, len(TEXTS)))
    _check_tokenize(TEXTS, 2**12, pa.chunked_array([pa.array(TEXTS[:7]), pa.array(TEXTS[7:])]))
    _check_tokenize(TEXTS, 2**12, pl.Series(TEXTS, dtype=pl.String).to_arrow())
    off, buckets, chars, ntok, odd = tokenize(pa.array([], pa.string()), 2**12)
    assert off.tolist() == [0] and buckets.size == chars.size == ntok.size == odd.size == 0


_characters = st.one_of(st.sampled_from(list("aZz09 -./?=&_%AİK\u212aéÜ日😀\x00\t")),
                        st.characters(exclude_categories=("Cs",)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(st.one_of(st.none(), st.text(_characters, max_size=40)), max_size=12),
       n_buckets=st.sampled_from([2, 7, 256, 2**20]))
def test_tokenize_equals_the_featurizer_on_any_text(texts, n_buckets):
    _check_tokenize(texts, n_buckets)


@settings(max_examples=100, deadline=None)
@given(counts=st.lists(st.integers(min_value=-(2**62), max_value=2**62), max_size=50))
def test_log1p_counts_is_math_log1p_bit_for_bit(counts):
    counts = [0, 1, 2, 3, 7, 1000, 2**53 + 1, 2**62, -1, -(2**62), *counts]
    out = log1p_counts(np.array(counts, np.int64))
    for c, v in zip(counts, out.tolist(), strict=True):
        if c < 0:
            assert math.isnan(v)
        else:
            assert np.float64(v).view(np.int64) == np.float64(math.log1p(c)).view(np.int64), c


def _layout(**featurizer) -> Layout:
    f = KeyedFeaturizer(hash_fields=["url", "path"], n_buckets=64, **featurizer)
    return Layout.of(f, ["n", "url", "flag", "path", "ratio"],
                     {"n": pl.Int64, "url": pl.String, "flag": pl.Boolean, "path": pl.String, "ratio": pl.Float32})


def test_layout_names_and_ids_round_trip():
    layout = _layout()
    assert layout.named == ["n", "url_len", "url_tokens", "flag", "path_len", "path_tokens", "ratio",
                            "hour_sin", "hour_cos", "dow_sin", "dow_cos", "key_n", "key_gap", "key_rate", "key_recent"]
    names = [layout.name_of(f) for f in range(layout.size)]
    assert names[:3] == ["url=#0", "url=#1", "url=#2"] and names[64] == "path=#0" and names[127] == "path=#3f"
    assert layout.names().to_pylist() == names
    assert len(set(names)) == layout.size
    assert [layout.index_of(n) for n in names] == list(range(layout.size))
    # a featurizer's own names map to the ids holding them
    f = KeyedFeaturizer(hash_fields=["url", "path"], n_buckets=64)
    x = f.transform_one({"n": 3, "url": "http://a.b/C?d=1", "flag": True, "path": "x/y", "ratio": 0.5},
                        key="k", event_time_us=0)
    assert all(layout.name_of(layout.index_of(k)) == k for k in x)
    bare = _layout(time_features=False, key_features=False)
    assert bare.size == 2 * 64 + 7 and bare.index_of("hour_sin") is None and bare.index_of("key_n") is None


@pytest.mark.parametrize("name", ["carrier=UA", "url=#zz", "url=#40", "url=#100", "url=#0a", "url=#A", "url=#",
                                  "url=# 1", "url=#+1", "url=#1_0", "url=#\uff11", "other=#1", "url", "url_n",
                                  "url=1", 7, None, ("url", 1)])
def test_layout_index_of_refuses_names_it_cannot_produce(name):
    assert _layout().index_of(name) is None


def test_layout_index_of_refuses_negative_buckets():
    layout = _layout()
    assert layout.index_of("url=#-1") is None
    assert layout.index_of("path=#-1") is None


@pytest.mark.parametrize("columns, dtypes, featurizer", [
    (["url", "carrier"], {"url": pl.String, "carrier": pl.String}, {}),  # a one-hot text column
    (["url", "code"], {"url": pl.String, "code": pl.Int64}, {"categorical": ["code"]}),
    (["url"], {"url": pl.Categorical}, {}),
    (["url"], {"url": pl.Int64}, {}),  # a hashed field that is not text
    (["url", "url_len"], {"url": pl.String, "url_len": pl.Float64}, {}),  # named like a derived feature
    (["url", "key_n"], {"url": pl.String, "key_n": pl.Float64}, {}),
    (["url", "a=b"], {"url": pl.String, "a=b": pl.Float64}, {}),
    (["url", "day"], {"url": pl.String, "day": pl.Date}, {}),
])
def test_layout_leaves_to_the_item_path_what_it_cannot_produce(columns, dtypes, featurizer):
    f = KeyedFeaturizer(hash_fields=["url"], n_buckets=64, **featurizer)
    assert Layout.of(f, columns, dtypes) is None


# -- the learner, batch by batch ----------------------------------------------------------------------
def test_replay_batches_take_the_columnar_path_and_give_the_item_paths_rows(urls_lake, second_linear_model):
    batches = _plan_batches(urls_lake, 300)
    # two models, checkpoints mid-batch, labels expiring after 1 h (expired rows, dead letters)
    config = _config(models=("linear-hash", second_linear_model), checkpoint_every=250, label_ttl_us=HOUR,
                     monitor=MonitorConfig(anomaly=None, stats_window_us=HOUR // 6),
                     featurizer={"n_buckets": 2**12})
    learner, _, rows = _replay_both(config, batches)
    assert learner.columnar_batches == len(batches)
    assert rows["predictions"] == 2 * 4_000 and rows["learn_log"] > 2 * 500 and rows["checkpoints"] > 4
    assert rows["expired"] > 1_000 and rows["dead_letters"] > 500 and rows["window_stats"] > 30


def _write_lake_rows(lake: str, tables: tuple[str, ...] = LAKE_TABLES) -> dict[str, pa.Table]:
    rows = {}
    for name in tables:
        if not exists(lake, name):
            continue
        frame = read_table(lake, name)
        frame = frame.drop([c for c in WALL_CLOCK if c in frame.columns])
        flat = [c for c, dtype in frame.schema.items() if not dtype.is_nested() and dtype != pl.Binary]
        rows[name] = frame.sort(flat, maintain_order=True).to_arrow()
    return rows


def test_a_replay_through_the_dataflow_writes_the_same_lake_either_way(urls_lake, tmp_path, monkeypatch):
    calls = []
    columnar = ShardLearner._process_columnar

    def counted(self, batch):
        out = columnar(self, batch)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(ShardLearner, "_process_columnar", counted)
    lakes = {}
    for flag in (False, True):
        lake = str(tmp_path / f"columnar-{flag}")
        shutil.copytree(urls_lake, lake)
        monkeypatch.setattr(ShardLearner, "columnar", flag)
        run_replay(lake, "linear-hash", hash_fields="url", n_buckets=2**12, anomaly=None, recovery=False,
                   run_id="same", batch_size=400, shards=2, checkpoint_every=700, label_ttl="2h",
                   stats_window="30m")
        lakes[flag] = _write_lake_rows(lake)
        if not flag:
            assert calls == []
    assert len(calls) >= 20 and all(calls)  # every batch of both shards took the columnar path
    item, col = lakes[False], lakes[True]
    assert item.keys() == col.keys()
    assert {"predictions", "learn_log", "metrics", "checkpoints", "window_stats", "expired",
            "dead_letters"} <= item.keys()
    assert item["predictions"].num_rows == 4_000 and item["checkpoints"].num_rows > 4
    for name in item:
        assert not _differing(col[name], item[name]), f"{name}: {_differing(col[name], item[name])}"


def test_batches_alternating_between_the_paths_give_the_item_paths_rows(urls_lake, second_linear_model):
    batches = _plan_batches(urls_lake, 200)
    config = _config(models=("linear-hash", second_linear_model), checkpoint_every=333,
                     featurizer={"n_buckets": 2**12})
    learner, reference = ShardLearner(config, shard=0), ShardLearner(config, shard=0)
    crossed = {"columnar labels item-path events": 0, "item path labels columnar events": 0}
    for i, cols in enumerate(batches):
        materialize = i % 3 == 1
        ids = cols.labels.get_column("event_id").to_list()
        kinds = [type(learner.pending[e]) for e in ids if e in learner.pending]
        if materialize:
            crossed["item path labels columnar events"] += kinds.count(int)
        else:
            crossed["columnar labels item-path events"] += kinds.count(tuple)
        if i == len(batches) // 2:  # the challenger becomes champion
            assert learner.set_champion(second_linear_model) and reference.set_champion(second_linear_model)
        before = learner.columnar_batches
        got = learner.process(_batch(cols, materialize=materialize))
        assert learner.columnar_batches == before + (not materialize)
        _assert_same(got, reference.process(_batch(cols, materialize=True)), f"batch {i}")
    _assert_same(learner.finish(), reference.finish(), "finish")
    assert min(crossed.values()) > 50, crossed


@pytest.mark.parametrize("item_batch_before_pickle", [False, True])
def test_a_learner_pickled_mid_stream_goes_on_as_if_never_stopped(urls_lake, item_batch_before_pickle):
    batches = _plan_batches(urls_lake, 500)
    config = _config(checkpoint_every=400, featurizer={"n_buckets": 2**12})
    learner, reference = ShardLearner(config, shard=0), ShardLearner(config, shard=0)
    half = len(batches) // 2
    for i, cols in enumerate(batches[:half]):
        learner.process(_batch(cols, materialize=item_batch_before_pickle and i == half - 1))
        reference.process(_batch(cols, materialize=True))
    kinds = {type(v) for v in learner.pending.values()}
    assert kinds == ({int, tuple} if item_batch_before_pickle else {int})  # rows in the arena, tuples
    copy = pickle.loads(pickle.dumps(learner, protocol=5))
    assert copy.columnar_batches == 0  # a counter, not state
    for i, cols in enumerate(batches[half:], start=half):
        want = reference.process(_batch(cols, materialize=True))
        _assert_same(copy.process(_batch(cols, materialize=False)), want, f"copy, batch {i}")
        _assert_same(learner.process(_batch(cols, materialize=False)), want, f"original, batch {i}")
    assert copy.columnar_batches == len(batches) - half
    _assert_same(copy.finish(), reference.finish(), "finish")


def test_arena_compaction_keeps_the_rows_still_waiting(urls_lake):
    batches = _plan_batches(urls_lake, 250)
    config = _config(featurizer={"n_buckets": 2**12})
    learner, reference = ShardLearner(config, shard=0), ShardLearner(config, shard=0)
    shrunk = 0
    for i, cols in enumerate(batches):
        # an item-path batch now and then leaves tuple entries that compaction must skip
        _assert_same(learner.process(_batch(cols, materialize=i % 5 == 3)),
                     reference.process(_batch(cols, materialize=True)), f"batch {i}")
        if i % 4 == 1:
            arena = learner.columnar_step.arena
            waiting = {e: arena.row(s) + (int(arena.a_t[s]), arena.keys[s], arena.scores[s].tolist())
                       for e, s in learner.pending.items() if type(s) is int}
            before = arena.n
            arena.compact(learner.pending)
            shrunk += arena.n < before
            assert arena.n == len(waiting) and arena.top == sum(len(w[0]) for w in waiting.values())
            for e, (fs, vs, t, key, scores) in waiting.items():
                s = learner.pending[e]
                f2, v2 = arena.row(s)
                assert (f2.tolist(), v2.tolist(), int(arena.a_t[s]), arena.keys[s], arena.scores[s].tolist()) \
                    == (fs.tolist(), vs.tolist(), t, key, scores)
    _assert_same(learner.finish(), reference.finish(), "finish")
    assert learner.columnar_batches > len(batches) // 2 and shrunk > 3


# -- hand-made streams: settings, fallbacks, dead letters ---------------------------------------------
URL_SCHEMA = {"url": pl.String}


def _ev(seq: int, eid: str, t_s: int, url: str | None, key: str = "k", **payload) -> tuple:
    return (seq, EVENT, eid, t_s * S, key, {"url": url, **payload})


def _lb(seq: int, eid: str, y: int, t_s: int, key: str | None = None) -> tuple:
    return (seq, LABEL, eid, y, t_s * S, key)


def _stream(n: int, *, seed: int, t0_s: int = 1_770_000_000, nulls: bool = False) -> list[tuple]:
    """``n`` URL events over a few keys; each label arrives after a random number of items."""
    rng = random.Random(seed)
    items: list[tuple] = []
    waiting: list[str] = []
    for i in range(n):
        url = None if nulls and rng.random() < 0.1 else (
            f"{rng.choice(['HTTP', 'https'])}://{rng.choice(['a', 'b', 'Login-c'])}.{rng.choice(['com', 'xyz'])}"
            f"/{rng.randrange(40)}/{rng.choice(['é', 'x-1', '日本', ''])}?q={rng.randrange(9)}")
        items.append(_ev(len(items), f"e{i}", t0_s + 7 * i, url, key=f"k{rng.randrange(6)}"))
        waiting.append(f"e{i}")
        while waiting and rng.random() < 0.45:
            eid = waiting.pop(rng.randrange(len(waiting)))
            items.append(_lb(len(items), eid, int(rng.random() < 0.3), t0_s + 7 * i + 3))
    return items


def _cut(items: list[tuple], size: int, schema=URL_SCHEMA) -> list[ReplayColumns]:
    return [_columns(items[s: s + size], schema) for s in range(0, len(items), size)]


@pytest.mark.parametrize("featurizer", [
    {}, {"time_features": False}, {"key_features": False}, {"shared_prior": False, "smoothing": 0.0},
    {"recent_alpha": 1.0, "n_buckets": 2},
])
def test_featurizer_settings_and_payload_types_give_the_item_paths_rows(featurizer):
    rng = random.Random(5)
    items = []
    for it in _stream(500, seed=1, t0_s=-2_000_000_000, nulls=True):  # 1906: event times before the epoch
        if it[1] == EVENT:
            it[5].update(n=rng.choice([None, 1, -3, 2**60 + 1]), ratio=rng.choice([None, 0.5, -0.0, 1e90]),
                         flag=rng.choice([None, True, False]), path=rng.choice([None, "", "Über/straße", "a/b"]),
                         big=rng.choice([None, 0, 2**64 - 1]), small=rng.choice([None, 0.1, float("nan")]))
        items.append(it)
    schema = {"n": pl.Int64, "url": pl.String, "ratio": pl.Float64, "flag": pl.Boolean, "path": pl.String,
              "big": pl.UInt64, "small": pl.Float32}
    config = _config(featurizer={"hash_fields": ["url", "path"], **featurizer}, checkpoint_every=97,
                     monitor=MonitorConfig(anomaly=None, stats_window_us=None))  # missing numbers are fine
    batches = _cut(items, 150, schema)
    learner, _, _ = _replay_both(config, batches)
    assert learner.columnar_batches == len(batches)


def test_missing_numbers_with_window_statistics_go_item_by_item():
    items = _stream(120, seed=2, nulls=True)
    batches = _cut(items, 60)
    learner, _, _ = _replay_both(_config(), batches)
    has_null = [c.events.get_column("url").null_count() > 0 for c in batches]
    assert any(has_null) and learner.columnar_batches == has_null.count(False)


@pytest.mark.parametrize("odd", ODD)
def test_a_url_whose_lowercase_python_decides_sends_its_batch_item_by_item(odd):
    items = _stream(90, seed=3)
    i = next(k for k, it in enumerate(items) if it[1] == EVENT and k > len(items) // 3)
    items[i] = items[i][:5] + ({"url": f"http://{odd}stanbul.example/{odd}ELVIN?a={odd}"},)
    batches = _cut(items, len(items) // 3 + 1)
    learner, reference, _ = _replay_both(_config(), batches)
    assert learner.columnar_batches == len(batches) - 1  # the batch holding it went item by item
    # Python's lowercase makes "i" and "k" tokens the byte-wise tokenizer cannot see
    url = items[i][5]["url"]
    tokens = re.findall(r"[a-z0-9]+", url.lower())
    x = reference.featurizer.transform_one(items[i][5], key="k", event_time_us=0)
    assert x["url_tokens"] == math.log1p(len(tokens)) and tokenize(pa.array([url]), 2**8)[3][0] < len(tokens)


def test_a_float_beyond_the_models_range_is_dead_lettered_and_its_batch_goes_item_by_item(tmp_path: Path):
    rng = random.Random(6)
    n, bad = 300, 120
    frame = pl.DataFrame({
        "id": [f"e{i}" for i in range(n)], "ts": [1_770_000_000 + 7 * i for i in range(n)],
        "url": [f"http://{rng.choice('abc')}.com/{rng.randrange(40)}" for _ in range(n)],
        "amount": [1e308 if i == bad else float(i) for i in range(n)],
        "y": [int(rng.random() < 0.3) for _ in range(n)]})
    lake = str(tmp_path / "lake")
    ingest_frame(lake, frame, source="t", id_col="id", time_col="ts", label_col="y", label_delay=60)
    plan = ReplayPlan(lake, pin=pin_versions(lake))
    learner, reference = ShardLearner(_config(), shard=0), ShardLearner(_config(), shard=0)
    dead = []
    starts = range(0, len(plan), 100)
    for s in starts:
        got = learner.process(validate_batch(plan.batch(s, s + 100)))
        items = plan.batch(s, s + 100)
        assert items.items  # the item-by-item path
        want = reference.process(validate_batch(items))
        _assert_same(got, want, f"batch at seq {s}")
        dead += want.tables.get("dead_letters", pa.table({})).to_pylist()
    assert learner.columnar_batches == len(starts) - 1  # the batch holding it went item by item
    assert [(d["event_id"], d["step"], d["reason"]) for d in dead] == [
        (f"e{bad}", "validate", "value 1e+308 in field 'amount' is beyond what the models can learn from "
                                "(|value| <= 1e+100)"),
        (f"e{bad}", "learn", "label for an unknown event")]


def test_duplicate_event_ids_dead_letter_as_item_by_item():
    first = [_ev(0, "a", 0, "http://a.com"), _ev(1, "b", 1, "http://b.com"), _ev(2, "c", 2, "http://c.com"),
             _lb(3, "a", 1, 3)]
    again = [_ev(4, "b", 4, "http://other.com"),  # still waiting for its label
             _ev(5, "a", 5, "http://a.com"),  # already labelled
             _ev(6, "d", 6, "http://d.com"), _ev(7, "d", 7, "http://d2.com"),  # twice in one batch
             _lb(8, "b", 0, 8), _lb(9, "d", 1, 9)]
    after = [_ev(10, "e", 10, "http://e.com"), _lb(11, "c", 1, 11), _lb(12, "e", 0, 12), _lb(13, "d", 1, 13)]
    batches = [_columns(b, URL_SCHEMA) for b in (first, again, after)]
    learner, reference, _ = _replay_both(_config(), batches)
    assert learner.columnar_batches == 2  # the first and the last
    ref = ShardLearner(_config(), shard=0)
    ref.process(_batch(batches[0], materialize=True))
    dead = ref.process(_batch(batches[1], materialize=True)).tables["dead_letters"].to_pylist()
    assert [(d["seq"], d["reason"]) for d in dead] == [(4, "duplicate event_id"), (5, "duplicate event_id"),
                                                       (7, "duplicate event_id")]


def test_labels_unknown_twice_or_after_expiry_dead_letter_the_same_on_the_columnar_path():
    day = 86_400
    items = [_ev(0, "a", 0, "http://a.com"), _ev(1, "b", 1, "http://b.com"), _lb(2, "a", 1, 2),
             _ev(3, "old", 3, "http://old.com"), _lb(4, "nope", 0, 4)]
    items2 = [_lb(5, "a", 0, 5),  # labelled in the previous batch
              _ev(6, "c", 6, "http://c.com"), _lb(7, "c", 1, 7), _lb(8, "c", 1, 8),  # twice in this batch
              _lb(9, "b", 1, 9), _lb(10, "b", 0, 10),  # waiting since the last batch, then twice
              _ev(11, "late", 2 * day, "http://late.com")]  # moves the clock: "old" expires
    items3 = [_lb(12, "old", 1, 2 * day), _lb(13, "ghost", 1, 2 * day), _ev(14, "f", 2 * day, "http://f.com"),
              _lb(15, "late", 1, 2 * day + 1)]
    batches = [_columns(b, URL_SCHEMA) for b in (items, items2, items3)]
    config = _config(label_ttl_us=day * S, remember_labelled=100)
    learner, reference, _ = _replay_both(config, batches)
    assert learner.columnar_batches == 3
    ref = ShardLearner(config, shard=0)
    reasons = []
    for cols in batches:
        out = ref.process(_batch(cols, materialize=True)).tables
        reasons += [(d["seq"], d["event_id"], d["reason"]) for d in out.get("dead_letters", pa.table({})).to_pylist()]
    assert reasons == [(4, "nope", "label for an unknown event"), (5, "a", "label arrived twice"),
                       (8, "c", "label arrived twice"), (10, "b", "label arrived twice"),
                       (12, "old", "label arrived after its event expired"),
                       (13, "ghost", "label for an unknown event")]


def test_a_label_ahead_of_its_event_in_the_batch_goes_item_by_item():
    batches = [[_ev(0, "a", 0, "http://a.com"), _lb(1, "a", 1, 1)],
               [_lb(2, "b", 1, 2), _ev(3, "b", 3, "http://b.com")],  # every label once
               [_lb(4, "c", 1, 4), _ev(5, "c", 5, "http://c.com"), _lb(6, "c", 0, 6)],  # and twice
               [_ev(7, "d", 7, "http://d.com"), _lb(8, "d", 1, 8), _lb(9, "b", 0, 9), _lb(10, "c", 1, 10)]]
    learner, reference, rows = _replay_both(_config(), [_columns(b, URL_SCHEMA) for b in batches])
    assert learner.columnar_batches == 2  # the first and the last
    # the labels ahead find no event; c's second label is learned, its third arrives twice
    assert rows["dead_letters"] == 3 and rows["learn_log"] == 4


@pytest.mark.parametrize(("max_keys", "cut"), [(40, 20), (10, 200), (3, 7)])
def test_key_state_pruned_mid_batch_gives_the_item_paths_rows(max_keys, cut):
    # six keys at first, then a new key for every event: past max_keys the featurizer forgets some,
    # several times within one batch when batches are long
    items = [it[:4] + (f"new-{it[2]}",) + it[5:] if it[1] == EVENT and int(it[2][1:]) >= 150 else it
             for it in _stream(300, seed=4)]
    batches = _cut(items, cut)
    # (checkpoints inside batches keep the featurizer state the item path has there)
    learner, reference, _ = _replay_both(_config(featurizer={"max_keys": max_keys}, checkpoint_every=17), batches)
    assert reference.featurizer.keys_forgotten > 2 * max_keys
    assert learner.featurizer.keys_forgotten == reference.featurizer.keys_forgotten
    assert learner.columnar_batches == len(batches)


_urls = st.text(st.sampled_from(list("ab09AZ./-?= é日İK")), max_size=12).map(lambda s: "http://" + s)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_streams_split_anyhow_give_the_item_paths_rows(data):
    n = data.draw(st.integers(1, 40), label="events")
    items: list[tuple] = []
    ids = [f"e{i}" for i in range(n)] + ["ghost"]
    for i in range(n):
        eid = data.draw(st.sampled_from(ids[: i + 1]), label="event id") if data.draw(st.booleans()) and i \
            else f"e{i}"
        items.append(_ev(len(items), eid, 60 * i, data.draw(st.one_of(_urls, st.none())),
                         key=data.draw(st.sampled_from("kl"))))
        for _ in range(data.draw(st.integers(0, 2))):
            items.append(_lb(len(items), data.draw(st.sampled_from(ids)), data.draw(st.integers(0, 1)), 60 * i))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(items) - 1), max_size=4)) if len(items) > 1 else []))
    bounds = [0, *cuts, len(items)]
    batches = [_columns(items[a:b], URL_SCHEMA) for a, b in zip(bounds, bounds[1:], strict=False)]
    flags = data.draw(st.lists(st.booleans(), min_size=len(batches), max_size=len(batches)), label="materialize")
    config = _config(featurizer={"n_buckets": 16}, checkpoint_every=data.draw(st.integers(1, 20)),
                     label_ttl_us=data.draw(st.sampled_from([None, 300 * S])),
                     monitor=MonitorConfig(anomaly=None, stats_window_us=data.draw(st.sampled_from([None, 600 * S]))))
    _replay_both(config, batches, materialize=flags.__getitem__)


# -- found while writing these tests --------------------------------------------------------------------
def _drifting_stream(n: int) -> list[tuple]:
    rng = random.Random(1)
    items = []
    for i in range(n):
        items.append(_ev(len(items), f"e{i}", i, f"http://{rng.choice('abc')}.com/{rng.randrange(50)}",
                         key=f"k{i % 7}"))
        items.append(_lb(len(items), f"e{i}", int(rng.random() < (0.05 if i < 700 else 0.6)), i))
    return items


def _drift_rows(config: RunConfig, batches: list[ReplayColumns], *, materialize: bool) -> list[dict]:
    learner = ShardLearner(config, shard=0)
    rows = []
    for cols in batches:
        out = learner.process(_batch(cols, materialize=materialize)).tables
        if "drift_events" in out:
            rows += out["drift_events"].to_pylist()
    return rows


def test_several_models_and_detectors_alarm_on_the_same_rows_either_way(second_linear_model):
    batches = _cut(_drifting_stream(1_000), 500)
    config = _config(models=("linear-hash", second_linear_model), drift_detectors=("adwin", "page-hinkley"))
    col, item = (_drift_rows(config, batches, materialize=m) for m in (False, True))
    assert len({(r["model"], r["detector"]) for r in item}) == 4  # each model, each detector
    key = lambda r: (r["seq"], r["model"], r["detector"])  # noqa: E731
    assert sorted(col, key=key) == sorted(item, key=key)


def test_several_models_and_detectors_alarm_in_the_same_order_either_way(second_linear_model):
    batches = _cut(_drifting_stream(1_000), 500)
    config = _config(models=("linear-hash", second_linear_model), drift_detectors=("adwin", "page-hinkley"))
    col, item = (_drift_rows(config, batches, materialize=m) for m in (False, True))
    assert [(r["seq"], r["model"], r["detector"]) for r in col] == \
        [(r["seq"], r["model"], r["detector"]) for r in item]


def test_a_decimal_payload_column_gives_the_item_paths_features(tmp_path: Path):
    lake = str(tmp_path / "lake")
    frame = pl.DataFrame({
        "id": [f"e{i}" for i in range(20)], "t": pl.datetime_range(
            pl.datetime(2026, 1, 1, time_zone="UTC"), pl.datetime(2026, 1, 1, 0, 19, time_zone="UTC"), "1m",
            eager=True),
        "y": [i % 2 for i in range(20)], "url": [f"http://shop{i % 3}.com/item" for i in range(20)],
        "price": pl.Series([Decimal(f"{i}.50") for i in range(20)], dtype=pl.Decimal(10, 2)),
    })
    ingest_frame(lake, frame, source="shop", id_col="id", time_col="t", label_col="y", label_delay=90)
    batches = _plan_batches(lake, 15)
    assert batches[0].events.schema["price"] == pl.Decimal(10, 2)
    _replay_both(_config(), batches)


def test_labels_beyond_remember_labelled_in_one_batch_dead_letter_the_same():
    events = _columns([_ev(i, f"e{i}", i, f"http://h{i}.com") for i in range(12)], URL_SCHEMA)
    # e0 labelled, then 9 other labels (one more than remembered), then e0 again
    labels = [_lb(12, "e0", 1, 20), *(_lb(13 + j, f"e{j + 1}", 0, 20) for j in range(9)), _lb(22, "e0", 0, 21)]
    _replay_both(_config(remember_labelled=8), [events, _columns(labels, URL_SCHEMA)])


def test_ids_forgotten_by_remember_labelled_mid_batch_dead_letter_as_the_item_path():
    # 6 labels fill `labelled` (8 remembered) to 6; the next batch adds 5 more, so the three oldest
    # (e0, e1, e2) are forgotten before its last labels: e0 again is "unknown", e5 again "twice".
    first = _columns([*(_ev(i, f"e{i}", i, f"http://h{i}.com") for i in range(11)),
                      *(_lb(11 + i, f"e{i}", i % 2, 20) for i in range(6))], URL_SCHEMA)
    second = _columns([*(_lb(17 + i, f"e{6 + i}", 1, 30) for i in range(5)),
                       _lb(22, "e0", 1, 31), _lb(23, "e5", 0, 31), _lb(24, "e1", 0, 31)], URL_SCHEMA)
    learner, _, rows = _replay_both(_config(remember_labelled=8), [first, second])
    assert learner.columnar_batches == 2
    assert rows["dead_letters"] == 3


def test_without_the_compiled_loops_every_batch_goes_item_by_item_and_says_why(monkeypatch, caplog):
    import sys

    import dataflows
    from dataflows import columnar

    monkeypatch.delattr(dataflows, "_kernels", raising=False)
    monkeypatch.setitem(sys.modules, "dataflows._kernels", None)  # numba cannot load: the import fails
    columnar.available.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="dataflows.columnar"):
            learner, _, rows = _replay_both(_config(), _cut(_stream(200, seed=9), 60))
        assert learner.columnar_batches == 0 and rows["predictions"] == 200
        assert "columnar path off, batches go item by item: ModuleNotFoundError" in caplog.text
    finally:
        columnar.available.cache_clear()
