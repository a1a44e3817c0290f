from __future__ import annotations

import os

import polars as pl

from lake.table import append, read_table
from tests.synthetic import synthetic_frames


def test_serve_builds_scheduled_deployments_for_the_lake(tmp_path):
    from flows.serve import deployments

    deps = {d.name: d for d in deployments(str(tmp_path / "lake"))}
    assert set(deps) == {"versioning", "promotion", "drift-report", "maintenance", "replay", "benchmark"}
    for d in deps.values():
        assert d.parameters["lake"] == os.path.abspath(tmp_path / "lake")
    for name in ("versioning", "promotion", "drift-report", "maintenance"):
        assert deps[name].schedules, f"{name} has no schedule"
    for name in ("replay", "benchmark"):  # run on demand from the UI, parameters editable there
        assert not deps[name].schedules
    assert deps["replay"].parameters["model"] == "linear,tree"
    assert deps["versioning"].schedules[0].schedule.interval.total_seconds() == 300
    assert deps["maintenance"].schedules[0].schedule.cron == "17 3 * * *"
    assert deps["drift-report"].schedules[0].schedule.interval.total_seconds() == 3600
    assert deps["drift-report"].parameters["window"] == "auto"  # chosen from the data at each run
    assert deployments(str(tmp_path / "lake"), window="2h")[2].parameters["window"] == "2h"
    assert deployments(str(tmp_path / "lake"), window_events=2000)[2].parameters["window_events"] == 2000


def _grow(lake: str, n: int = 500) -> None:
    """New events (and their labels) after the ones the lake holds, as an ingest would add them."""
    events, labels = synthetic_frames(3_000 + n, seed=11)
    events, labels = events.tail(n).with_columns(pl.col("offset") + 10_000), labels.filter(
        pl.col("event_id").is_in(events.tail(n)["event_id"].implode()))
    append(lake, "events", events, writer_id="grow", position=1)
    append(lake, "labels", labels, writer_id="grow", position=1)


def test_replay_deployment_replays_the_newest_history_once(synthetic_lake, prefect_harness):
    from flows.replay import replay

    first = replay(synthetic_lake, model="linear", settings={"recovery": False})
    assert first["events_version"] == 0
    preds = read_table(synthetic_lake, "predictions")
    assert preds.filter(pl.col("run_id") == first["run_id"]).height == 3_000
    # run again on a lake that did not change: the same run, nothing written twice
    again = replay(synthetic_lake, model="linear", settings={"recovery": False})
    assert again["run_id"] == first["run_id"]
    assert read_table(synthetic_lake, "predictions").height == preds.height
    # new events arrived: a new run over the newest versions
    _grow(synthetic_lake)
    grown = replay(synthetic_lake, model="linear", settings={"recovery": False})
    assert grown["run_id"] != first["run_id"] and grown["events_version"] == 1
    assert read_table(synthetic_lake, "predictions").filter(pl.col("run_id") == grown["run_id"]).height == 3_500


def test_scheduled_drift_report_skips_a_lake_that_did_not_change(synthetic_lake, mlflow_uri, prefect_harness):
    from flows.drift import last_vs_previous

    made = last_vs_previous(synthetic_lake, tracking_uri=mlflow_uri)
    assert "skipped" not in made and made["report_id"]
    html = made["html_path"]
    again = last_vs_previous(synthetic_lake, tracking_uri=mlflow_uri)
    assert again["skipped"].startswith(f"skipped: report {made['report_id']} already compares these windows")
    assert read_table(synthetic_lake, "drift_reports").height == 1
    assert os.path.exists(html)
    _grow(synthetic_lake)
    newer = last_vs_previous(synthetic_lake, tracking_uri=mlflow_uri)
    assert "skipped" not in newer and newer["report_id"] != made["report_id"]
    assert read_table(synthetic_lake, "drift_reports").height == 2
