"""Evidently reports and the drift flow on regression and multiclass lakes (issue 18): the quality
report is the task's (regression quality, multiclass classification quality), not the binary one."""

from __future__ import annotations

import json

import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from flows.drift import drift_report, last_vs_previous
from lake.table import read_table
from monitoring.evidently_report import make_report
from tests.tasklakes import task_lake, write_task_predictions

REFERENCE, CURRENT = "2026-01-01T00:00/12m", "2026-01-01T00:18/12m"


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """2,000 scenario events (about 33 minutes) with a champion's predictions in the task's schema."""
    out = {}
    for task in ("regression", "multiclass"):
        lake = task_lake(str(tmp_path_factory.mktemp(task) / "lake"), task, n=2_000)
        write_task_predictions(lake, task, skill=0.8)
        out[task] = lake
    return out


def test_regression_lakes_get_a_regression_quality_report(lakes):
    report = make_report(lakes["regression"], REFERENCE, CURRENT)
    q = report.quality
    assert {"current.mae", "current.rmse", "current.r2", "reference.mae"} <= set(q)
    assert "current.accuracy" not in q
    preds = read_table(lakes["regression"], "predictions").join(
        read_table(lakes["regression"], "labels"), on="event_id")
    # the report's MAE is the one of the rows in the current window (within Evidently's sampling: none here)
    assert 0 < q["current.mae"] < (preds["prediction"] - preds["label"]).abs().mean() * 1.5
    assert q["current.r2"] > 0.5
    with open(report.quality_html_path, encoding="utf-8") as fh:
        page = fh.read()
    assert "Regression quality" in page and "Classification quality" not in page
    with open(report.quality_json_path, encoding="utf-8") as fh:
        types = {m["config"]["type"].rsplit(":", 1)[-1] for m in json.load(fh)["metrics"]}
    assert {"MAE", "RMSE", "R2Score"} <= types


def test_multiclass_lakes_get_a_multiclass_classification_quality_report(lakes):
    report = make_report(lakes["multiclass"], REFERENCE, CURRENT)
    q = report.quality
    assert 0.7 < q["current.accuracy"] < 0.95 and "current.f1" in q and "current.mae" not in q
    assert "current.roc_auc" not in q  # no single score column: the class is predicted, not P(positive)
    with open(report.quality_html_path, encoding="utf-8") as fh:
        assert "Multiclass classification quality" in fh.read()


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_the_drift_flow_works_on_the_task_lakes(lakes, task, mlflow_uri, prefect_harness):
    lake = lakes[task]
    result = drift_report(lake, REFERENCE, CURRENT, tracking_uri=mlflow_uri)
    row = read_table(lake, "drift_reports").filter(pl.col("report_id") == result["report_id"]).row(0, named=True)
    assert row["mlflow_run_id"] == result["mlflow_run_id"]
    metrics = MlflowClient(tracking_uri=mlflow_uri).get_run(result["mlflow_run_id"]).data.metrics
    key = "current.mae" if task == "regression" else "current.accuracy"
    assert any(k.endswith(key) for k in metrics), sorted(metrics)
    scheduled = last_vs_previous(lake, "10m", tracking_uri=mlflow_uri)
    assert scheduled["report_id"] != result["report_id"]
