"""The replay dataflow end to end on real Delta tables."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest
from bytewax.testing import cluster_main, run_main

from dataflows.online import build_flow, defaults_from_env, parse_duration_us
from lake.table import append, read_table

PRED_COLS = ["seq", "event_id", "event_time", "key", "model", "role", "model_version", "score",
             "prediction", "features"]


def _preds(lake, run_id):
    return (read_table(lake, "predictions").filter(pl.col("run_id") == run_id)
            .sort(["shard", "seq", "model"]).select(PRED_COLS))


def test_replay_writes_every_table_and_the_accounting_holds(synthetic_lake):
    # one hostile event and a label for an event that does not exist
    append(synthetic_lake, "events", pl.DataFrame({
        "event_id": ["bad"], "event_time": pl.Series([0], dtype=pl.Datetime("us", "UTC")),
        "key": ["a"], "offset": [10_000], "x1": [float("inf")]}), writer_id="hostile", position=1)
    append(synthetic_lake, "labels", pl.DataFrame({
        "event_id": ["ghost"], "label": [1],
        "label_time": pl.Series([5_000_000], dtype=pl.Datetime("us", "UTC"))}), writer_id="hostile", position=1)
    run_main(build_flow(lake=synthetic_lake, model="linear,tree", run_id="r1", window="10m", grace="1m",
                        checkpoint_every=500, batch_size=256))
    events = read_table(synthetic_lake, "events")
    labels = read_table(synthetic_lake, "labels")
    preds = read_table(synthetic_lake, "predictions")
    learns = read_table(synthetic_lake, "learn_log")
    dead = read_table(synthetic_lake, "dead_letters")
    metrics = read_table(synthetic_lake, "metrics")
    ckpts = read_table(synthetic_lake, "checkpoints")

    dead_events = dead.filter(pl.col("raw").str.contains('"kind": "event"'))
    for model in ("linear", "tree"):
        mine = preds.filter(pl.col("model") == model)
        assert mine["event_id"].n_unique() == mine.height
        assert mine.height + dead_events.height == events.height  # events in = predicted + dead-lettered
        assert learns.filter(pl.col("model") == model).height == labels.height - 1  # all but the ghost
        m = metrics.filter(pl.col("model") == model)
        assert m["n"].sum() + m["n_late_labels"].sum() == labels.height - 1
        assert m["cum_n"].max() == labels.height - 1
    assert set(dead["reason"]) == {"non-finite value in field 'x1'", "label for an unknown event"}
    assert preds.filter(pl.col("role") == "champion")["model"].unique().to_list() == ["linear"]
    # no label is learned before it arrived, and every learn follows its prediction
    joined = learns.join(preds.select("event_id", "model", pl.col("seq").alias("pred_seq")), on=["event_id", "model"])
    assert (joined["seq"] > joined["pred_seq"]).all()
    assert (learns["label_time"] >= learns["event_time"]).all()
    # checkpoints every 500 learns plus the initial and the final one
    linear_ckpts = ckpts.filter(pl.col("model") == "linear").sort("n_learned")["n_learned"].to_list()
    assert linear_ckpts == [0, 500, 1000, 1500, 2000, 2500, 3000]
    assert set(preds["model_version"]) <= set(ckpts["checkpoint_id"])
    # the model learned: the last windows beat the first
    acc = metrics.filter(pl.col("model") == "linear").sort("window_start")["accuracy"].to_list()
    assert acc[-1] > 0.8


def test_replay_is_deterministic_and_idempotent(synthetic_lake):
    run_main(build_flow(lake=synthetic_lake, model="linear,tree", run_id="a", batch_size=300))
    run_main(build_flow(lake=synthetic_lake, model="linear,tree", run_id="b", batch_size=700))
    a, b = _preds(synthetic_lake, "a"), _preds(synthetic_lake, "b")
    assert a.height == 6_000
    assert a.equals(b)  # bit-identical, scores and features included, whatever the batch size
    # the same run again writes nothing new
    version = read_table(synthetic_lake, "predictions").height
    run_main(build_flow(lake=synthetic_lake, model="linear,tree", run_id="a", batch_size=300))
    assert read_table(synthetic_lake, "predictions").height == version


def test_replay_honours_the_pinned_version(synthetic_lake):
    more = read_table(synthetic_lake, "events").head(5).with_columns(
        (pl.col("event_id") + "-late"), pl.col("offset") + 100_000)
    append(synthetic_lake, "events", more, writer_id="later", position=1)
    run_main(build_flow(lake=synthetic_lake, run_id="pinned", events_version=0, labels_version=0))
    assert _preds(synthetic_lake, "pinned").height == 3_000


@pytest.mark.cluster
def test_two_workers_give_the_same_predictions_as_one(synthetic_lake):
    run_main(build_flow(lake=synthetic_lake, run_id="one", shards=2))
    cluster_main(build_flow(lake=synthetic_lake, run_id="two", shards=2), [], 0, worker_count_per_proc=2)
    one, two = _preds(synthetic_lake, "one"), _preds(synthetic_lake, "two")
    assert one.height == 3_000
    assert one.equals(two)
    shards = read_table(synthetic_lake, "predictions").filter(pl.col("run_id") == "two")["shard"]
    assert sorted(shards.unique().to_list()) == [0, 1]


def test_bytewax_run_entry_point_reads_settings_from_env(synthetic_lake, subprocess_env):
    env = {**subprocess_env, "RIVERLAKE_LAKE": synthetic_lake, "RIVERLAKE_MODELS": "naive-bayes",
           "RIVERLAKE_RUN_ID": "from-env"}
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.online:flow"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    preds = _preds(synthetic_lake, "from-env")
    assert preds.height == 3_000 and preds["model"].unique().to_list() == ["naive-bayes"]
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", f"dataflows.online:build_flow(lake='{synthetic_lake}', "
         "model='linear', run_id='explicit')"], env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _preds(synthetic_lake, "explicit").height == 3_000


def test_settings_are_validated():
    assert parse_duration_us("1h") == 3_600_000_000
    with pytest.raises(ValueError, match="duration must look like"):
        parse_duration_us("soon")
    with pytest.raises(ValueError, match="RIVERLAKE_SHARDS must be int, got 'two'"):
        defaults_from_env({"RIVERLAKE_SHARDS": "two"})
    assert defaults_from_env({})["lake"] == "lakehouse"


@pytest.mark.parametrize("balance", [False, True], ids=["crc32", "balanced"])
def test_each_shard_plans_its_own_keys_and_shard_0_the_labels_of_unknown_events(tmp_path, balance):
    from dataflows.items import EVENT, LABEL
    from dataflows.replay import ReplayPlan, balanced_shards, pin_versions, shard_of
    from tests.synthetic import synthetic_frames

    lake = str(tmp_path / "lake")
    events, labels = synthetic_frames(2_000, seed=3, keys="abcdefghijk", max_delay_s=200)
    orphan = pl.DataFrame({"event_id": ["nope"], "label": [1], "label_time": [labels["label_time"][5]]})
    append(lake, "events", events, writer_id="s", position=1)
    append(lake, "labels", pl.concat([labels, orphan.with_columns(pl.col("label_time").dt.cast_time_unit("us"))]),
           writer_id="s", position=1)
    pin = pin_versions(lake)
    whole = ReplayPlan(lake, pin=pin)
    everything = whole.batch(0, len(whole)).items
    parts = [ReplayPlan(lake, pin=pin, shard=s, shards=3, balance=balance) for s in range(3)]
    placed = balanced_shards(dict(events["key"].value_counts().iter_rows()), 3)
    place = placed.__getitem__ if balance else (lambda k: shard_of(k, 3))
    seen = []
    for s, plan in enumerate(parts):
        items = plan.batch(0, len(plan)).items
        assert all(place(it[4]) == s for it in items if it[1] == EVENT)
        assert all(it[5] is None or place(it[5]) == s for it in items if it[1] == LABEL)
        assert ("nope" in {it[2] for it in items if it[1] == LABEL}) == (s == 0)
        # a shard's items keep the order they have in the whole history
        order = [(it[1], it[2]) for it in items]
        assert order == [(it[1], it[2]) for it in everything if (it[1], it[2]) in set(order)]
        seen += order
    assert sorted(seen) == sorted((it[1], it[2]) for it in everything)
    sizes = sorted(plan.n_events for plan in parts)
    if balance:  # even shards: largest keys first, each on the least loaded shard
        assert sizes[-1] - sizes[0] <= max(events["key"].value_counts()["count"])
