"""The drift analysis notebook runs headless against a small lake holding alarms, true drifts and reports."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from dataflows.online import run_replay
from lake.ingest import ingest_scenario
from lake.scenarios.agrawal import START
from lake.table import append, read_table
from monitoring.analysis import drift_overview, rolling_quality
from monitoring.evidently_report import append_report_row, make_report
from monitoring.monitor import DriftMonitor, drift_events_table
from tests.notebooks import execute, lake_files


def test_drift_notebook_executes_and_draws_its_figures(tmp_path, monkeypatch):
    lake = str(tmp_path / "lake")
    ingest_scenario(lake, "agrawal-drift", n=8_000, seed=3)
    run_id = run_replay(lake, "linear", recovery=False, window="10m", grace="1m")
    # alarms of our own monitor on the champion's error stream, beside the dataflow's
    log = read_table(lake, "learn_log").filter(pl.col("run_id") == run_id).sort("learn_order")
    alarms = DriftMonitor({"error": ["page-hinkley(threshold=25.0)"]}).update_many(
        ys=log["label"].to_list(), scores=log["score"].to_list(), event_ids=log["event_id"].to_list(),
        event_times=log["event_time"].dt.epoch("us").to_list(), seqs=log["seq"].to_list())
    assert alarms
    append(lake, "drift_events", drift_events_table(alarms, run_id=run_id, model="linear"), writer_id="nb", position=1)
    for k in range(3):  # three reports: the first 2,000 events against each later block of 2,000
        block = f"{(START + timedelta(seconds=2_000 * (k + 1))).isoformat()}/2000s"
        append_report_row(lake, make_report(lake, f"{START.isoformat()}/2000s", block))
    overview = drift_overview(lake)
    assert overview.reports.height == 3 and overview.truth.height == 3 and overview.top_columns.height > 0

    monkeypatch.setenv("RIVERLAKE_LAKE", lake)
    monkeypatch.delenv("RIVERLAKE_FIGURES", raising=False)
    before = lake_files(lake)
    run = execute("drift_analysis.ipynb")
    outputs = run.text
    assert f"run {run_id}" in outputs and "page-hinkley(threshold=25.0)" in outputs
    assert f"{overview.alarms.height} alarms, 3 true drifts" in outputs
    assert "3 drift reports" in outputs
    assert "windows, features [" in outputs and "0 windows" not in outputs
    # four figures, each an inline image a person sees in Jupyter; nothing written into the lake
    assert run.figure_cells == 4 and len(run.figures) == 4 and min(run.figures) > 5_000
    assert lake_files(lake) == before


def test_quality_slices_follow_event_time(tmp_path):
    """The quality chart's x axis is event time: slices must not go backwards when labels arrive out of order."""
    lake = str(tmp_path / "lake")
    ingest_scenario(lake, "flights", limit=6_000)
    run_id = run_replay(lake, "linear", recovery=False)
    q = rolling_quality(lake, run_id=run_id, bins=50)
    assert q.height >= 40
    assert q["event_time"].is_sorted()
