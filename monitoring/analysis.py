"""What the lake says about drift, as frames ready to plot (used by ``notebooks/drift_analysis.ipynb``).

Per task (:mod:`lake.tasks`, read from the lake): the metrics plotted are :data:`PLOTTED`
(accuracy and log loss of the classification tasks, MAE and RMSE of a regression), their
axis labels :data:`LABELS`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import polars as pl

from lake.summary import latest_run_id, windows
from lake.table import exists, read_table
from monitoring.evidently_report import read_reports

PLOTTED = {"binary": ("accuracy", "log_loss"), "multiclass": ("accuracy", "log_loss"), "regression": ("mae", "rmse")}
"""The two metrics the notebooks plot for each task."""
LABELS = {"accuracy": "prequential accuracy", "log_loss": "log loss", "mae": "prequential MAE",
          "rmse": "prequential RMSE", "r2": "R²", "macro_f1": "macro-F1", "positive_rate": "positive label rate"}
"""Axis label of each metric."""


def lake_task(lake: str | os.PathLike[str]) -> str:
    """The lake's task (``binary`` for a lake without labels)."""
    from lake.tasks import read_task

    found = read_task(lake)
    return found.name if found is not None else "binary"


def task_windows(lake: str | os.PathLike[str], *, run_id: str, task: str | None = None) -> pl.DataFrame:
    """Per model and event-time window, the task's prequential metrics from ``metrics`` (shards summed):
    binary as :func:`lake.summary.windows`; multiclass n, accuracy, log_loss, macro_f1; regression n,
    mae, rmse, r2 (macro-F1 and R² averaged over shards)."""
    task = task or lake_task(lake)
    if task == "binary":
        return windows(lake, run_id=run_id)
    rows = read_table(lake, "metrics").filter(pl.col("run_id") == run_id).group_by("model", "window_start")
    n = pl.col("n").sum()
    if task == "regression":
        frame = rows.agg(n, pl.col("sum_abs_error").sum(), pl.col("sum_sq_error").sum(), pl.col("r2").mean())
        frame = frame.with_columns((pl.col("sum_abs_error") / pl.col("n")).alias("mae"),
                                   (pl.col("sum_sq_error") / pl.col("n")).sqrt().alias("rmse"))
        keep = ["model", "window_start", "n", "mae", "rmse", "r2"]
    else:
        frame = rows.agg(n, pl.col("n_correct").sum(), pl.col("sum_log_loss").sum(), pl.col("macro_f1").mean())
        frame = frame.with_columns((pl.col("n_correct") / pl.col("n")).alias("accuracy"),
                                   (pl.col("sum_log_loss") / pl.col("n")).alias("log_loss"))
        keep = ["model", "window_start", "n", "accuracy", "log_loss", "macro_f1"]
    return frame.select(keep).sort("model", "window_start")


@dataclass
class RunOverview:
    """One run of a lake of any task: its task, the metrics to plot, and its metrics per window."""

    lake: str
    run_id: str
    task: str
    metrics: tuple[str, str]  # the two plotted, see PLOTTED (binary: accuracy and the positive label rate)
    windows: pl.DataFrame
    text: str

    def __str__(self) -> str:
        return self.text


def run_overview(lake: str | os.PathLike[str], *, run_id: str | None = None) -> RunOverview:
    """What ``notebooks/replay_overview.ipynb`` shows: :func:`lake.summary.summarize` for a binary lake; for
    the others the counts and each model's whole-run metrics (``prequential, whole run``) from ``metrics``."""
    from lake.summary import summarize

    lake = os.fspath(lake)
    run_id = run_id or latest_run_id(lake)
    task = lake_task(lake)
    per_window = task_windows(lake, run_id=run_id, task=task)
    if task == "binary":
        return RunOverview(lake, run_id, task, ("accuracy", "positive_rate"), per_window,
                           str(summarize(lake, run_id=run_id)))
    events = read_table(lake, "events", columns=["event_id"]).height
    labels = read_table(lake, "labels", columns=["event_id"]).height if exists(lake, "labels") else 0
    lines = [f"lake {lake}, run {run_id}, task {task}", f"  events {events:,}   labels {labels:,}",
             "  prequential, whole run:"]
    plotted = PLOTTED[task]
    for (model,), frame in per_window.group_by("model", maintain_order=True):
        n = frame["n"].sum()
        w = frame["n"]
        values = {m: ((frame[m] ** 2 * w).sum() / n) ** 0.5 if m == "rmse" else (frame[m] * w).sum() / n
                  for m in plotted}
        shown = "   ".join(f"{m} {v:.4f}" for m, v in values.items())
        lines.append(f"    {model:<14} {shown}   ({n:,} labels)")
    return RunOverview(lake, run_id, task, plotted, per_window, "\n".join(lines))


