"""The drift analysis notebook runs headless against a small lake holding alarms, true drifts and reports."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import nbformat
import polars as pl
from nbclient import NotebookClient

from dataflows.online import run_replay
from lake.ingest import ingest_scenario
from lake.scenarios.agrawal import START
from lake.table import append, read_table
from monitoring.analysis import drift_overview
from monitoring.evidently_report import append_report_row, make_report
from monitoring.monitor import DriftMonitor, drift_events_table

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "drift_analysis.ipynb"


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
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert f"run {run_id}" in outputs and "page-hinkley(threshold=25.0)" in outputs
    assert f"{overview.alarms.height} alarms, 3 true drifts" in outputs
    assert "3 drift reports" in outputs
    assert "windows, features [" in outputs and "0 windows" not in outputs
    for name in ("quality", "reports", "windows", "columns"):
        assert (Path(lake) / f"drift_analysis_{name}.png").stat().st_size > 5_000
