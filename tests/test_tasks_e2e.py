"""Regression and multiclass lakes through the whole dataflow: ingest, replay, live, reproduce.

Each lake is made by the command line (``python -m lake ingest``) and replayed by the
commands a user runs (``riverlake replay``, ``python -m dataflows.online``) with their
defaults; the tables must hold the task's types, the task's metrics and alarms on the
task's error stream, and ``lake reproduce`` must rebuild every score bit for bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from bytewax.testing import run_main

from dataflows.items import EVENT, LABEL, Batch
from dataflows.online import build_live_flow, run_replay
from dataflows.settings import RunSettings, SettingsValueError
from dataflows.validate import validate_batch
from lake.reproduce import reproduce
from lake.table import read_table

ROOT = Path(__file__).resolve().parents[1]
N = 4_000


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


class _Lake(str):
    """A lake's path that also names the run its fixture replayed with the defaults."""

    run_id: str

    def __new__(cls, path: str, run_id: str) -> _Lake:
        self = super().__new__(cls, path)
        self.run_id = run_id
        return self


def _of_run(lake: _Lake, table: str) -> pl.DataFrame:
    return read_table(lake, table).filter(pl.col("run_id") == lake.run_id)


@pytest.fixture(scope="module")
def regression_lake(tmp_path_factory) -> str:
    lake = str(tmp_path_factory.mktemp("tasks") / "friedman")
    out = _run("-m", "lake", "ingest", "--lake", lake, "--scenario", "friedman-drift", "--n", str(N))
    assert "task regression" in out.stdout + out.stderr
    run_id = _run("-m", "flows.cli", "replay", "--lake", lake).stdout.split()[-1]  # riverlake replay, every default
    return _Lake(lake, run_id)


@pytest.fixture(scope="module")
def multiclass_lake(tmp_path_factory) -> str:
    lake = str(tmp_path_factory.mktemp("tasks") / "rbf")
    out = _run("-m", "lake", "ingest", "--lake", lake, "--scenario", "rbf-drift", "--n", str(N))
    assert "task multiclass" in out.stdout + out.stderr
    run_id = _run("-m", "dataflows.online", "--lake", lake, "--no-recovery").stdout.split()[-1]
    return _Lake(lake, run_id)


def _mean_by_model(metrics: pl.DataFrame, total: str) -> dict[str, float]:
    """A metric over the whole run per model, from the windows' sums (``total`` / ``n``)."""
    rows = metrics.group_by("model").agg((pl.col(total).sum() / pl.col("n").sum()).alias("v"))
    return dict(rows.iter_rows())


def test_a_regression_replay_writes_values_metrics_and_alarms_on_the_absolute_error(regression_lake):
    preds = _of_run(regression_lake, "predictions")
    assert preds.height == N and preds.schema["prediction"] == pl.Float64
    assert (preds["prediction"] == preds["score"]).all()  # the score of a regression is its value
    assert preds["prediction"].n_unique() > N // 2  # values, not classes
    learned = _of_run(regression_lake, "learn_log")
    assert learned.height == N and learned.schema["label"] == pl.Float64
    assert learned["label"].n_unique() > N // 2
    metrics = _of_run(regression_lake, "metrics")
    assert {"mae", "rmse", "r2", "cum_mae"} <= set(metrics.columns) and metrics["n"].sum() == N
    assert 0 < _mean_by_model(metrics, "sum_abs_error")["linear"] < 3.5
    # FriedmanDrift's drifts show in the absolute error: ADWIN alarms after the first drift (at N/3)
    alarms = _of_run(regression_lake, "drift_events")
    on_errors = alarms.filter(pl.col("signal") == "error")
    assert on_errors.height >= 1 and on_errors["position"].max() > N // 3