@dataclass
class DriftOverview:
    """One run's prequential metrics per window, its detector alarms, the known drifts and the reports."""

    lake: str
    run_id: str | None
    windows: pl.DataFrame  # model, window_start, n, the task's metrics (see task_windows)
    alarms: pl.DataFrame  # drift_events of the run: detector, signal, model, position, event_time
    truth: pl.DataFrame  # scenario_drifts (empty for real data): position, event_time, description
    reports: pl.DataFrame  # drift_reports, in order of the current window
    top_columns: pl.DataFrame  # column, reports, drifted, drifted_rate, mean_score
    task: str = "binary"

    @property
    def metrics(self) -> tuple[str, str]:
        """The two metrics the drift notebook plots for the lake's task (:data:`PLOTTED`)."""
        return PLOTTED[self.task]

    def __str__(self) -> str:
        lines = [f"lake {self.lake}, run {self.run_id}"]
        lines.append(f"  metric windows {self.windows.height:,}, models {sorted(set(self.windows['model']))}")
        per = self.alarms.group_by("detector", "signal", "model").len().sort("detector", "signal", "model")
        lines.append(f"  detector alarms {self.alarms.height:,}")
        for row in per.iter_rows(named=True):
            lines.append(f"    {row['detector']:<24} {row['signal']:<14} {row['model'] or '-':<12} {row['len']:>6,}")
        lines.append(f"  known drifts {self.truth.height}")
        lines.append(f"  drift reports {self.reports.height}, with dataset drift "
                     f"{int(self.reports['dataset_drift'].sum()) if self.reports.height else 0}")
        return "\n".join(lines)


