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


def write_task_predictions(lake: str, task: str, *, run_id: str = "r1", model: str = "tree",
                           skill: float = 0.7, seed: int = 0, role: str = "champion") -> None:
    """The champion's ``predictions`` of every event in the task's schema, as the learner writes them:
    regression values near the label (its error shrinks with ``skill``), multiclass classes right
    ``skill`` of the time, with their probabilities."""
    import numpy as np
    import polars as pl

    from lake.table import read_table

    rng = np.random.default_rng(seed)
    events = read_table(lake, "events").sort("event_time", "offset")
    labels = read_table(lake, "labels").select("event_id", "label")
    rows = events.join(labels, on="event_id", how="left", maintain_order="left")
    x = [c for c in rows.columns if c.startswith("x")][:3]
    truth = rows["label"].to_list()
    if task == "regression":
        spread = float(np.std(truth)) * (1 - skill)
        predicted = [float(y) + float(rng.normal(0, spread)) for y in truth]
        score, probabilities = predicted, None
    else:
        classes = sorted(set(truth))
        predicted = [y if rng.random() < skill else str(rng.choice(classes)) for y in truth]
        score = [skill] * len(truth)
        probabilities = [{c: (skill if c == p else (1 - skill) / (len(classes) - 1)) for c in classes}
                         for p in predicted]
    frame = {"run_id": [run_id] * rows.height, "shard": [0] * rows.height, "seq": list(range(rows.height)),
             "event_id": rows["event_id"], "event_time": rows["event_time"], "key": rows["key"],
             "model": [model] * rows.height, "role": [role] * rows.height,
             "model_version": [f"{model}:s0:0"] * rows.height, "score": score, "prediction": predicted,
             "features": [dict(zip(x, vals, strict=True)) for vals in rows.select(x).iter_rows()],
             "anomaly_score": [None] * rows.height}
    if probabilities is not None:
        frame["probabilities"] = [list(p.items()) for p in probabilities]
    schema = task_schema("predictions", task)
    table = pa.table({f.name: pa.array(list(frame[f.name]) if not isinstance(frame[f.name], pl.Series)
                                       else frame[f.name].to_list(), f.type) for f in schema}, schema=schema)
    TableWriter(lake, "predictions", writer_id=f"test-predictions/{run_id}/{model}", schema=schema).append(
        table, position=1)


def _table(task: str, table: str, columns: dict) -> pa.Table:
    schema = task_schema(table, task)
    return pa.table({f.name: pa.array(list(columns[f.name]), f.type) for f in schema}, schema=schema)


def write_task_run(lake: str, task: str, *, run_id: str = "r1", skills: dict[str, float] | None = None,
                   window_s: int = 300) -> None:
    """A replay's rows for ``run_id`` in the task's schemas, from :func:`write_task_predictions`'s
    predictions of each model (``skills``; the first is the champion): ``learn_log`` (every label,
    in label order), ``metrics`` (per ``window_s`` of event time, computed from those rows) and one
    ``checkpoints`` row per model (so the run is the lake's latest)."""
    from datetime import UTC, datetime

    import numpy as np
    import polars as pl

    from lake.table import read_table

    skills = skills or {"tree": 0.8, "linear": 0.6}
    for i, (model, skill) in enumerate(skills.items()):
        write_task_predictions(lake, task, run_id=run_id, model=model, skill=skill, seed=i,
                               role="champion" if i == 0 else "challenger")
    preds = read_table(lake, "predictions").filter(pl.col("run_id") == run_id)
    labels = read_table(lake, "labels")
    rows = preds.join(labels, on="event_id").sort("model", "label_time", "event_id")
    rows = rows.with_columns(learn_order=pl.int_range(1, pl.len() + 1).over("model"))
    log = {c: rows[c].to_list() for c in ("run_id", "shard", "event_id", "event_time", "label_time", "model",
                                         "label", "score", "learn_order", "model_version")}
    log["seq"] = rows["learn_order"].to_list()
    TableWriter(lake, "learn_log", writer_id=f"test-learn-log/{run_id}", schema=task_schema("learn_log", task)
                ).append(_table(task, "learn_log", log), position=1)
    span = window_s * 1_000_000
    rows = rows.with_columns(w=pl.col("event_time").dt.epoch("us") // span * span)
    metric_rows = []
    for (model, w), g in sorted(rows.group_by("model", "w"), key=lambda kv: kv[0]):
        n = g.height
        start = datetime.fromtimestamp(w / 1e6, tz=UTC)
        row = {"run_id": run_id, "shard": 0, "seq": len(metric_rows) + 1, "model": model, "window_start": start,
               "window_end": datetime.fromtimestamp((w + span) / 1e6, tz=UTC), "n": n, "n_late_labels": 0,
               "cum_n": n}
        if task == "regression":
            err = (g["label"] - g["prediction"]).to_numpy()
            y = g["label"].to_numpy()
            var = float(np.var(y))
            r2 = 1 - float(np.mean(err ** 2)) / var if var > 0 else None
            row.update(sum_abs_error=float(np.abs(err).sum()), sum_sq_error=float((err ** 2).sum()),
                       mae=float(np.abs(err).mean()), rmse=float(np.sqrt((err ** 2).mean())), r2=r2,
                       cum_mae=None, cum_rmse=None, cum_r2=None)
        else:
            correct = int((g["label"] == g["prediction"]).sum())
            probs = g["probabilities"].to_list()  # the map column reads as dicts
            ll = float(sum(-np.log(max(p.get(y, 0.0), 1e-15)) for p, y in zip(probs, g["label"], strict=True)))
            row.update(n_correct=correct, n_classes=g["label"].n_unique(), sum_log_loss=ll, accuracy=correct / n,
                       macro_f1=correct / n, log_loss=ll / n, cum_accuracy=None, cum_log_loss=None)
        metric_rows.append(row)
    schema = task_schema("metrics", task)
    TableWriter(lake, "metrics", writer_id=f"test-metrics/{run_id}", schema=schema).append(
        pa.table({f.name: pa.array([r.get(f.name) for r in metric_rows], f.type) for f in schema}, schema=schema),
        position=1)
    now = datetime.now(UTC)
    ckpt = {"run_id": [run_id] * len(skills), "shard": [0] * len(skills), "seq": list(range(1, len(skills) + 1)),
            "checkpoint_id": [f"{m}:s0:{labels.height}" for m in skills], "model": list(skills),
            "spec": list(skills), "n_learned": [labels.height] * len(skills), "last_event_id": [None] * len(skills),
            "sha256": ["0" * 64] * len(skills), "river_version": ["0.26.1"] * len(skills),
            "python_version": ["3.11"] * len(skills), "riverlake_version": ["test"] * len(skills),
            "model_bytes": [b""] * len(skills), "created_at": [now] * len(skills), "hmac": [None] * len(skills)}
    schema = task_schema("checkpoints", task)
    TableWriter(lake, "checkpoints", writer_id=f"test-checkpoints/{run_id}").append(
        pa.table({f.name: pa.array(ckpt.get(f.name, [None] * len(skills)), f.type) for f in schema}, schema=schema),
        position=1)
