"""A slice of the real 2013 flights, end to end: ingest, replay, read back with polars."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from dataflows.online import run_replay
from lake.ingest import ingest_scenario

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flights_lake(tmp_path_factory):
    lake = str(tmp_path_factory.mktemp("flights") / "lake")
    ingest_scenario(lake, "flights", limit=6_000)
    return lake


def test_flights_slice_end_to_end(flights_lake):
    run_id = run_replay(flights_lake, "linear,tree", exclude="tailnum,flight", checkpoint_every=2_000)
    read = lambda t: pl.read_delta(str(Path(flights_lake) / t))  # noqa: E731 - plain polars, as a user would
    events, labels = read("events"), read("labels")
    preds = read("predictions").filter(pl.col("run_id") == run_id)
    learns = read("learn_log").filter(pl.col("run_id") == run_id)
    dead = (read("dead_letters").filter(pl.col("run_id") == run_id)
            if (Path(flights_lake) / "dead_letters").exists() else pl.DataFrame({"raw": []}))
    assert events.height == 6_000
    for model in ("linear", "tree"):
        mine = preds.filter(pl.col("model") == model)
        assert mine.height + dead.height == events.height  # events in = predicted + dead-lettered
        # every label that arrived (all of them: the replay runs to the end) was learned once
        assert learns.filter(pl.col("model") == model).height == labels.height
    # cancelled flights have no label, and were still predicted
    unlabelled = events.join(labels, on="event_id", how="anti")
    assert unlabelled.height > 0
    assert preds.join(unlabelled.select("event_id"), on="event_id").height == 2 * unlabelled.height
    # the features are what was known at scheduled departure
    names = set(preds["features"].head(500).map.keys().explode().to_list())
    assert "distance" in names and any(n.startswith("carrier=") for n in names)
    assert not any(n.startswith(("arr_delay", "dep_delay", "air_time", "tailnum", "flight")) for n in names)
    # learns only after the label arrived, and the label arrives after departure
    assert (learns["label_time"] >= learns["event_time"]).all()
    metrics = read("metrics").filter(pl.col("run_id") == run_id)
    assert metrics.filter(pl.col("model") == "linear")["n"].sum() == labels.height
    assert 0.6 < metrics.filter(pl.col("model") == "linear")["n_correct"].sum() / labels.height < 0.95


def test_demo_command_runs_and_summarises(tmp_path, subprocess_env):
    lake = tmp_path / "lake"
    cmd = [sys.executable, "-m", "flows.demo", "--lake", str(lake), "--limit", "3000"]
    subprocess_env = {**subprocess_env, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    proc = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "events 3,000" in out and "accuracy by month" in out and str(lake / "predictions") in out
    # the flows ran: checkpoints in MLflow, a drift report in the lake, window statistics from the dataflow
    assert "2 checkpoints registered" in out  # the final ones; those taken before any learning are no versions
    # the flow runs were recorded where `make ui` serves them from
    assert f"Prefect flow runs are recorded in {tmp_path / 'prefect-home'}" in out
    assert (tmp_path / "prefect-home" / "prefect.db").exists()
    reports = pl.read_delta(str(lake / "drift_reports"))
    assert reports.height == 1 and os.path.exists(reports["html_path"][0])
    assert pl.read_delta(str(lake / "window_stats"))["n"].sum() == 3_000
    # again: the lake is reused, nothing is written twice
    proc = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already" in proc.stdout
    # the lake did not change: the drift report of the same windows stands, no second one
    assert "skipped: report" in proc.stdout and pl.read_delta(str(lake / "drift_reports")).height == 1
    assert pl.read_delta(str(lake / "predictions")).height == 2 * 3_000