def top_drifted_columns(reports: pl.DataFrame, k: int = 10) -> pl.DataFrame:
    """Columns by how often they drifted over ``reports`` (then by mean drift score), at most ``k``.

    ``mean_score`` averages Evidently's per-column scores, which are p-values for some
    tests and distances for others: compare it within one column, not across columns.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")
    schema = {"column": pl.String, "reports": pl.UInt32, "drifted": pl.Int64, "drifted_rate": pl.Float64,
              "mean_score": pl.Float64}
    if reports.height == 0:
        return pl.DataFrame(schema=schema)
    scores = (reports.select("report_id", pl.col("column_scores").map.entries().alias("m")).explode("m")
              .select("report_id", pl.col("m").struct.field("key").alias("column"),
                      pl.col("m").struct.field("value").alias("score")))
    drifted = (reports.select("report_id", pl.col("column_drifted").map.entries().alias("m")).explode("m")
               .select("report_id", pl.col("m").struct.field("key").alias("column"),
                       pl.col("m").struct.field("value").alias("drifted")))
    both = scores.join(drifted, on=["report_id", "column"], how="left").drop_nulls("column")
    return (both.group_by("column")
            .agg(pl.len().alias("reports"), pl.col("drifted").cast(pl.Int64).sum().alias("drifted"),
                 pl.col("score").mean().alias("mean_score"))
            .with_columns((pl.col("drifted") / pl.col("reports")).alias("drifted_rate"))
            .sort(["drifted", "drifted_rate", "column"], descending=[True, True, False])
            .head(k).select(list(schema)))


def rolling_quality(lake: str | os.PathLike[str], *, run_id: str, model: str | None = None,
                    bins: int = 200, task: str | None = None) -> pl.DataFrame:
    """The task's two plotted metrics (:data:`PLOTTED`: accuracy and log loss; MAE and RMSE for a
    regression) in ``bins`` consecutive slices of event time (each learned event scored as it was
    predicted), per model: finer than the metric windows, for plotting against alarms. Slices follow
    event time, not label arrival, so they plot monotonically on a time axis.

    Columns: model, bin, event_time (the slice's first event time), n and the two metrics. A
    regression's prediction is ``learn_log.score`` (the predicted value); a multiclass one's class and
    probabilities come from the model's ``predictions`` row of the event.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins!r}")
    task = task or lake_task(lake)
    first, second = PLOTTED[task]
    log = read_table(lake, "learn_log", columns=["run_id", "shard", "model", "event_id", "event_time", "label",
                                                 "score", "learn_order"]).filter(pl.col("run_id") == run_id)
    if model is not None:
        log = log.filter(pl.col("model") == model)
    if log.height == 0:
        return pl.DataFrame(schema={"model": pl.String, "bin": pl.Int64, "event_time": pl.Datetime("us", "UTC"),
                                    "n": pl.UInt32, first: pl.Float64, second: pl.Float64})
    if task == "regression":
        err = pl.col("label") - pl.col("score")
        values = {first: err.abs(), second: err.pow(2)}
    elif task == "multiclass":
        preds = (read_table(lake, "predictions", columns=["run_id", "model", "event_id", "prediction", "probabilities"])
                 .filter(pl.col("run_id") == run_id).unique(["model", "event_id"], keep="first"))
        log = log.join(preds.drop("run_id"), on=["model", "event_id"], how="left")
        # the label's probability from the class -> probability map; 0 when absent
        log = log.with_columns(p=pl.struct("probabilities", "label").map_elements(
            lambda r: (r["probabilities"] or {}).get(r["label"], 0.0), return_dtype=pl.Float64))
        values = {first: (pl.col("prediction") == pl.col("label")).cast(pl.Float64),
                  second: -pl.col("p").clip(1e-15, 1.0).log()}
    else:
        p = pl.col("score").clip(1e-15, 1 - 1e-15)
        values = {first: ((pl.col("score") >= 0.5).cast(pl.Int64) == pl.col("label")).cast(pl.Float64),
                  second: -pl.when(pl.col("label") == 1).then(p.log()).otherwise((1 - p).log())}
    size = max(1, -(-log.group_by("model").len()["len"].max() // bins))
    out = (log.sort("model", "event_time", "shard", "learn_order")
           .with_columns(bin=(pl.int_range(pl.len()).over("model") // size).cast(pl.Int64),
                         **{f"_{k}": v for k, v in values.items()})
           .group_by("model", "bin")
           .agg(pl.col("event_time").min(), pl.len().alias("n"), *(pl.col(f"_{k}").mean().alias(k) for k in values))
           .sort("model", "bin"))
    return out.with_columns(pl.col(second).sqrt()) if task == "regression" else out


def drift_overview(lake: str | os.PathLike[str], *, run_id: str | None = None, top: int = 10) -> DriftOverview:
    """Everything the drift notebook plots, for ``run_id`` (default: the latest run)."""
    lake = os.fspath(lake)
    if run_id is None and exists(lake, "predictions"):
        run_id = latest_run_id(lake)
    per_window = (task_windows(lake, run_id=run_id) if run_id and exists(lake, "metrics")
                  else pl.DataFrame(schema={"model": pl.String, "window_start": pl.Datetime("us", "UTC"),
                                            "accuracy": pl.Float64, "log_loss": pl.Float64}))
    alarms = (read_table(lake, "drift_events").filter(pl.col("run_id") == run_id).sort("event_time")
              if run_id and exists(lake, "drift_events")
              else pl.DataFrame(schema={"detector": pl.String, "signal": pl.String, "model": pl.String,
                                        "position": pl.Int64, "event_time": pl.Datetime("us", "UTC")}))
    truth = (read_table(lake, "scenario_drifts").sort("event_time") if exists(lake, "scenario_drifts")
             else pl.DataFrame(schema={"position": pl.Int64, "event_time": pl.Datetime("us", "UTC"),
                                       "description": pl.String}))
    reports = read_reports(lake)
    return DriftOverview(lake, run_id, per_window, alarms, truth, reports, top_drifted_columns(reports, top),
                         task=lake_task(lake))


def window_features(lake: str | os.PathLike[str], *, run_id: str, features: list[str] | None = None,
                    k: int = 4) -> pl.DataFrame:
    """Per-window mean and standard deviation of ``features`` from ``window_stats``, long format:
    window_start, feature, n, mean, std. Empty when the run kept no window statistics.

    The default features are the ``k`` with the largest jump of the mean between two consecutive
    windows, in units of the feature's overall standard deviation: abrupt shifts, not slow trends
    such as the time of day."""
    schema = {"window_start": pl.Datetime("us", "UTC"), "feature": pl.String, "n": pl.Int64, "mean": pl.Float64,
              "std": pl.Float64}
    if not exists(lake, "window_stats"):
        return pl.DataFrame(schema=schema)
    stats = read_table(lake, "window_stats", columns=["run_id", "window_start", "n", "mean", "std"]).filter(
        pl.col("run_id") == run_id)
    if stats.height == 0:
        return pl.DataFrame(schema=schema)
    # several shards: weight each shard's window by its count
    # the maps differ in their keys: a window with one value of a feature has its mean but no std
    rows = stats.with_row_index("row")

    def entries(col: str) -> pl.DataFrame:
        return (rows.select("row", "window_start", "n", pl.col(col).map.entries().alias("e")).explode("e")
                .select("row", "window_start", "n", pl.col("e").struct.field("key").alias("feature"),
                        pl.col("e").struct.field("value").alias(col))
                .drop_nulls("feature"))

    long = (entries("mean").join(entries("std").select("row", "feature", "std"), on=["row", "feature"], how="left")
            .group_by("window_start", "feature")
            .agg(pl.col("n").sum(), ((pl.col("mean") * pl.col("n")).sum() / pl.col("n").sum()).alias("mean"),
                 pl.col("std").mean().alias("std")))
    if features is None:
        overall = (pl.col("std").pow(2).mean() + pl.col("mean").var()).sqrt()
        spread = (long.sort("window_start").group_by("feature")
                  .agg((pl.col("mean").diff().abs().max() / (overall + 1e-12)).alias("shift"))
                  .drop_nans().drop_nulls().sort(["shift", "feature"], descending=[True, False]))
        features = spread["feature"].head(k).to_list()
    return long.filter(pl.col("feature").is_in(features)).sort("feature", "window_start").select(list(schema))


def anomaly_rate(lake: str | os.PathLike[str], *, run_id: str, bins: int = 100) -> pl.DataFrame:
    """Share of the champion's events above the anomaly threshold in ``bins`` slices of event time:
    event_time (slice start), n, anomalies, rate. Empty without anomaly scores."""
    schema = {"event_time": pl.Datetime("us", "UTC"), "n": pl.UInt32, "anomalies": pl.UInt32, "rate": pl.Float64}
    preds = read_table(lake, "predictions", columns=["run_id", "role", "event_id", "event_time", "anomaly_score"])
    preds = preds.filter((pl.col("run_id") == run_id) & (pl.col("role") == "champion"))
    if preds.height == 0 or preds["anomaly_score"].null_count() == preds.height:
        return pl.DataFrame(schema=schema)
    flagged = (read_table(lake, "anomalies", columns=["run_id", "event_id"]).filter(pl.col("run_id") == run_id)
               .get_column("event_id") if exists(lake, "anomalies") else pl.Series("event_id", [], pl.String))
    size = max(1, -(-preds.height // bins))
    return (preds.sort("event_time").with_columns(bin=pl.int_range(pl.len()) // size,
                                                  odd=pl.col("event_id").is_in(flagged.implode()))
            .group_by("bin").agg(pl.col("event_time").min(), pl.len().alias("n"),
                                 pl.col("odd").sum().cast(pl.UInt32).alias("anomalies"))
            .with_columns((pl.col("anomalies") / pl.col("n")).alias("rate")).sort("bin").select(list(schema)))
