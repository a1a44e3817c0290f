"""Live batches as columns (:mod:`dataflows.live_columns`): the learner's columnar step takes them and writes the
item path's rows; batches whose columns would not say what their items say stay items.

Two learners get the same live-decoded batches (JSON, the Kafka source's decoding, payload types, validation):
one through :func:`~dataflows.live_columns.live_batch`, the other as items (the reference); every table of every
batch must be equal, floats by their bits (the harness of ``tests/test_tabular_columnar.py``). Then the live
flow itself, on librdkafka's mock cluster, writes the same lake whether its batches take the columnar step or not.
"""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
from bytewax.testing import run_main

from dataflows.decode import decode_event, decode_label
from dataflows.items import EVENT, LABEL, Batch
from dataflows.kafka import _MESSAGE_FIELDS
from dataflows.kafka_types import PayloadTypes
from dataflows.learner import RunConfig, ShardLearner
from dataflows.live_columns import LiveColumns, live_batch
from dataflows.online import build_live_flow
from dataflows.produce import produce
from dataflows.validate import validate_batch
from monitoring.stream import MonitorConfig
from tests.test_columnar import _assert_same, _differing, _write_lake_rows
from tests.test_kafka import mock_kafka  # noqa: F401  (the fixture)
from tests.test_tabular_columnar import _canonical, _interned, _stream

S = 1_000_000


def _wire(items: list[tuple], *, seed: int, missing: float = 0.0, new_from: int | None = None) -> list[tuple]:
    """``items`` as the Kafka source hands them on: each sent as JSON (some events without a field,
    ``missing``; from seq ``new_from`` on a field the stream had not had), decoded and fitted to the
    payload types as the source does (integers into float columns, fields in table order)."""
    rng = random.Random(seed)
    types = PayloadTypes()
    out = []
    for seq, kind, event_id, a, b, c in items:
        if kind == EVENT:
            payload = dict(c)
            if rng.random() < missing:
                payload.pop(rng.choice(list(payload)))
            if new_from is not None and seq >= new_from:
                payload["late"] = rng.random()
            msg = {"kind": "event", "event_id": event_id, "event_time": a / S, "key": b, **payload}
            item, bad = decode_event(json.loads(json.dumps(msg)), seq=seq, reserved=_MESSAGE_FIELDS)
            payload, reason = types.normalize(item[5])
            assert bad is None and reason is None
            out.append((*item[:5], payload))
        else:
            msg = {"kind": "label", "event_id": event_id, "label": a, "label_time": b / S, "key": c}
            item, bad = decode_label(json.loads(json.dumps(msg)), seq=seq)
            assert bad is None
            out.append(item)
    return out


def _live(part: list[tuple]) -> Batch:
    batch = validate_batch(Batch(0, list(part), source="kafka:events/0"))
    batch.suspects = set()  # (the source validated it, as the live source does)
    return batch


def _both(config: RunConfig, items: list[tuple], sizes: list[int], *, pickle_at: int | None = None) -> tuple[int, int]:
    """Feed both learners; returns (batches the columns learner's columnar step took, batches)."""
    learner, reference = ShardLearner(config, shard=0), ShardLearner(config, shard=0)
    at, k, n = 0, 0, 0
    while at < len(items):
        part = items[at: at + sizes[k % len(sizes)]]
        if k == pickle_at:
            learner, reference = pickle.loads(pickle.dumps(learner)), pickle.loads(pickle.dumps(reference))
        got = learner.process(live_batch(_live(part), min_items=1))
        want = reference.process(_live(part))
        _assert_same(_canonical(got), _canonical(want), f"batch {k} (seq {part[0][0]})")
        at, k, n = at + len(part), k + 1, n + 1
    _assert_same(_canonical(learner.finish()), _canonical(reference.finish()), "finish")
    assert reference.columnar_batches == 0
    return learner.columnar_batches, n


def test_live_batches_of_every_size_take_the_columnar_step_and_write_the_item_paths_rows():
    items = _wire(_stream(2_500, seed=3, dup=0.002, unknown=0.01), seed=3, new_from=2_000)
    config = RunConfig(run_id="r", models=("linear", "naive-bayes"), checkpoint_every=300, label_ttl_us=3 * 3_600 * S,
                       monitor=MonitorConfig(stats_window_us=6 * 3_600 * S, anomaly="zscore(block=100)"))
    taken, n = _both(config, items, [1, 7, 64, 23, 150, 3], pickle_at=40)
    # (item by item: batches with a duplicate id or a label before its event, and small ones with a field null in
    # every event, whose type the items do not tell)
    assert taken > n // 2


def test_batches_with_a_field_missing_go_item_by_item_and_the_rest_as_columns():
    items = _wire(_stream(1_500, seed=4, p_null=0.05), seed=4, missing=0.01)
    taken, n = _both(RunConfig(run_id="r"), items, [40, 90])
    assert 0 < taken < n


