"""Keyed state across Bytewax workers and processes: the same tables as one worker, one lake, no duplicates.

The sharded global model mode: ``shards`` model copies, each key served by the copy
of its shard (CRC-32 of the key), shards spread over the workers. Runs with
``python -m bytewax.run`` as a user would: ``-w 2`` (two workers in one process)
and two processes (``-i 0``/``-i 1`` with the same ``-a`` list) on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import polars as pl
import pytest
from bytewax.testing import cluster_main, run_main

from dataflows.online import build_flow, build_live_flow
from dataflows.produce import frame_messages, send
from dataflows.replay import shard_of
from lake.table import read_table
from tests.processes import run_processes
from tests.synthetic import synthetic_frames
from tests.test_kafka import mock_cluster

pytestmark = pytest.mark.cluster

SHARDS = 4
TABLES = {
    "predictions": (["shard", "seq", "model"], ["seq", "event_id", "event_time", "key", "model", "role",
                                                 "model_version", "score", "prediction", "features"]),
    "learn_log": (["shard", "seq", "model"], ["seq", "event_id", "model", "label", "score", "learn_order",
                                               "model_version"]),
    "metrics": (["shard", "model", "window_start"], ["seq", "model", "window_start", "n", "n_correct",
                                                      "sum_log_loss", "cum_n", "cum_log_loss"]),
    # Model bytes (sha256) are compared for the linear model only: a Hoeffding tree's leaves hold
    # river.proba.Gaussian(seed=None) estimators, whose unseeded random.Random (used only for
    # sampling) pickles differently in every run.
    "checkpoints": (["shard", "model", "n_learned"], ["seq", "checkpoint_id", "n_learned", "sha"]),
}


def _flow(lake: str, run_id: str, colocate: bool = False) -> str:
    return (f"dataflows.online:build_flow(lake='{lake}', model='linear,tree', run_id='{run_id}', "
            f"shards={SHARDS}, checkpoint_every=500, batch_size=250, colocate={colocate})")


def _table(lake: str, table: str, run_id: str) -> pl.DataFrame:
    order, cols = TABLES[table]
    frame = read_table(lake, table).filter(pl.col("run_id") == run_id)
    if table == "checkpoints":
        frame = frame.with_columns(sha=pl.when(pl.col("model") == "linear").then(pl.col("sha256")))
    return frame.sort(order).select(["shard", *cols])


def _assert_same_tables(lake: str, run_id: str) -> None:
    for table in TABLES:
        one, many = _table(lake, table, "one"), _table(lake, table, run_id)
        assert one.height > 0, table
        assert many.equals(one), f"{table} of {run_id} differs from one worker's"
    preds = _table(lake, "predictions", run_id)
    assert preds.height == 6_000 and preds.select("event_id", "model").is_unique().all()
    # a shard's model serves its keys
    keys = preds.select("key", "shard").unique()
    assert keys["key"].is_unique().all()
    assert all(shard_of(k, SHARDS) == s for k, s in keys.iter_rows())
    assert preds["shard"].n_unique() >= 3


@pytest.fixture
def lake_with_one_worker_run(synthetic_lake: str) -> str:
    run_main(build_flow(lake=synthetic_lake, model="linear,tree", run_id="one", shards=SHARDS,
                        checkpoint_every=500, batch_size=250))
    return synthetic_lake


def test_two_workers_in_one_process_write_the_tables_of_one_worker(lake_with_one_worker_run, subprocess_env):
    lake = lake_with_one_worker_run
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", _flow(lake, "w2"), "-w", "2"],
                          env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_tables(lake, "w2")


@pytest.mark.parametrize("colocate", [False, True], ids=["keyed-step", "colocated"])
def test_two_processes_write_the_tables_of_one_worker(lake_with_one_worker_run, subprocess_env, tmp_path,
                                                      colocate):
    lake = lake_with_one_worker_run
    run_id = "p2c" if colocate else "p2"
    # Each process logs the shards its source partitions read and its sink partitions wrote.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import logging\nlogging.basicConfig(level=logging.WARNING, format='%(name)s: %(message)s')\n"
        "for name in ('dataflows.sources', 'dataflows.sinks', 'dataflows.colocated'):\n"
        "    logging.getLogger(name).setLevel(logging.INFO)\n")
    env = {**subprocess_env, "PYTHONPATH": f"{hook}{os.pathsep}{subprocess_env['PYTHONPATH']}"}
    logs = run_processes(_flow(lake, run_id, colocate), env)
    _assert_same_tables(lake, run_id)
    # the work was split: each process read some shards and wrote some, none twice
    read = [set(re.findall(r"dataflows.sources: shard (\d+): replaying", log)) for log in logs]
    wrote = [set(re.findall(r"dataflows.sinks: predictions shard (\d+):", log)) for log in logs]
    assert all(read) and not read[0] & read[1] and len(read[0] | read[1]) == SHARDS, read
    assert all(wrote) and not wrote[0] & wrote[1], wrote
    if colocate:  # each process learned the shards it read (those with items) and wrote them: nothing crossed
        learned = [set(re.findall(r"dataflows.colocated: shard (\d+): predict/learn", log)) for log in logs]
        assert learned == wrote and all(mine <= r for mine, r in zip(learned, read, strict=True)), (
            read, learned, wrote)


@pytest.mark.parametrize("colocate", [False, True], ids=["keyed-step", "colocated"])
def test_per_key_models_on_two_processes_predict_as_one_worker_with_one_shard(synthetic_lake, subprocess_env,
                                                                              colocate):
    """One model per key: the keyed models' tables do not depend on shards, workers or processes."""
    settings = "model='linear,tree', checkpoint_every=500, batch_size=250, per_key=True"
    run_main(build_flow(lake=synthetic_lake, run_id="k-one", shards=1, model="linear,tree", checkpoint_every=500,
                        batch_size=250, per_key=True))
    run_processes(f"dataflows.online:build_flow(lake='{synthetic_lake}', run_id='k-two', shards={SHARDS}, "
                   f"colocate={colocate}, {settings})", subprocess_env)

    def tables(run_id: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        preds = read_table(synthetic_lake, "predictions").filter(pl.col("run_id") == run_id)
        learns = read_table(synthetic_lake, "learn_log").filter(pl.col("run_id") == run_id)
        return (preds.select("event_id", "key", "model", "score", "prediction", "features").sort("event_id", "model"),
                learns.select("event_id", "model", "label", "score").sort("event_id", "model"))

    (p1, l1), (p2, l2) = tables("k-one"), tables("k-two")
    assert p1.height == 6_000 and p1.equals(p2) and l1.height > 5_000 and l1.equals(l2)
    spread = read_table(synthetic_lake, "predictions").filter(pl.col("run_id") == "k-two")["shard"].n_unique()
    assert spread >= 3  # the keys were served by several shards, on two processes


@pytest.mark.parametrize("colocate", [False, True], ids=["keyed-step", "colocated"])
def test_two_workers_live_from_kafka_record_one_lake_and_predict_as_one_worker(tmp_path, colocate):
    events, labels = synthetic_frames(1_500, seed=5, keys="abcdefgh")
    warm_id = pl.concat_str(pl.lit("w"), "event_id").alias("event_id")
    warm_events, warm_labels = (f.with_columns(warm_id) for f in synthetic_frames(200, seed=6))
    lakes = {n: str(tmp_path / f"lake-{n}") for n in (1, 2)}
    with mock_cluster() as brokers:
        send(brokers, "warmup", frame_messages(warm_events, warm_labels))
        send(brokers, "events", frame_messages(events, labels))
        for workers, lake in lakes.items():
            # The lake's tables exist, as after any first run: workers that create one table at the
            # same moment can lose the race (a DeltaSink limit, outside this test).
            run_main(build_live_flow(lake, "linear", brokers=brokers, topic="warmup", run_id="warmup",
                                     stop_at_end=True))
            flow = build_live_flow(lake, "linear", brokers=brokers, topic="events", run_id="live",
                                   stop_at_end=True, batch_size=100, colocate=colocate and workers == 2)
            cluster_main(flow, [], 0, worker_count_per_proc=workers)
    for table in ("events", "labels"):
        one, two = (read_table(lakes[n], table).filter(~pl.col("event_id").str.starts_with("w")).sort("event_id")
                    for n in (1, 2))
        assert two.height == 1_500 and two["event_id"].is_unique().all(), table
        assert two.equals(one.select(two.columns)), table
    one, two = (read_table(lakes[n], "predictions").filter(pl.col("run_id") == "live").sort("event_id").select(
        "shard", "event_id", "model_version", "score", "features") for n in (1, 2))
    assert two.height == 1_500 and two.equals(one)


def test_scaling_benchmark_replays_the_same_history_at_each_count(synthetic_lake, tmp_path, capsys):
    from dataflows.bench.scaling import main

    out = tmp_path / "scaling.json"
    assert main(["--lake", synthetic_lake, "--counts", "1,2", "--mode", "workers", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["events"] == 3_000 and result["shards"] == 2
    assert [r["n"] for r in result["runs"]] == [1, 2] and result["runs"][0]["efficiency"] == 1.0
    assert all(r["events_per_s"] > 0 and r["commits"] > 0 for r in result["runs"])
    assert result["machine"]["cores"] >= 1 and result["plan_s_per_shard"] > 0
    # how evenly the events fall on 1, 2, 4, 8 processes, from the lake's keys
    ceilings = {c["n"]: c for c in result["placement"]}
    assert sorted(ceilings) == [1, 2, 4, 8] and ceilings[1]["ceiling"] == 1.0
    assert all(0 < c["ceiling"] <= 1.0 and c["busiest_share"] >= 1 / c["n"] for c in ceilings.values())
    printed = capsys.readouterr().out
    assert "efficiency" in printed and "cores" in printed