def test_a_multiclass_replay_writes_classes_probabilities_and_task_metrics(multiclass_lake):
    preds = _of_run(multiclass_lake, "predictions")
    assert preds.height == N and preds.schema["prediction"] == pl.String
    classes = set(read_table(multiclass_lake, "labels")["label"])
    assert set(preds["prediction"]) <= classes | {""} and len(set(preds["prediction"])) > 1
    probs = preds.tail(1)["probabilities"].to_list()[0]
    assert set(probs) == classes and abs(sum(probs.values()) - 1.0) < 1e-9
    best = preds.tail(1).row(0, named=True)
    assert best["score"] == max(probs.values()) and probs[best["prediction"]] == best["score"]
    assert _of_run(multiclass_lake, "learn_log").schema["label"] == pl.String
    metrics = _of_run(multiclass_lake, "metrics")
    assert {"accuracy", "macro_f1", "log_loss"} <= set(metrics.columns) and metrics["n"].sum() == N
    alarms = _of_run(multiclass_lake, "drift_events").filter(pl.col("signal") == "error")
    assert alarms.height >= 1  # on the 0/1 error of the predicted class


@pytest.mark.parametrize("which", ["regression_lake", "multiclass_lake"])
def test_lake_reproduce_rebuilds_every_task_prediction_bit_for_bit(which, request):
    lake = request.getfixturevalue(which)
    ids = _of_run(lake, "predictions")["event_id"].unique().sort().to_list()
    sample = ids[:: len(ids) // 25]
    done = [r for e in sample for r in reproduce(lake, e, run_id=lake.run_id)]
    assert len(done) == len(sample) and all(r.bit_equal for r in done)
    assert any(r.learned > 100 for r in done)
    out = _run("-m", "lake", "reproduce", "--lake", lake, "--event-id", sample[-1], "--run-id", lake.run_id)
    assert "bit-equal      yes" in out.stdout


def test_the_default_models_beat_the_naive_baselines_through_the_replay(regression_lake, multiclass_lake):
    run_replay(regression_lake, "linear,mean,persistence", recovery=False, run_id="vs-baselines")
    metrics = read_table(regression_lake, "metrics").filter(pl.col("run_id") == "vs-baselines")
    mae = _mean_by_model(metrics, "sum_abs_error")
    assert mae["linear"] < 0.8 * min(mae["mean"], mae["persistence"]), mae
    run_replay(multiclass_lake, "linear,majority", recovery=False, run_id="vs-majority")
    metrics = read_table(multiclass_lake, "metrics").filter(pl.col("run_id") == "vs-majority")
    accuracy, loss = _mean_by_model(metrics, "n_correct"), _mean_by_model(metrics, "sum_log_loss")
    assert accuracy["linear"] > accuracy["majority"] + 0.1 and loss["linear"] < loss["majority"], (accuracy, loss)


def test_a_drift_action_retrains_a_regressor_on_its_recent_labels(regression_lake):
    run_replay(regression_lake, "linear", recovery=False, run_id="retrain", drift_action="retrain",
               action_window=300)
    actions = read_table(regression_lake, "drift_actions").filter(pl.col("run_id") == "retrain")
    assert actions.height >= 1 and (actions["trained_on"] == 300).all()
    e = read_table(regression_lake, "predictions").filter(
        (pl.col("run_id") == "retrain") & (pl.col("model_version") == actions["model_version"][0]))["event_id"][5]
    assert all(r.bit_equal for r in reproduce(regression_lake, e, run_id="retrain"))


def test_labels_that_are_not_the_tasks_are_dead_letters():
    items = [(0, EVENT, "e1", 10, "k", {"x": 1.0}), (1, LABEL, "e1", "late", 20, "k"),
             (2, LABEL, "e2", 2.5, 20, "k"), (3, LABEL, "e3", float("nan"), 20, "k")]
    out = validate_batch(Batch(0, list(items)), task="regression")
    assert [it[0] for it in out.items] == [0, 2]
    assert [d[2] for d in out.dead] == ["label must be a finite number, got 'late'",
                                       "label must be a finite number, got nan"]
    out = validate_batch(Batch(0, [(1, LABEL, "e1", "late", 20, "k"), (2, LABEL, "e2", " ", 20, "k")]),
                         task="multiclass")
    assert [it[0] for it in out.items] == [1] and out.dead[0][2] == "label must be a class, got ' '"
    assert validate_batch(Batch(0, [(1, LABEL, "e1", 2.5, 20, "k")])).dead[0][2] == "label must be 0 or 1, got 2.5"


def test_settings_refuse_a_task_other_than_the_lakes_and_ddm_on_a_regression(regression_lake):
    with pytest.raises(SettingsValueError, match="drift: detector 'ddm' takes 0/1 errors"):
        RunSettings.replay(task="regression", drift="ddm")
    with pytest.raises(SettingsValueError, match="per-key models serve classes"):
        RunSettings.replay(task="regression", per_key=True)
    with pytest.raises(SettingsValueError, match="unknown model 'naive-bayes'; known for regression"):
        RunSettings.replay(task="regression", model="naive-bayes")
    settings = RunSettings.replay(lake=regression_lake, task="multiclass")
    with pytest.raises(SettingsValueError, match="task 'multiclass' is not the lake's: .* holds a regression task"):
        settings.with_lake_task()
    assert RunSettings.replay(lake=regression_lake).with_lake_task().models.task == "regression"
    # a baseline of another task: known, but not for this lake's task
    with pytest.raises(SettingsValueError, match="unknown model 'majority'; known for regression"):
        RunSettings.replay(lake=regression_lake, model="majority").with_lake_task()
    # riverlake replay: one line, exit status 2, before any work
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for option in (["--drift", "ddm"], ["--task", "binary"]):
        done = subprocess.run([sys.executable, "-m", "flows.cli", "replay", "--lake", regression_lake, *option],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "regression" in done.stderr


def test_a_live_regression_run_records_float_labels_and_dead_letters_others(tmp_path):
    from dataflows.produce import messages, send
    from tests.test_kafka import mock_cluster

    lake = str(tmp_path / "live")
    with mock_cluster() as brokers:
        pairs = list(messages("friedman-drift", n=600))
        pairs.append(("k0", {"kind": "label", "event_id": pairs[0][1]["event_id"], "label": "soon",
                             "label_time": "2030-01-01T00:00:00+00:00"}))
        send(brokers, "reg", pairs)
        run_main(build_live_flow(lake, "linear,mean", brokers=brokers, topic="reg", task="regression",
                                 stop_at_end=True, flush_seconds=0.5))
    labels = read_table(lake, "labels")
    assert labels.height == 600 and labels.schema["label"] == pl.Float64
    preds = read_table(lake, "predictions")
    assert preds.height == 1_200 and preds.schema["prediction"] == pl.Float64
    dead = read_table(lake, "dead_letters")
    assert dead["reason"].to_list() == ["label must be a finite number, got 'soon'"]
    assert read_table(lake, "learn_log").height == 1_200
    assert read_table(lake, "metrics")["mae"].drop_nulls().len() > 0


def test_versioning_a_regression_checkpoint_logs_the_tasks_metrics(regression_lake, tmp_path):
    from mlflow import MlflowClient

    from flows.versioning import sync_lake

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    done = sync_lake(regression_lake, uri)
    linear = [r for r in done["registered"] if r["registered_model"].endswith("-linear")]
    assert linear
    logged = MlflowClient(uri).get_run(linear[0]["mlflow_run_id"]).data.metrics
    assert {"mae", "rmse", "cum_mae"} <= set(logged) and "accuracy" not in logged


def test_kill_9_and_resume_of_a_multiclass_run_gives_the_uninterrupted_rows(multiclass_lake):
    import signal
    import time

    settings = {"checkpoint_every": 500, "batch_size": 150}
    run_replay(multiclass_lake, "linear,majority", recovery=False, run_id="mc-clean", **settings)
    cmd = [sys.executable, "-m", "dataflows.online", "--lake", multiclass_lake, "--model", "linear,majority",
           "--run-id", "mc-crashy", "--rate", "1500", "--batch-size", "150", "--snapshot-s", "0.4",
           "--checkpoint-every", "500"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(4.0)  # imports 1-2.5 s, then 8,000 items paced at 1,500 a second
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert killed, "the test must really interrupt the dataflow"
    _run(*cmd[1:])
    cols = ["event_id", "model", "seq", "score", "prediction", "probabilities", "model_version"]

    def rows(run_id: str) -> pl.DataFrame:
        return read_table(multiclass_lake, "predictions").filter(pl.col("run_id") == run_id).select(cols).sort(
            "event_id", "model")

    clean, resumed = rows("mc-clean"), rows("mc-crashy")
    assert resumed.height == 2 * N and resumed.select("event_id", "model").is_unique().all()
    assert clean.equals(resumed)
