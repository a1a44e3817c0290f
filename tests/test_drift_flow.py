"""Evidently drift reports between windows of a real lake: files, drift_reports, MLflow, the Prefect flow."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from dataflows.online import run_replay
from flows.drift import drift_report, last_vs_previous, log_report_to_mlflow, metric_name
from lake.table import append, read_table
from monitoring.evidently_report import (
    append_report_row,
    last_vs_previous_windows,
    make_report,
    parse_window,
    read_report,
    select_columns,
)
from tests.synthetic import T0, synthetic_frames

A = f"{T0.isoformat()}/25m"  # the first 1,500 events
B = f"{(T0 + timedelta(seconds=1500)).isoformat()}/25m"  # the next 1,500, same distribution
C = f"{(T0 + timedelta(seconds=3000)).isoformat()}/25m"  # 1,500 more with x1 and colour shifted


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    """3,000 stationary events (events v0), then 1,500 shifted ones (v1), replayed through ``linear``."""
    root = str(tmp_path_factory.mktemp("drift") / "lake")
    events, labels = synthetic_frames(3_000, seed=7)
    append(root, "events", events, writer_id="base", position=1)
    append(root, "labels", labels, writer_id="base", position=1)
    rng = random.Random(11)
    ev, lb = synthetic_frames(1_500, seed=8)
    x1 = [v + 0.5 for v in ev["x1"]]
    ev = ev.with_columns(
        event_id="s" + pl.col("event_id"), event_time=pl.col("event_time") + timedelta(seconds=3_000),
        offset=pl.col("offset") + 3_000, x1=pl.Series(x1),
        colour=pl.Series([rng.choices(["red", "green", "blue"], [0.7, 0.2, 0.1])[0] for _ in range(1_500)]))
    lb = lb.with_columns(event_id="s" + pl.col("event_id"), label_time=pl.col("label_time") + timedelta(seconds=3_000),
                         label=pl.Series([int(a + 0.3 * b > 0.5) for a, b in zip(x1, ev["x2"], strict=True)]))
    append(root, "events", ev, writer_id="shifted", position=1)
    append(root, "labels", lb, writer_id="shifted", position=1)
    run_replay(root, "linear", recovery=False, window="10m", grace="1m")
    return root


def test_report_round_trips_through_json_and_the_drift_reports_row(lake):
    report = make_report(lake, A, C)
    assert Path(report.html_path).stat().st_size > 10_000 and Path(report.quality_json_path).exists()
    assert append_report_row(lake, report) == 1
    assert append_report_row(lake, report) == 0  # the same report again: nothing new
    row = read_table(lake, "drift_reports").filter(pl.col("report_id") == report.report_id).row(0, named=True)
    back = read_report(row["json_path"])
    assert row["drifted_share"] == back.drifted_share == report.summary.drifted_share
    assert dict(row["column_scores"]) == back.column_scores
    assert dict(row["column_drifted"]) == back.column_drifted
    assert row["n_drifted"] == sum(back.column_drifted.values())  # our reading of each column agrees with Evidently
    assert (row["reference_rows"], row["current_rows"]) == (1_500, 1_500)
    assert row["model"] == "linear" and row["run_id"].startswith("replay-")
    quality = dict(row["quality"])
    assert 0.5 < quality["reference.accuracy"] <= 1 and 0.5 < quality["current.accuracy"] <= 1
    assert json.loads(Path(row["json_path"]).read_text())["metrics"]


def test_drift_between_windows_that_differ_and_none_between_windows_that_do_not(lake):
    same = make_report(lake, A, B).summary
    moved = make_report(lake, A, C).summary
    assert not same.dataset_drift and not same.column_drifted["x1"] and not same.column_drifted["colour"]
    assert moved.dataset_drift and moved.column_drifted["x1"] and moved.column_drifted["colour"]
    assert not moved.column_drifted["x2"]
    assert set(moved.column_scores) == {"x1", "x2", "colour", "score"}


def test_windows_by_delta_version(lake):
    report = make_report(lake, "0", "1", by="version")
    assert (report.reference_rows, report.current_rows) == (3_000, 1_500)
    assert report.summary.column_drifted["x1"] and report.reference_version == 0 and report.current_version == 1
    assert report.current_span[0] == T0 + timedelta(seconds=3_000)
    with pytest.raises(ValueError, match="events has no version 7"):
        make_report(lake, "0", "7", by="version")


def test_wide_feature_maps_are_cut_to_the_columns_worth_reporting(lake):
    report = make_report(lake, A, C, source="predictions", max_columns=4)
    cols = report.columns.numerical + report.columns.categorical
    assert len(cols) == report.summary.n_columns == 4 and "score" in cols
    assert report.columns.available > 4 and all(c == "score" or c.startswith("f:") for c in cols)
    # 2,000 sparse hashed indicators (0 where absent), a few frequent, most rare: the cut keeps the most
    # present ones and the score, and drops those almost never present
    rng = random.Random(3)
    weights = [1.0 / (j + 1) for j in range(2_000)]
    rows = []
    for _ in range(1_000):
        on = set(rng.choices(range(2_000), weights, k=8))
        rows.append({f"h{j}": 1.0 if j in on else 0.0 for j in range(2_000)} | {"score": rng.random()})
    wide = pl.DataFrame(rows)
    picked = select_columns(wide.head(500), wide.tail(500), max_columns=20, min_presence=0.01)
    frequent = set(wide.drop("score").sum().transpose(include_header=True).sort("column_0", descending=True)
                   .head(40)["column"])
    assert len(picked.numerical) == 20 and "score" in picked.numerical
    assert set(picked.numerical) - {"score"} <= frequent
    assert 19 < picked.available < 2_000


def test_report_logged_to_mlflow_once_with_its_files(lake, mlflow_uri):
    report = make_report(lake, A, C)
    first = log_report_to_mlflow(report, lake=lake, tracking_uri=mlflow_uri)
    second = log_report_to_mlflow(report, lake=lake, tracking_uri=mlflow_uri)  # a retry or rerun
    client = MlflowClient(tracking_uri=mlflow_uri)
    run = client.get_run(second)
    assert client.get_run(first).info.lifecycle_stage == "deleted"
    assert run.data.metrics["drifted_share"] == report.summary.drifted_share
    assert run.data.metrics[metric_name("drift", "x1")] == report.summary.column_scores["x1"]
    assert run.data.tags["riverlake.report_id"] == report.report_id
    names = {a.path for a in client.list_artifacts(second, "report")}
    assert {"report/drift.html", "report/drift.json", "report/quality.json"} <= names
    store = Path(mlflow_uri.removeprefix("sqlite:///")).parent
    assert run.info.artifact_uri.removeprefix("file://").startswith(str(store / "mlartifacts"))


def test_window_syntax():
    w = parse_window("2026-01-01T06:00/2026-01-01T18:00", by="time")
    assert (w.end - w.start) == timedelta(hours=12)
    assert parse_window("1d/2026-01-02", by="time").start == T0
    assert parse_window(" 4 ", by="version")[3:] == (4, 4)
    for spec, by, message in [("2026-01-01", "time", "START/END"), ("1d/2h", "time", "at least one time"),
                              ("2026-01-02/2026-01-01", "time", "must end after"), ("a-b", "version", "'3' or '3-5'"),
                              ("5-3", "version", "must not end before"), ("x/1d", "time", "ISO 8601")]:
        with pytest.raises(ValueError, match=message):
            parse_window(spec, by=by)


def test_flow_writes_the_row_and_the_mlflow_run(lake, mlflow_uri, prefect_harness):
    result = drift_report(lake, A, C, tracking_uri=mlflow_uri)
    assert result["dataset_drift"] is True
    row = read_table(lake, "drift_reports").filter(pl.col("report_id") == result["report_id"]).row(0, named=True)
    assert row["mlflow_run_id"] == result["mlflow_run_id"]
    assert MlflowClient(tracking_uri=mlflow_uri).get_run(result["mlflow_run_id"]).info.status == "FINISHED"
    # the scheduled comparison: the last 25 minutes (the shifted events) against the 25 before
    end = T0 + timedelta(seconds=4_499, microseconds=1)  # just after the last event
    ref, cur = (parse_window(w, by="time") for w in last_vs_previous_windows(lake, "25m"))
    assert (ref.start, ref.end, cur.start, cur.end) == (end - timedelta(minutes=50), end - timedelta(minutes=25),
                                                        end - timedelta(minutes=25), end)
    scheduled = last_vs_previous(lake, "25m", tracking_uri=mlflow_uri)
    assert scheduled["dataset_drift"] is True and scheduled["current_rows"] == 1_500


def test_flow_keeps_the_report_in_the_lake_when_mlflow_is_down(lake, tmp_path, prefect_harness):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the store's folder should be")
    with pytest.raises(RuntimeError, match="is in the lake but not in MLflow"):
        drift_report(lake, B, C, tracking_uri=f"sqlite:///{blocked}/mlflow.db", retries=1, retry_delay_s=0.0)
    rows = read_table(lake, "drift_reports").filter(pl.col("reference_start") == parse_window(B, by="time").start)
    assert rows.height == 1 and rows["mlflow_run_id"][0] is None


@pytest.fixture(scope="module")
def daily_lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    """3 weather stations, one row a day each while they report, over 48 years (18,992 events)."""
    from flows.bench.daily import write_daily_history

    root = str(tmp_path_factory.mktemp("daily") / "lake")
    write_daily_history(root)
    return root


def test_default_windows_on_a_daily_multi_decade_history(daily_lake, mlflow_uri, prefect_harness):
    # a day holds 1 event per station here: the fixed 1d failed; auto counts events instead
    result = last_vs_previous(daily_lake, tracking_uri=mlflow_uri)
    assert result["windows"].startswith("drift windows: last 2,000 events vs the 2,000 before (auto: 18,992 events "
                                        "over 48.0 years; the last 28d holds")
    assert (result["reference_rows"], result["current_rows"]) == (2_000, 2_000)
    row = read_table(daily_lake, "drift_reports").filter(pl.col("report_id") == result["report_id"]).row(0, named=True)
    assert row["current_end"] > row["current_start"] == row["reference_end"] > row["reference_start"]


def test_explicit_windows_that_cannot_work_are_refused_before_any_work(daily_lake, lake):
    from lake.errors import UsageError
    from monitoring.evidently_report import choose_windows

    with pytest.raises(UsageError, match=r"window 1d: the last 1d of event time holds 1 event\(s\)"):
        choose_windows(daily_lake, "1d")
    with pytest.raises(UsageError, match="window 20,000 events: needs 2 to 9,496 here"):
        choose_windows(daily_lake, events=20_000)
    assert str(choose_windows(daily_lake, events=500)).startswith("drift windows: last 500 events vs the 500 before")
    # a bare number is a duration in seconds (lake.durations), never a count of events
    with pytest.raises(UsageError, match=r"window 86400: the last 86400 of event time holds 1 event\(s\)"):
        choose_windows(daily_lake, "86400")
    with pytest.raises(UsageError, match="events must be a whole number given with window 'auto'"):
        choose_windows(daily_lake, "1d", events=500)
    # a dense stream keeps time windows: 4,500 events a second apart, the last hour holds 3,600
    dense = choose_windows(lake, "auto", min_events=500)
    assert dense.description == "the last 1h of event time (3,600 events) vs the 1h before (900)"
    assert dense.reason.startswith("auto: the shortest of 1h, 6h")
