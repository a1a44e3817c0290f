"""Column names that polars could read as patterns (``^x$``, ``^.*$``, ``*``), or that the replay
uses for itself (``_ei``), are taken literally, from ingest through replay, window statistics and
drift reports."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from dataflows.online import run_replay
from flows.drift import log_report_to_mlflow, metric_name
from lake.ingest import ingest_file
from lake.table import read_table
from monitoring.evidently_report import make_report

T0 = datetime(2024, 5, 1, tzinfo=UTC)
N = 600
ODD = ["^x$", "^.*$", "*"]


def _csv(path, *, with_text: bool):
    """``^x$`` near 0, ``x`` near 10 and ``*`` near -5: a mix-up of any two shows in the values."""
    rng = random.Random(3)
    cols = {
        "id": [f"e{i}" for i in range(N)],
        "t": [(T0 + timedelta(seconds=i)).isoformat() for i in range(N)],
        "y": [int(rng.random() < 0.4) for _ in range(N)],
        "^x$": [rng.random() for _ in range(N)],
        "x": [10 + rng.random() for _ in range(N)],
        "*": [-5 + rng.random() for _ in range(N)],
        "_ei": [rng.random() for _ in range(N)],  # the name of the replay's own row index
    }
    if with_text:
        cols["^.*$"] = [rng.choice(["red", "blue"]) for _ in range(N)]
    pl.DataFrame(cols).write_csv(path)
    return path


@pytest.mark.parametrize(("with_text", "model", "settings"), [
    (False, "linear-hash", {"anomaly": None}),  # numbers only: the columnar path (dataflows.columnar)
    (True, "linear", {}),  # a text column: item by item
], ids=["columnar-path", "item-path"])
def test_pattern_like_names_survive_replay_window_stats_and_drift_reports(tmp_path, mlflow_uri, with_text, model,
                                                                         settings):
    lake = str(tmp_path / "lake")
    report = ingest_file(lake, _csv(tmp_path / "odd.csv", with_text=with_text), id_col="id", time_col="t",
                         label_col="y")
    assert report.n_events == N
    events = read_table(lake, "events")
    assert {"^x$", "x", "*"} <= set(events.columns)
    assert read_table(lake, "events", columns=["^x$"]).columns == ["^x$"]  # not the column x
    assert read_table(lake, "events", columns=["*"]).columns == ["*"]  # not every column

    run_id = run_replay(lake, model, recovery=False, window="2m", grace="10s", stats_window="1m", **settings)
    preds = read_table(lake, "predictions").filter(pl.col("run_id") == run_id)
    assert preds.height == N
    features = preds.sort("event_time").row(0, named=True)["features"]
    features = dict(features) if not isinstance(features, list) else {f["key"]: f["value"] for f in features}
    first = events.sort("offset").row(0, named=True)
    assert all(features[c] == first[c] for c in ("^x$", "x", "*", "_ei"))
    if with_text:
        assert f"^.*$={first['^.*$']}" in features  # one-hot of the text column, under its own name

    stats = read_table(lake, "window_stats").filter(pl.col("run_id") == run_id)
    assert stats.height >= 5
    means = dict(stats.row(0, named=True)["mean"])
    assert 0 <= means["^x$"] < 1 and 10 <= means["x"] < 11 and -5 <= means["*"] < -4

    half = T0 + timedelta(seconds=N // 2)
    for source in ("events", "predictions"):
        drift = make_report(lake, (T0, half), (half, T0 + timedelta(seconds=N)), source=source)
        prefix = "" if source == "events" else "f:"
        assert {f"{prefix}^x$", f"{prefix}x", f"{prefix}*"} <= set(drift.summary.column_scores), source
        if with_text and source == "events":
            assert "^.*$" in drift.summary.column_scores
            logged = MlflowClient(mlflow_uri).get_run(log_report_to_mlflow(drift, lake=lake, tracking_uri=mlflow_uri))
            assert {metric_name("drift", c) for c in ("^x$", "x", "*", "^.*$")} <= set(logged.data.metrics)
