"""Champion vs challengers: the rule, the registry aliases, the lake record, and rollback."""

from __future__ import annotations

import doctest
import math
import pickle
import shutil
import socket
from pathlib import Path

import mlflow
import pandas as pd
import polars as pl
import pytest
from bytewax.testing import run_main

import flows.promotion
from dataflows.control import PromotionControl
from dataflows.models import score_one
from dataflows.online import build_flow
from flows.promotion import WindowScores, decide, promote, rollback, rollback_decision, window_scores
from flows.promotion import main as promotion_main
from flows.registry import client_for, find_version, using
from lake.errors import LakeError
from lake.table import exists, read_table
from tests.synthetic import make_lake


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> str:
    """3,000 synthetic events through tree (champion) and linear (challenger; it learns this concept better)."""
    lake = str(tmp_path_factory.mktemp("promotion") / "lake")
    make_lake(lake, n=3_000, seed=7)
    run_main(build_flow(lake=lake, model="tree,linear", run_id="r1", checkpoint_every=1_000, batch_size=500))
    return lake


@pytest.fixture
def lake(replayed: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    dest = str(tmp_path / "lake")
    shutil.copytree(replayed, dest)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return dest


def test_window_scores_compare_models_on_the_same_recent_labels(replayed):
    log = read_table(replayed, "learn_log")
    last = (log.filter(pl.col("model") == "tree").sort(["label_time", "shard", "seq"]).tail(1_000))
    scores = window_scores(replayed, "r1", window=1_000, metric="log_loss")
    assert scores.n_labels == 1_000
    for model in ("tree", "linear"):
        rows = log.filter(pl.col("model") == model).join(last.select("event_id"), on="event_id", how="semi")
        expected = sum(-math.log(max(s if y else 1 - s, 1e-15)) for s, y in zip(rows["score"], rows["label"],
                                                                                  strict=True)) / rows.height
        assert scores.values[model] == pytest.approx(expected, rel=1e-12)
    assert scores.values["linear"] < scores.values["tree"]
    acc = window_scores(replayed, "r1", window=1_000, metric="accuracy", threshold=0.5)
    rows = log.filter(pl.col("model") == "linear").join(last.select("event_id"), on="event_id", how="semi")
    assert acc.values["linear"] == ((rows["score"] >= 0.5).cast(pl.Int64) == rows["label"]).mean()
    # a duration window counts the labels that arrived within it, on the run's label clock
    clock = log["label_time"].max()
    recent = log.filter((pl.col("model") == "tree") & (pl.col("label_time") > clock - pl.duration(minutes=10)))
    assert window_scores(replayed, "r1", window="10m").n_labels == recent.height > 0
    with pytest.raises(ValueError, match="metric must be one of"):
        window_scores(replayed, "r1", metric="f1")
    with pytest.raises(ValueError, match="window must be a duration"):
        window_scores(replayed, "r1", window=0)


def test_the_rule_needs_enough_labels_and_a_margin():
    s = WindowScores("log_loss", 1_000, {"tree": 0.50, "linear": 0.45, "nb": 0.47}, "w")
    d = decide(s, champion="tree", min_labels=500, margin=0.01)
    assert (d.decision, d.champion, d.previous) == ("promote", "linear", "tree")
    assert (d.champion_value, d.challenger_value, d.n_labels) == (0.45, 0.50, 1_000)
    assert decide(s, champion="tree", margin=0.05).decision == "keep"  # gain 0.05 is not above 0.05
    assert decide(s, champion="tree", min_labels=1_001).reason.endswith("fewer than min_labels=1001")
    assert decide(s, champion="linear").decision == "keep"
    acc = WindowScores("accuracy", 1_000, {"tree": 0.90, "linear": 0.88}, "w")
    assert decide(acc, champion="linear").champion == "tree"  # higher is better
    assert decide(acc, champion="tree").decision == "keep"
    alone = decide(WindowScores("log_loss", 1_000, {"tree": 0.5}, "w"), champion="tree")
    assert alone.decision == "keep" and "no challenger" in alone.reason
    with pytest.raises(ValueError, match="margin must be >= 0"):
        decide(s, champion="tree", margin=-1)
    assert doctest.testmod(flows.promotion).failed == 0


def _aliases(client, name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


def test_promote_keep_and_rollback_move_the_aliases_and_are_recorded(lake, mlflow_uri, prefect_harness):
    client = client_for(mlflow_uri)
    control = PromotionControl(lake, "r1", interval_s=0)
    common = {"window": 1_000, "margin": 0.01, "tracking_uri": mlflow_uri, "retries": 0}

    # too few labels: tree stays champion, aliases set on each model's latest checkpoint
    row = promote(lake, min_labels=5_000, **common)
    assert (row["decision"], row["champion"], row["previous"]) == ("keep", "tree", "tree")
    assert "1000 labelled events in the window" in row["reason"] and "min_labels=5000" in row["reason"]
    tree_v = find_version(client, "riverlake-tree", "r1/tree:s0:3000")
    linear_v = find_version(client, "riverlake-linear", "r1/linear:s0:3000")
    assert _aliases(client, "riverlake-tree") == {"champion": tree_v}
    assert _aliases(client, "riverlake-linear") == {"challenger": linear_v}
    assert control.poll() == "tree"

    # enough labels: linear beats tree by more than the margin
    row = promote(lake, min_labels=500, **common)
    assert (row["decision"], row["champion"], row["previous"]) == ("promote", "linear", "tree")
    assert row["champion_value"] < row["challenger_value"] - 0.01
    assert (row["registered_model"], row["registry_version"], row["checkpoint_id"]) == (
        "riverlake-linear", linear_v, "linear:s0:3000")
    assert _aliases(client, "riverlake-linear") == {"champion": linear_v}
    assert _aliases(client, "riverlake-tree") == {"challenger": tree_v}
    tags = client.get_model_version("riverlake-linear", linear_v).tags
    assert tags["riverlake.decision"] == "promote" and tags["riverlake.previous_champion"] == "tree"
    assert control.poll() == "linear"  # a running dataflow of r1 would now serve linear
    x = read_table(lake, "predictions").filter(pl.col("model") == "linear").tail(10)["features"].to_list()
    with using(mlflow_uri):
        served = mlflow.pyfunc.load_model("models:/riverlake-linear@champion").predict(pd.DataFrame(x))["score"]
    final = read_table(lake, "checkpoints").filter(pl.col("checkpoint_id") == "linear:s0:3000")["model_bytes"][0]
    assert served.tolist() == pytest.approx([score_one(pickle.loads(final), xi) for xi in x], rel=1e-12)

    # asked again: nothing better, linear is kept
    row = promote(lake, min_labels=500, **common)
    assert (row["decision"], row["champion"]) == ("keep", "linear") and "best challenger tree" in row["reason"]

    # rollback: tree is champion again
    row = rollback(lake, "r1", tracking_uri=mlflow_uri, retries=0)
    assert (row["decision"], row["champion"], row["previous"]) == ("rollback", "tree", "linear")
    assert row["registry_version"] == tree_v  # the version tree served with before the promotion
    assert _aliases(client, "riverlake-tree") == {"champion": tree_v}
    assert _aliases(client, "riverlake-linear") == {"challenger": linear_v}
    assert client.get_model_version("riverlake-tree", tree_v).tags["riverlake.decision"] == "rollback"
    assert control.poll() == "tree"

    rows = read_table(lake, "promotions").sort("decided_at")
    assert rows["decision"].to_list() == ["keep", "promote", "keep", "rollback"]
    assert rows["champion"].to_list() == ["tree", "linear", "linear", "tree"]
    assert rows["previous"].to_list() == ["tree", "tree", "linear", "linear"]
    assert rows["metric"].to_list() == ["log_loss"] * 3 + [None]
    assert rows["n_labels"].to_list()[:3] == [1_000] * 3
    assert rows.schema["decided_at"] == pl.Datetime("us", "UTC")

    # a rollback of the rollback promotes linear again, on the version it had
    decision, restore = rollback_decision(lake, "r1")
    assert (decision.champion, restore) == ("linear", {"registered_model": "riverlake-linear",
                                                       "version": linear_v, "checkpoint_id": "linear:s0:3000"})


def test_nothing_is_recorded_while_mlflow_is_down(lake, prefect_harness):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    state = promote(lake, run_id="r1", window=1_000, tracking_uri=dead, retries=1, retry_delay_s=0.1,
                    return_state=True)
    assert state.is_failed()
    assert not exists(lake, "promotions")
    with pytest.raises(LakeError, match="nothing to roll back"):
        rollback_decision(lake, "r1")


def test_command_line_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        promotion_main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "python -m flows.promotion" in out and "--rollback" in out and "--last" in out and "--margin" in out


# ------------------------------------------------------------------------- regression and multiclass lakes


@pytest.fixture(scope="module")
def task_lakes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A regression and a multiclass lake whose run r1 has metrics windows of tree and linear."""
    from datetime import UTC, datetime, timedelta

    from tests.tasklakes import task_lake, write_task_metrics

    lakes = {}
    start, hour = datetime(2026, 1, 1, tzinfo=UTC), timedelta(hours=1)
    for task in ("regression", "multiclass"):
        lake = task_lake(str(tmp_path_factory.mktemp(task) / "lake"), task, n=500)
        # tree is better early, linear better in the last three windows (after a drift)
        write_task_metrics(lake, task, run_id="r1", model="tree", start=start, every=hour,
                           errors=[0.5, 0.5, 0.5, 0.9, 0.9, 0.9])
        write_task_metrics(lake, task, run_id="r1", model="linear", start=start, every=hour,
                           errors=[2.0, 2.0, 2.0, 0.6, 0.6, 0.6])
        lakes[task] = lake
    return lakes


@pytest.mark.parametrize("task, metric", [("regression", "mae"), ("multiclass", "log_loss")])
def test_task_lakes_promote_on_their_primary_metric(task_lakes, task, metric):
    from lake.tasks import read_task

    lake = task_lakes[task]
    assert read_task(lake).primary_metric == metric
    recent = window_scores(lake, "r1", window=300)  # the last three windows: linear has the lower error
    assert recent.metric == metric and recent.n_labels == 300
    assert recent.values == pytest.approx({"tree": 0.9, "linear": 0.6})
    d = decide(recent, champion="tree", min_labels=200, margin=0.01)
    assert (d.decision, d.champion, d.previous) == ("promote", "linear", "tree")
    assert f"linear {metric} 0.60000 beats tree 0.90000" in d.reason
    everything = window_scores(lake, "r1", window="6h")  # over all six windows tree is better
    assert everything.n_labels == 600
    assert decide(everything, champion="tree", min_labels=200).decision == "keep"
    assert window_scores(lake, "r1", window="2h").n_labels == 200


def test_a_metric_of_another_task_is_refused_in_one_line(task_lakes):
    rmse = window_scores(task_lakes["regression"], "r1", window=300, metric="rmse")
    assert rmse.values == pytest.approx({"tree": 0.9, "linear": 0.6})
    with pytest.raises(ValueError, match=r"metric 'log_loss' does not apply to the regression task .*: use one of mae"):
        window_scores(task_lakes["regression"], "r1", metric="log_loss")
    with pytest.raises(ValueError, match="metric 'mae' does not apply to the multiclass task"):
        window_scores(task_lakes["multiclass"], "r1", metric="mae")
