"""Fast paths of the per-event pipeline give exactly what the plain code gives."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from monitoring.columns import feature_column, feature_matrix, numeric_keys
from monitoring.windows import WindowStats


def _reference_names(batches, capacity):
    """The described features as WindowStats chose them before it remembered the keys it had decided."""
    names: list[str] = []
    for xs in batches:
        if len(names) < capacity:
            fresh = [k for k in numeric_keys(xs, set(names)) if "=" not in k]
            names.extend(fresh[: capacity - len(names)])
    return names


def _hashed_batches(seed, n_batches=12, size=150):
    rng = random.Random(seed)
    batches = []
    for b in range(n_batches):
        xs = []
        for _ in range(size):
            x = {f"url=#{rng.randrange(5_000):x}": 1.0 for _ in range(rng.randrange(1, 6))}
            x["url_len"] = rng.random()
            if rng.random() < 0.3:
                x[f"f{rng.randrange(40)}"] = rng.choice([1.0, 2, True, None, "text", float("nan")])
            if b > 6 and rng.random() < 0.2:
                x[f"late{rng.randrange(5)}"] = rng.random()
            xs.append(x)
        batches.append(xs)
    return batches


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("capacity", [3, 20, 64])
def test_window_stats_picks_the_same_features_as_a_scan_of_every_key(seed, capacity):
    batches = _hashed_batches(seed)
    ws = WindowStats(window_us=1_000, max_features=capacity)
    for i, xs in enumerate(batches):
        ws.update_many(list(range(i * len(xs), (i + 1) * len(xs))), xs)
    assert ws.names == _reference_names(batches, capacity)
    assert all("=" not in n for n in ws.names)


def test_window_stats_forgets_remembered_keys_when_too_many_but_never_duplicates_a_name(monkeypatch):
    import monitoring.windows as windows

    monkeypatch.setattr(windows, "_MAX_SEEN", 50)
    batches = _hashed_batches(3)
    ws = WindowStats(window_us=1_000)
    for i, xs in enumerate(batches):
        ws.update_many([i] * len(xs), xs)
        assert len(ws._seen) <= 50 + sum(len(x) for x in xs)
    assert ws.names == _reference_names(batches, 64)
    assert len(ws.names) == len(set(ws.names))


def test_window_stats_snapshot_leaves_out_its_key_memory_and_resumes_the_same():
    batches = _hashed_batches(4)
    ws = WindowStats(window_us=1_000, max_features=10)
    for i, xs in enumerate(batches[:6]):
        ws.update_many([i] * len(xs), xs)
    data = pickle.dumps(ws)
    assert b"url=#" not in data
    clone = pickle.loads(data)
    for i, xs in enumerate(batches[6:], start=6):
        rows_a = [c.row for c in ws.update_many([i * 1_000] * len(xs), xs).closed]
        rows_b = [c.row for c in clone.update_many([i * 1_000] * len(xs), xs).closed]
        assert rows_a == rows_b
    assert clone.names == ws.names == _reference_names(batches, 10)


def test_feature_matrix_fast_path_equals_the_column_by_column_path():
    rng = random.Random(1)
    names = ["a", "b", "c"]
    full = [{n: rng.random() for n in names} | {"x=1": 1.0} for _ in range(100)]
    ragged = [dict(x) for x in full]
    del ragged[7]["b"]
    ragged[9]["c"] = "text"
    for xs in (full, ragged):
        slow = np.column_stack([feature_column(xs, n) for n in names])
        np.testing.assert_array_equal(feature_matrix(xs, names), slow)
    np.testing.assert_array_equal(feature_matrix(full, ["a"]), feature_column(full, "a").reshape(-1, 1))


def test_sparse_model_state_packs_weights_as_the_array_of_doubles_and_round_trips():
    from array import array

    from dataflows.sparse import SparseLogisticRegression

    rng = random.Random(2)
    m = SparseLogisticRegression()
    for _ in range(300):
        m.learn_one({f"url=#{rng.randrange(500):x}": 1.0, "url_len": rng.random()}, rng.random() < 0.3)
    names, values = m.__getstate__()[3]
    assert values == array("d", m.weights.values()).tobytes()
    clone = pickle.loads(pickle.dumps(m))
    assert list(clone.weights.items()) == list(m.weights.items()) and clone.intercept == m.intercept
    assert pickle.loads(pickle.dumps(SparseLogisticRegression())).weights == {}


def test_a_resumed_writer_drops_only_rows_already_committed(tmp_path):
    import polars as pl

    from lake.table import TableWriter, read_table

    def rows(seqs):
        return pl.DataFrame({"run_id": "r", "shard": pl.Series([0] * len(seqs), dtype=pl.Int32), "seq": seqs,
                             "step": "s", "reason": "x", "source": "t", "event_id": [str(s) for s in seqs],
                             "raw": "{}"})

    TableWriter(tmp_path, "dead_letters", writer_id="w").append(rows([1, 2]), position=2)
    again = TableWriter(tmp_path, "dead_letters", writer_id="w")
    assert again.append(rows([3, 4]), position=4) == 2  # all new: written as they are
    assert again.append(rows([4, 5]), position=5) == 1  # a restart replays seq 4: dropped
    assert read_table(tmp_path, "dead_letters")["seq"].sort().to_list() == [1, 2, 3, 4, 5]
