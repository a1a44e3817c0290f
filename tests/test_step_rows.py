"""A step's predictions and learn log are built into Arrow when the lake sink commits them, many
steps at once: the lake must hold exactly the rows each step would have built on its own."""

from __future__ import annotations

import json
import pickle
import random

import polars as pl
import pyarrow as pa
import pytest

from dataflows.items import EVENT, LABEL, Batch
from dataflows.kafka_messages import _served
from dataflows.learner import RunConfig, ShardLearner
from dataflows.sealed import PARTS, pack, unseal_parts
from dataflows.sinks import ROWS_PURPOSE, DeltaSinkPartition, _framed
from dataflows.validate import validate_batch
from lake import integrity
from lake.integrity import IntegrityError
from lake.table import exists, read_table

S = 1_000_000


def _stream(n: int, seed: int = 3) -> list[tuple]:
    """Events of a few keys, each labelled 5 items later, with a feature that appears halfway."""
    rng = random.Random(seed)
    items, seq = [], 0
    for i in range(n):
        x = {"v": rng.uniform(0, 10), **({"late": rng.random()} if i > n // 2 else {})}
        items.append((seq, EVENT, f"e{i}", (1_000 + i) * S, f"k{i % 4}", x))
        seq += 1
        if i >= 5:
            j = i - 5
            items.append((seq, LABEL, f"e{j}", rng.random() < 0.4, (1_000 + i) * S, f"k{j % 4}"))
            seq += 1
    return items


def _steps(learner: ShardLearner, items: list[tuple], size: int) -> list:
    return [learner.process(validate_batch(Batch(0, items[i:i + size]))) for i in range(0, len(items), size)]


def test_the_lake_holds_the_rows_each_step_built_on_its_own(tmp_path):
    # Two models (champion and challenger), checkpoints inside the stream (model versions change
    # between and within steps) and anomaly scores: steps of 1 to 3 items, as a server or a live
    # flow hands them over.
    config = RunConfig(run_id="r", models=("linear", "tree"), checkpoint_every=7)
    items = _stream(120)
    outputs = _steps(ShardLearner(config, shard=0), items, 1) + _steps(ShardLearner(config, shard=1), items, 3)
    sink = DeltaSinkPartition(str(tmp_path), run_id="r", flush_rows=10**6, flush_seconds=3600)
    sink.write_batch(outputs)
    sink.close()
    for table in ("predictions", "learn_log"):
        lake = read_table(str(tmp_path), table).sort("shard", "seq", "model")
        own = pl.from_arrow(pa.concat_tables([o.tables[table].arrow() for o in outputs if table in o.tables]))
        assert lake.height == own.height == (240 if table == "predictions" else 230) * 2
        assert lake.equals(own.sort("shard", "seq", "model").select(lake.columns)), table
    versions = read_table(str(tmp_path), "predictions")["model_version"].unique().to_list()
    assert len(versions) > 4  # checkpoints happened inside the stream


@pytest.mark.parametrize("built", [True, False], ids=["chunk-built", "chunk-still-building"])
def test_a_live_sink_builds_nothing_on_the_steps_thread_and_snapshots_and_commits_the_same_rows(tmp_path, built):
    # Live, the step's thread (the prediction path) builds no Arrow: every BUILD_PARTS steps of a buffer go to
    # the pack thread as a chunk, built and packed there (a replay's sink builds them itself). A snapshot reuses
    # a built chunk's packed bytes, or pickles its steps while it is still building; a restart from it, and the
    # sink's own commits, write exactly the rows each step built on its own.
    import threading

    from dataflows.sink_rows import BUILD_PARTS, Chunk

    config = RunConfig(run_id="r", models=("linear", "tree"), checkpoint_every=7)
    outputs = _steps(ShardLearner(config, shard=0), _stream(120), 1)
    lake = str(tmp_path / "lake")
    sink = DeltaSinkPartition(lake, run_id="r", flush_rows=10**6, flush_seconds=3600, snapshot_rows=True)
    hold = threading.Event()
    if not built:  # the pack thread busy: the chunk is not built when the snapshot comes
        sink._pack_pool.submit(hold.wait, 30)
    sink.write_batch(outputs)
    parts = sink._buffers[("predictions", 0)].parts
    assert not any(isinstance(p, pa.Table) for p in parts)
    chunks = [p for p in parts if isinstance(p, Chunk)]
    assert len(chunks) == 1 and chunks[0].num_rows == 2 * BUILD_PARTS and len(parts) == 120 - BUILD_PARTS + 1
    if built:
        chunks[0].future.result(timeout=30)
        import time

        deadline = time.monotonic() + 10  # (the future's callbacks run just after its result is set)
        while chunks[0].parts is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert chunks[0].parts is None, "once built, the chunk lets its steps' Python objects go"
    state = sink.snapshot()
    assert chunks[0].future.done() is built
    hold.set()
    other = str(tmp_path / "restarted")
    DeltaSinkPartition(other, run_id="r", flush_rows=10**6, flush_seconds=3600, snapshot_rows=True,
                       resume=state).close()
    sink.close()
    for table in ("predictions", "learn_log"):
        own = pl.from_arrow(pa.concat_tables([o.tables[table].arrow() for o in outputs if table in o.tables]))
        for where in (lake, other):
            got = read_table(where, table).sort("shard", "seq", "model")
            assert got.height == own.height > 0
            assert got.equals(own.sort("shard", "seq", "model").select(got.columns)), (table, where)
    replay = DeltaSinkPartition(str(tmp_path / "replay"), run_id="r", flush_rows=10**6, flush_seconds=3600)
    replay.write_batch(outputs)
    assert any(isinstance(p, pa.Table) for p in replay._buffers[("predictions", 0)].parts)
    replay.close()


def test_the_predictions_topic_gets_the_same_messages_from_rows_not_yet_arrow():
    learner = ShardLearner(RunConfig(run_id="r", models=("linear", "tree")), shard=0)
    out = _steps(learner, _stream(12), 100)[0]
    preds = out.tables["predictions"]
    messages = _served(preds)
    assert messages == _served(preds.arrow())
    assert [m["event_id"] for m in messages] == [f"e{i}" for i in range(12)]  # the champion's, once each
    assert json.loads(json.dumps(messages[0]))["event_time"] == "1970-01-01T00:16:40+00:00"


def test_a_live_snapshot_holds_the_steps_rows_as_they_are_and_a_restart_commits_exactly_them(tmp_path):
    # A live sink's snapshot does not build the steps' rows into Arrow: it pickles them as the step handed
    # them over (sealed with the lake's key). Killed after the snapshot, a restart from it commits them,
    # equal to what each step built on its own, and a second restart from the same snapshot doubles nothing.
    config = RunConfig(run_id="r", models=("linear", "tree"), checkpoint_every=7)
    outputs = _steps(ShardLearner(config, shard=0), _stream(120), 2)
    lake = str(tmp_path / "lake")
    sink = DeltaSinkPartition(lake, run_id="r", flush_rows=10**6, flush_seconds=3600, snapshot_rows=True)
    sink.write_batch(outputs)
    state = sink.snapshot()
    assert not exists(lake, "predictions"), "the snapshot returned before any commit"
    for _ in range(2):  # kill -9 after the snapshot; restart from it, twice
        DeltaSinkPartition(lake, run_id="r", flush_rows=10**6, flush_seconds=3600, snapshot_rows=True,
                           resume=state).close()
    for table in ("predictions", "learn_log"):
        got = read_table(lake, table).sort("shard", "seq", "model")
        own = pl.from_arrow(pa.concat_tables([o.tables[table].arrow() for o in outputs if table in o.tables]))
        assert got.height == own.height > 0
        assert got.equals(own.sort("shard", "seq", "model").select(got.columns)), table


def test_a_live_snapshot_whose_rows_were_altered_is_refused_before_anything_is_unpickled(tmp_path):
    config = RunConfig(run_id="r")
    outputs = _steps(ShardLearner(config, shard=0), _stream(20), 4)
    lake = str(tmp_path / "lake")
    sink = DeltaSinkPartition(lake, run_id="r", flush_rows=10**6, flush_seconds=3600, snapshot_rows=True)
    sink.write_batch(outputs)
    tag, data = sink.snapshot()
    entries = [e for part in unseal_parts((tag, data), purpose=ROWS_PURPOSE, what="test") for e in part]
    assert len(data) < 0.5 * len(pickle.dumps(entries, protocol=5)), "the snapshot's rows are compressed"
    # A byte of the compressed rows changed, or the rows swapped for another (valid) compressed pickle: refused
    # on the HMAC, before anything is decompressed or unpickled (a pickle that would run code if it were).
    evil = pack(_Boom())
    for forged in ((tag, data[:-5] + bytes([data[-5] ^ 1]) + data[-4:]),
                   (tag, PARTS + len(evil).to_bytes(8, "big") + evil),
                   (tag, _framed(pickle.dumps(_Boom(), protocol=5)))):
        with pytest.raises(IntegrityError, match="lake sink.*HMAC does not match"):
            DeltaSinkPartition(lake, run_id="r", flush_rows=10**6, flush_seconds=3600, snapshot_rows=True,
                               resume=forged)
    assert not _Boom.ran
    assert not exists(lake, "predictions")


class _Boom:
    """Unpickling it would run code: a forged snapshot must never get that far."""
    ran = False

    def __reduce__(self):
        return (setattr, (_Boom, "ran", True))


@pytest.mark.parametrize("form", ["uncompressed", "one compressed pickle"])
def test_a_live_snapshot_of_an_older_form_still_resumes_and_commits_its_rows(tmp_path, form):
    # Snapshots written before the rows were compressed (the sealed pickle itself), or compressed as one pickle
    # before they came in sealed parts, still load after an upgrade.
    outputs = _steps(ShardLearner(RunConfig(run_id="r"), shard=0), _stream(30), 3)
    lake = str(tmp_path / "lake")
    sink = DeltaSinkPartition(lake, run_id="r", flush_rows=10**6, flush_seconds=3600, snapshot_rows=True)
    sink.write_batch(outputs)
    entries = [e for part in unseal_parts(sink.snapshot(), purpose=ROWS_PURPOSE, what="test") for e in part]
    data = pickle.dumps(entries, protocol=5)
    old = integrity.seal(data if form == "uncompressed" else _framed(data), purpose=ROWS_PURPOSE)
    assert old[1].startswith(b"\x80" if form == "uncompressed" else b"riverlake rows zstd\n")
    DeltaSinkPartition(lake, run_id="r", flush_rows=10**6, flush_seconds=3600, snapshot_rows=True,
                       resume=old).close()
    own = pa.concat_tables([o.tables["predictions"].arrow() for o in outputs if "predictions" in o.tables])
    assert read_table(lake, "predictions").height == own.num_rows > 0


def test_the_live_sink_bench_measures_the_step_threads_cpu_and_a_snapshot():
    from dataflows.bench.live_sink import run

    res = run(events=300, shards=2, repeat=1)
    assert res["steps"] == 2 * 24 and res["prediction_rows"] == 600
    assert res["write_batch_ms"] > 0 and res["snapshot_ms"] > 0 and res["snapshot_bytes"] > 10_000
