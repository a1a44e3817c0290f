"""The live Kafka mode records its stream in the lake: today's live run is tomorrow's replay.

Against librdkafka's mock cluster (the real protocol on 127.0.0.1; see ``tests/test_kafka.py``).
"""

from __future__ import annotations

import json
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta

import confluent_kafka as ck
import polars as pl
import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main

from dataflows.online import build_flow, build_live_flow
from dataflows.produce import frame_messages, send
from dataflows.sealed import is_sealed_parts
from lake import integrity
from lake.table import read_table, table_version
from tests.synthetic import synthetic_frames
from tests.test_kafka import mock_cluster

PRED_COLS = ["shard", "event_id", "event_time", "key", "model", "role", "model_version", "score", "prediction",
             "features"]
LEARN_COLS = ["shard", "event_id", "model", "label", "label_time", "score", "learn_order", "model_version"]


@pytest.fixture
def mock_kafka():
    with mock_cluster() as brokers:
        yield brokers


def _frames(n: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Synthetic events with an integer field and a field that appears half-way (feature evolution)."""
    events, labels = synthetic_frames(n, seed=seed, keys="abcdefgh")
    tier = [None if i < n // 2 else ("gold" if i % 3 else "silver") for i in range(n)]
    return events.with_columns(visits=pl.int_range(0, n) % 7, tier=pl.Series(tier, dtype=pl.String)), labels


def _rows(lake: str, table: str, run_id: str, cols: list[str]) -> pl.DataFrame:
    return read_table(lake, table).filter(pl.col("run_id") == run_id).select(cols).sort(["event_id", "model"])


def _hostile(brokers: str, topic: str) -> None:
    p = ck.Producer({"bootstrap.servers": brokers})
    bad = [
        {"kind": "event", "event_id": "wrong-type", "event_time": "2026-01-01T00:00:05Z", "key": "a",
         "x1": "not a number"},
        {"kind": "event", "event_id": "nested", "event_time": "2026-01-01T00:00:05Z", "key": "a", "x2": [1, 2]},
        {"kind": "event", "event_id": "infinite", "event_time": "2026-01-01T00:00:05Z", "key": "a", "x2": 1e999},
        {"kind": "label", "event_id": "e000001", "label": 7, "label_time": "2026-01-01T00:00:05Z"},
    ]
    for msg in bad:
        p.produce(topic, key=b"a", value=json.dumps(msg).encode())
    p.produce(topic, key=b"a", value=b"\xff not json")
    assert p.flush(10) == 0


def test_live_run_records_events_and_labels_and_their_replay_gives_the_same_predictions(mock_kafka, tmp_path):
    lake = str(tmp_path / "lake")
    events, labels = _frames(2_000, seed=3)
    sent = send(mock_kafka, "live", frame_messages(events, labels))
    _hostile(mock_kafka, "live")
    run_main(build_live_flow(lake, "linear,tree", brokers=mock_kafka, topic="live", run_id="live",
                             stop_at_end=True, batch_size=200, checkpoint_every=500))
    # the lake got every accepted event and label, once; the bad ones are dead letters only
    got_events, got_labels = read_table(lake, "events"), read_table(lake, "labels")
    assert sent == 4_000
    assert got_events.height == 2_000 and got_events["event_id"].is_unique().all()
    assert got_labels.height == 2_000 and got_labels["event_id"].is_unique().all()
    assert got_events["offset"].is_unique().all()
    # payload types: numbers are float64 (integers too), strings strings; the late field was merged in
    schema = got_events.schema
    assert schema["x1"] == pl.Float64 and schema["visits"] == pl.Float64 and schema["tier"] == pl.String
    by_id = got_events.sort("event_id")
    assert by_id["tier"].head(1_000).null_count() == 1_000 and by_id["tier"].tail(1_000).null_count() == 0
    assert by_id["x1"].to_list() == events.sort("event_id")["x1"].to_list()
    dead = read_table(lake, "dead_letters").filter(pl.col("run_id") == "live")
    reasons = sorted(dead["reason"].to_list())
    assert len(reasons) == 5, reasons
    assert any("wrong schema: field 'x1' must be a number" in r for r in reasons)
    assert any("wrong schema: field 'x2' must be a number (the lake's events column is double), got [1, 2]"
               in r for r in reasons)
    assert "non-finite value in field 'x2'" in reasons and "label must be 0 or 1, got 7" in reasons
    assert not {"wrong-type", "nested", "infinite"} & set(got_events["event_id"])

    # tomorrow: replay what landed, one shard per Kafka partition
    run_main(build_flow(lake, "linear,tree", run_id="replayed", shards=4, checkpoint_every=500, batch_size=300))
    live = _rows(lake, "predictions", "live", PRED_COLS)
    replayed = _rows(lake, "predictions", "replayed", PRED_COLS)
    assert live.height == 4_000 and live["shard"].n_unique() == 4
    assert live.equals(replayed), "the replay of the recorded stream gives bit-identical predictions"
    assert _rows(lake, "learn_log", "live", LEARN_COLS).equals(_rows(lake, "learn_log", "replayed", LEARN_COLS))

    # a second live run of the same topic records nothing again
    before = (table_version(lake, "events"), table_version(lake, "labels"))
    run_main(build_live_flow(lake, "linear", brokers=mock_kafka, topic="live", run_id="again", stop_at_end=True))
    assert (table_version(lake, "events"), table_version(lake, "labels")) == before
    assert read_table(lake, "predictions").filter(pl.col("run_id") == "again").height == 2_000


def _live_cmd(lake: str, brokers: str, rec: str, colocate: bool) -> list[str]:
    flow = (f"dataflows.online:build_live_flow(lake='{lake}', model='linear,tree', brokers='{brokers}', "
            f"topic='paced', run_id='crashy', batch_size=40, checkpoint_every=300, colocate={colocate}, "
            "flush_seconds=1.0)")  # commits every second: kills land mid-stream, with rows held by snapshots
    return [sys.executable, "-m", "bytewax.run", flow, "-r", rec, "-s", "1", "-b", "0"]


def _sealed_source_snapshots(rec) -> int:
    """How many Kafka partitions' snapshots in a recovery folder hold items sealed (``dataflows.sealed``)."""
    n = 0
    for db in rec.glob("*.sqlite3"):
        with sqlite3.connect(db) as conn:
            for (blob,) in conn.execute("SELECT ser_change FROM snaps WHERE ser_change IS NOT NULL"):
                integrity.check_plain(bytes(blob), what=str(db))
                state = pickle.loads(bytes(blob))  # plain data: checked above
                if isinstance(state, tuple) and isinstance(state[0], tuple):  # colocated: (source's, learner's)
                    state = state[0]
                n += isinstance(state, tuple) and len(state) == 2 and is_sealed_parts(state[1])
    return n


@pytest.mark.slow
@pytest.mark.parametrize("colocate", [False, True], ids=["keyed-step", "colocated"])
def test_kill_9_and_restart_from_the_stored_offsets_skips_nothing_and_doubles_nothing(
        mock_kafka, tmp_path, subprocess_env, colocate):
    lake, clean_lake = str(tmp_path / "lake"), str(tmp_path / "clean")
    rec = tmp_path / "rec"
    rec.mkdir()
    init_db_dir(rec, 1)
    events, labels = _frames(1_500, seed=11)
    feeder = threading.Thread(target=send, args=(mock_kafka, "paced", frame_messages(events, labels)),
                              kwargs={"rate": 300.0})
    feeder.start()  # a live stream: ~10 s of messages (still flowing at both kills on a loaded machine)
    rng = random.Random(7)
    kills, sealed = 0, []
    for _ in range(2):
        proc = subprocess.Popen(_live_cmd(lake, mock_kafka, str(rec), colocate), env=subprocess_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = table_version(lake, "predictions") or 0
        deadline = time.monotonic() + 30
        while (table_version(lake, "predictions") or 0) <= start + 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # until it has committed something of its own
        time.sleep(rng.uniform(0.0, 1.0))  # commits come every second (flush_seconds=1), snapshots too (-s 1)
        # (then, up to 6 s, until a snapshot holds recorded items not yet committed: the case a restart must
        # resume; a kill left to chance alone missed it in loaded CI runs, and so did a 3 s wait on a 5 s stream)
        held_by = time.monotonic() + 6
        while proc.poll() is None and time.monotonic() < held_by and not _sealed_source_snapshots(rec):
            time.sleep(0.1)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
        sealed.append(_sealed_source_snapshots(rec))
    feeder.join(timeout=60)
    assert kills == 2, "the test must really interrupt the dataflow"
    assert any(sealed), f"a restart resumes items a snapshot held in their sealed form (per kill: {sealed})"
    # the rest of the stream, resumed from the offsets in the recovery state
    run_main(build_live_flow(lake, "linear,tree", brokers=mock_kafka, topic="paced", run_id="crashy",
                             stop_at_end=True, batch_size=40, checkpoint_every=300, colocate=colocate),
             epoch_interval=timedelta(seconds=1), recovery_config=RecoveryConfig(str(rec)))
    # the same stream without interruption
    run_main(build_live_flow(clean_lake, "linear,tree", brokers=mock_kafka, topic="paced", run_id="crashy",
                             stop_at_end=True, checkpoint_every=300))
    for table, n in (("events", 1_500), ("labels", 1_500)):
        got, want = read_table(lake, table), read_table(clean_lake, table)
        assert got.height == n and got["event_id"].is_unique().all(), table
        assert got.sort("event_id").equals(want.sort("event_id").select(got.columns)), table
    crashy, clean = (_rows(lake, "predictions", "crashy", PRED_COLS),
                     _rows(clean_lake, "predictions", "crashy", PRED_COLS))
    assert crashy.height == 3_000, "every event has exactly one prediction per model"
    assert crashy.equals(clean), "the models after recovery are those of the uninterrupted run"
    assert _rows(lake, "learn_log", "crashy", LEARN_COLS).equals(_rows(clean_lake, "learn_log", "crashy",
                                                                      LEARN_COLS))


def test_payload_type_rule_follows_the_lake_and_rejects_what_does_not_fit():
    import math

    import pyarrow as pa

    from dataflows.kafka import PayloadTypes

    types = PayloadTypes(pa.schema([("event_id", pa.string()), ("month", pa.int64()), ("delay", pa.float64()),
                                    ("late", pa.bool_()), ("carrier", pa.string()), ("seen", pa.timestamp("us"))]))
    ok, why = types.normalize({"carrier": "UA", "month": 3.0, "delay": 7, "late": True, "new": 2, "flag": False})
    assert why is None and ok == {"month": 3, "delay": 7.0, "late": True, "carrier": "UA", "new": 2.0, "flag": False}
    assert [type(v) for v in ok.values()] == [int, float, bool, str, float, bool]
    assert types.normalize({"month": float("nan"), "delay": True, "note": None})[0] == {
        "month": None, "delay": 1.0, "note": None}
    for payload, reason in (
        ({"month": 2.5}, "field 'month' must be an integral number (the lake's events column is int64), got 2.5"),
        ({"delay": "7"}, "field 'delay' must be a number (the lake's events column is double), got '7'"),
        ({"carrier": 5}, "field 'carrier' must be a string (the lake's events column is string), got 5"),
        ({"late": 1}, "field 'late' must be a boolean (the lake's events column is bool), got 1"),
        ({"new": "x"}, "field 'new' must be a number (the lake's events column is double), got 'x'"),
        ({"seen": "2026-01-01"}, "field 'seen': the lake's events column is timestamp[us]; live messages fill "
                                 "number, bool and string columns only"),
        ({"tags": ["a"]}, "field 'tags' must be a number, string, bool or null, got list"),
    ):
        assert types.normalize(payload) == (None, reason)
    assert "tags" not in types.order  # a rejected message fixes no column type
    # a value another writer's column type cannot hold is stored as null, not a failed commit
    racing = PayloadTypes(pa.schema([("n", pa.float64())]))
    assert racing.column("n", [1.5, "x", None]).to_pylist() == [1.5, None, None]
    assert math.isnan(racing.column("n", [float("nan")]).to_pylist()[0])
