"""The benchmark's batch strategies train on the point-in-time features of ``python -m lake training-set``.

:func:`flows.bench.stream.build_stream` featurizes every event once, in the replay's
order, just before the event is learned; :func:`flows.bench.stream.training_rows` hands
a batch strategy the rows of the events whose labels arrived before its fit. So each
training row carries its key's state as of its own event, before it: the as-of join
:func:`dataflows.training_set.training_set` computes for an entity row at the event's
time, a microsecond earlier (the event itself and the labels of that very microsecond
not yet in). This checks the two agree on a small lake whose labels arrive between
later events (the label clock matters), with repeated keys.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from dataflows.replay import pin_versions
from dataflows.training_set import training_set
from flows.bench.stream import build_stream, training_rows
from serving.config import ServeConfig
from serving.engine import Engine

T0 = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())


def _small_lake(path: str, n: int = 120) -> None:
    """Events a minute apart on 4 keys, each label 150 s after its event (two events later), some never."""
    rng = random.Random(7)
    timed = []
    for i in range(n):
        x = rng.uniform(0, 10)
        t = T0 + 60 * i
        timed.append((t, 0, "predict", {"event_id": f"e{i}", "key": f"k{rng.randrange(4)}", "event_time": t,
                                        "payload": {"x": x}}))
        if i % 7:
            timed.append((t + 150, 1, "labels", {"event_id": f"e{i}", "label": int(x > 5), "label_time": t + 150}))
    timed.sort(key=lambda r: (r[0], r[1]))
    engine = Engine(ServeConfig(lake=path, server_id="parity"))
    try:
        for _, _, kind, body in timed:
            status, out = (engine.predict if kind == "predict" else engine.labels)(json.dumps(body).encode())
            assert status == 200, out
    finally:
        engine.close()


def test_batch_training_rows_carry_the_training_set_features_as_of_each_event(tmp_path):
    lake = str(tmp_path / "lake")
    _small_lake(lake)
    stream = build_stream(lake, pin_versions(lake))
    col = {name: j for j, name in enumerate(stream.names)}
    at = stream.n_events - 1
    rows = training_rows(stream, at)  # what a batch strategy fitting before the last event trains on
    assert 0 < len(rows) < stream.n_events - 1  # labels still in flight are left out
    events = pl.read_delta(f"{lake}/events").select("event_id", "key", "event_time")
    by_id = {r["event_id"]: r for r in events.iter_rows(named=True)}
    picked = [by_id[stream.event_ids[e]] for e in rows.tolist()]
    entities = pl.DataFrame({"key": [r["key"] for r in picked],
                             "at": [r["event_time"] for r in picked]}).with_columns(
        pl.col("at") - pl.duration(microseconds=1))
    pit = training_set(lake, entities, as_of_col="at")
    for e, want in zip(rows.tolist(), pit.iter_rows(named=True), strict=True):
        lo, hi = stream.indptr[e], stream.indptr[e + 1]
        got = dict(zip((stream.names[j] for j in stream.indices[lo:hi]), stream.values[lo:hi].tolist(),
                       strict=True))
        assert [got.get(n, 0.0) for n in ("key_n", "key_rate", "key_recent")] == \
            [want[n] for n in ("key_n", "key_rate", "key_recent")], stream.event_ids[e]
        assert got.get("key_gap", 0.0) == pytest.approx(want["key_gap"], rel=1e-8)  # the as-of is 1 µs earlier
    assert "key_n" in col and np.isfinite(pit["key_rate"].to_numpy()).all()