def test_columns_refuse_what_they_would_say_otherwise_than_the_items():
    ev = [(10 + i, EVENT, f"e{i}", 1_000 * S + i, "k", {"x": float(i), "s": "a"}) for i in range(4)]
    assert LiveColumns.of(ev) is not None
    assert LiveColumns.of([*ev[:3], (13, EVENT, "e3", 1_000 * S, "k", {"x": 3.0})]) is None  # a field missing
    assert LiveColumns.of([*ev[:3], (13, EVENT, "e3", 1_000 * S, "k", {"s": "a", "x": 3.0})]) is None  # order
    assert LiveColumns.of([*ev[:3], (13, EVENT, "e3", 1_000 * S, "k", {"x": "3", "s": "a"})]) is None  # a string
    assert LiveColumns.of([*ev[:3], (13, EVENT, "e3", 1_000 * S, "k", {"x": 3, "s": "a"})]) is None  # an int
    assert LiveColumns.of([*ev[:3], (13, LABEL, "e0", True, 1_001 * S, "k")]) is None  # a bool label
    assert live_batch(Batch(0, [*ev[:2], ev[3]]), min_items=1).columns is None  # a gap in the offsets
    assert live_batch(Batch(0, ev), min_items=5).columns is None  # fewer items than asked for
    batch = live_batch(Batch(0, ev, source="kafka:t/0"), min_items=1)
    assert batch.columns is not None and not batch.materialized
    assert batch.items is ev  # the items themselves, on demand
    assert batch.columns.events["x"].to_list() == [0.0, 1.0, 2.0, 3.0]
    again = pickle.loads(pickle.dumps(batch))
    assert again.items == ev and again.columns.events.equals(batch.columns.events)


@pytest.mark.parametrize("model", ["linear"])
def test_the_live_flow_writes_the_same_lake_through_the_columnar_step(mock_kafka, tmp_path, monkeypatch,  # noqa: F811
                                                                      model):
    produce(mock_kafka, "events", "flights", limit=3_000)
    calls = []
    step = ShardLearner._process_columnar

    def counted(self, batch):
        out = step(self, batch)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(ShardLearner, "_process_columnar", counted)
    monkeypatch.setattr("dataflows.live_columns.MIN_COLUMNS_ITEMS", 1)
    lakes = {}
    for columnar in (False, True):
        monkeypatch.setattr(ShardLearner, "columnar", columnar)
        lake = str(tmp_path / f"columnar-{columnar}")
        # (a label TTL longer than every delay: a label later than the TTL is learned when it comes in the batch
        # whose clock passes the TTL, and a dead letter when it comes after: where the batches were cut, which
        # differs between any two live runs; the TTL chosen from this topic, 12h, is shorter than a few delays)
        run_main(build_live_flow(lake, model, brokers=mock_kafka, topic="events", run_id="same", stop_at_end=True,
                                 flush_seconds=0.5, checkpoint_every=500, label_ttl="7d"))
        lakes[columnar] = _write_lake_rows(lake)
        assert calls == [] if not columnar else sum(calls) >= 4
    item, col = lakes[False], lakes[True]
    assert item.keys() == col.keys() and {"predictions", "learn_log", "metrics", "checkpoints"} <= item.keys()
    assert item["predictions"].num_rows == 3_000 and item["checkpoints"].num_rows > 4
    for name in item:
        # (besides the sums: the anomaly scorer learns a batch at a time, and a label counts as late against the
        # windows closed by the batches before it: both follow where a live run's batches were cut, on either path)
        # (and the windows' label counts: a label counts in the window its batch finds open)
        skip = {"checkpoints": ("model_bytes", "sha256", "hmac"), "metrics": (*_BATCH_SUMS, "n_late_labels"),
                "predictions": ("anomaly_score",)}.get(name, ())
        # (and the windows' means and deviations: a window merges the events it holds when 64 wait or it closes,
        # which follows the batches' cuts too; compared below to the order of additions)
        keep = [c for c in item[name].column_names if c not in skip
                and not (name == "window_stats" and ("label" in c or "positive" in c or c in ("mean", "std")))]
        assert not _differing(col[name].select(keep), item[name].select(keep)), name
    # (a feature constant in a window has the deviation 0 in one grouping and a rounding residue, ~1e-16 of the
    # features' magnitude, in another; a mean that cancels to ~0 likewise: compared to that scale)
    scale = max(1.0, *(abs(v) for row in item["window_stats"]["mean"].to_pylist() for _, v in row))
    for c in ("mean", "std"):
        got, want = (t["window_stats"][c].to_pylist() for t in (col, item))
        assert [[k for k, _ in row] for row in got] == [[k for k, _ in row] for row in want], c
        assert np.allclose([v for row in got for _, v in row], [v for row in want for _, v in row],
                           rtol=1e-12, atol=1e-12 * scale, equal_nan=True), c
    # The same models (the paths share strings between a model's dicts otherwise: other pickles) ...
    assert _models(col["checkpoints"]) == _models(item["checkpoints"])
    # ... and the same sums, up to the order of additions: a live batch is what has arrived, cut otherwise in
    # each run, and a window's sums add a batch's sum at a time on either path.
    for c in _BATCH_SUMS:
        assert np.allclose(col["metrics"][c].to_numpy(), item["metrics"][c].to_numpy(), rtol=1e-12, atol=0)


_BATCH_SUMS = ("sum_log_loss", "cum_log_loss", "log_loss")


def _models(checkpoints) -> list[bytes]:
    out = []
    for raw in checkpoints["model_bytes"].to_pylist():
        model = pickle.loads(raw)
        _interned(model, set())
        out.append(pickle.dumps(model, protocol=5))
    return out
