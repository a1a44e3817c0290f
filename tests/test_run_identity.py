"""A run id means one set of inputs and settings: reuse with others is refused before any work."""

from __future__ import annotations

import shutil
from datetime import timedelta

import polars as pl
import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main

from dataflows.online import build_flow, build_live_flow, replay_job, run_replay
from dataflows.produce import frame_messages, send
from flows.cli import replay_main as main
from lake.errors import RunIdentityError
from lake.runs import recorded_run
from lake.table import append, read_table, table_version
from tests.synthetic import synthetic_frames
from tests.test_kafka import mock_cluster


def _grow(lake: str) -> None:
    """Append 500 new events and their labels, as a live recording or an ingest would."""
    events, labels = synthetic_frames(500, seed=9)
    events = events.with_columns(event_id="late-" + pl.col("event_id"), offset=pl.col("offset") + 10_000_000)
    labels = labels.with_columns(event_id="late-" + pl.col("event_id"))
    append(lake, "events", events, writer_id="grow", position=1)
    append(lake, "labels", labels, writer_id="grow", position=1)


def test_an_explicit_run_id_reused_after_the_lake_grew_is_refused_before_any_work(synthetic_lake, capsys):
    # Before: the second run resumed by seq over a different event order, 496 events predicted
    # twice and 503 never, without a word.
    assert main(["--lake", synthetic_lake, "--run-id", "nightly", "--no-recovery"]) == 0
    first = read_table(synthetic_lake, "predictions").filter(pl.col("run_id") == "nightly")
    assert first.height == 3_000
    _grow(synthetic_lake)
    before = table_version(synthetic_lake, "predictions")
    capsys.readouterr()
    assert main(["--lake", synthetic_lake, "--run-id", "nightly", "--no-recovery"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, "one line"
    assert err.startswith("error: run 'nightly' is recorded in ") and "events_version 0 -> 1" in err, err
    assert "labels_version 0 -> 1" in err
    assert table_version(synthetic_lake, "predictions") == before, "refused before any work"
    # Started with the recorded inputs, it resumes and adds nothing.
    assert main(["--lake", synthetic_lake, "--run-id", "nightly", "--no-recovery",
                 "--events-version", "0", "--labels-version", "0"]) == 0
    again = read_table(synthetic_lake, "predictions").filter(pl.col("run_id") == "nightly")
    assert again.height == 3_000 and again["event_id"].is_unique().all()


def test_a_reused_run_id_with_other_settings_names_them(synthetic_lake):
    run_replay(synthetic_lake, "linear", run_id="tuned", recovery=False, batch_size=50)
    with pytest.raises(RunIdentityError, match=r"run 'tuned' .*batch_size 50 -> 3000.*seed 42 -> 7"):
        replay_job(synthetic_lake, "linear", run_id="tuned", batch_size=3_000, seed=7)
    row = recorded_run(synthetic_lake, "tuned")
    assert row is not None and row["batch_size"] == 50 and row["events_version"] == 0
    assert row["lake"] == str(synthetic_lake) and row["started_at"].tzinfo is not None


def test_the_derived_run_id_differs_with_the_lake_and_the_batch_size(synthetic_lake, tmp_path):
    # Before: two lakes shared run ids (half of lake B's checkpoints "already synced" to MLflow),
    # and batch 50 and 3,000 (which expire labels differently) shared one.
    other = str(tmp_path / "other-lake")
    shutil.copytree(synthetic_lake, other)
    a = replay_job(synthetic_lake, "linear", batch_size=50).run_id
    assert replay_job(synthetic_lake, "linear", batch_size=50).run_id == a, "same inputs, same id"
    assert replay_job(synthetic_lake, "linear", batch_size=3_000).run_id != a
    assert replay_job(other, "linear", batch_size=50).run_id != a


def test_a_recovery_snapshot_of_other_settings_is_refused(synthetic_lake, tmp_path):
    rec = tmp_path / "rec"
    rec.mkdir()
    init_db_dir(rec, 1)
    config = RecoveryConfig(str(rec))
    run_main(build_flow(synthetic_lake, "linear", run_id="snap", checkpoint_every=500),
             epoch_interval=timedelta(seconds=0.2), recovery_config=config)
    with pytest.raises(Exception) as refused:  # noqa: PT011 - Bytewax wraps the step's error
        run_main(build_flow(synthetic_lake, "linear", run_id="other", checkpoint_every=100),
                 epoch_interval=timedelta(seconds=0.2), recovery_config=config)
    text = "".join(str(e) for e in (refused.value, refused.value.__cause__) if e is not None)
    assert "recovery snapshot was taken by run 'snap' with other settings" in text, text
    assert read_table(synthetic_lake, "predictions").filter(pl.col("run_id") == "other").height == 0


def test_two_topics_into_one_lake_are_each_predicted(tmp_path):
    # Before: both live runs were "live" with Kafka offsets as positions: the second topic got
    # 0 of its predictions, its offsets already "committed" by the first.
    lake = str(tmp_path / "lake")
    with mock_cluster() as brokers:
        for topic, seed in (("clicks", 1), ("orders", 2)):
            events, labels = synthetic_frames(200, seed=seed)
            events = events.with_columns(event_id=f"{topic}-" + pl.col("event_id"))
            labels = labels.with_columns(event_id=f"{topic}-" + pl.col("event_id"))
            send(brokers, topic, frame_messages(events, labels))
            run_main(build_live_flow(lake, "linear", brokers=brokers, topic=topic, stop_at_end=True,
                                     record=False, flush_seconds=0.5))
        clicks = read_table(lake, "runs").filter(pl.col("topic") == "clicks")["run_id"].item()
        with pytest.raises(RunIdentityError, match=r"topic 'clicks' -> 'orders'"):  # an explicit id reused
            build_live_flow(lake, "linear", brokers=brokers, topic="orders", run_id=clicks, stop_at_end=True)
    preds = read_table(lake, "predictions")
    for topic in ("clicks", "orders"):
        mine = preds.filter(pl.col("event_id").str.starts_with(f"{topic}-"))
        assert mine.height == 200 and mine["event_id"].is_unique().all(), topic
    runs = read_table(lake, "runs")
    assert sorted(runs["topic"]) == ["clicks", "orders"] and runs["run_id"].n_unique() == 2
