"""Regression and multiclass lakes for the flows' tests, with the per-task rows the dataflow writes.

The lakes come from the scenarios (``friedman-drift``: regression, ``rbf-drift``:
multiclass). :func:`write_task_metrics` writes ``metrics`` rows in the task's schema
(:func:`lake.schemas.task_schema`) from per-window error sums, as the learner does.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pyarrow as pa

from lake.ingest import ingest_scenario
from lake.schemas import task_schema
from lake.table import TableWriter

SCENARIO = {"regression": "friedman-drift", "multiclass": "rbf-drift"}


def task_lake(lake: str, task: str, *, n: int = 2_000, seed: int = 42) -> str:
    """A lake of ``task`` filled with ``n`` events and labels of its drift scenario."""
    ingest_scenario(lake, SCENARIO[task], n=n, seed=seed)
    return lake


def write_task_metrics(lake: str, task: str, *, run_id: str, model: str, start: datetime, every: timedelta,
                       errors: list[float], n: int = 100, shard: int = 0) -> None:
    """One ``metrics`` row per window for ``model``: ``errors[i]`` is window i's mean absolute error
    (regression; RMSE the same) or mean log loss (multiclass; accuracy ``1 - error/2``)."""
    schema = task_schema("metrics", task)
    rows = []
    for i, err in enumerate(errors):
        row = {"run_id": run_id, "shard": shard, "seq": i + 1, "model": model, "window_start": start + i * every,
               "window_end": start + (i + 1) * every, "n": n, "n_late_labels": 0, "cum_n": n * (i + 1)}
        if task == "regression":
            row.update(sum_abs_error=err * n, sum_sq_error=err * err * n, mae=err, rmse=err, r2=0.5,
                       cum_mae=err, cum_rmse=err, cum_r2=0.5)
        else:
            correct = round(n * (1 - err / 2))
            row.update(n_correct=correct, n_classes=3, sum_log_loss=err * n, accuracy=correct / n,
                       macro_f1=correct / n, log_loss=err, cum_accuracy=correct / n, cum_log_loss=err)
        rows.append(row)
    table = pa.table({f.name: pa.array([r.get(f.name) for r in rows], f.type) for f in schema}, schema=schema)
    TableWriter(lake, "metrics", writer_id=f"test-metrics/{run_id}/{model}/{shard}", schema=schema).append(
        table, position=1)


def rmse_of(errors: list[float]) -> float:
    return math.sqrt(sum(e * e for e in errors) / len(errors))
