"""What a run left in the lake, as numbers a person reads (used by the demo and notebooks)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import polars as pl

from lake.errors import LakeError
from lake.schemas import TABLES
from lake.table import exists, read_table, table_uri, table_version


@dataclass
class RunSummary:
    lake: str
    run_id: str
    n_events: int
    n_labels: int
    predictions: dict[str, int]
    learned: dict[str, int]
    dead_letters: int
    dead_letter_reasons: dict[str, int]
    checkpoints: dict[str, int]
    monthly: pl.DataFrame
    overall: pl.DataFrame
    tables: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    discards: list[str] = field(default_factory=list)  # end-of-run lines and warnings (run_summaries)

    def __str__(self) -> str:
        lines = [f"run {self.run_id} in lake {self.lake}",
                 f"  events {self.n_events:,}   labels {self.n_labels:,}   dead letters {self.dead_letters:,}"]
        for reason, n in sorted(self.dead_letter_reasons.items(), key=lambda kv: -kv[1])[:5]:
            lines.append(f"    {n:>8,}  {reason}")
        lines.extend(f"  {line}" for line in self.discards)
        for model, n in self.predictions.items():
            lines.append(f"  {model:<14} predictions {n:,}   learned {self.learned.get(model, 0):,}   "
                         f"checkpoints {self.checkpoints.get(model, 0)}")
        if self.overall.height:
            lines.append("  prequential, whole run:")
            for row in self.overall.iter_rows(named=True):
                auc = "n/a" if row["roc_auc"] is None else f"{row['roc_auc']:.3f}"
                lines.append(f"    {row['model']:<14} accuracy {row['accuracy']:.3f}   "
                             f"log loss {row['log_loss']:.3f}   mean window ROC AUC {auc}")
            if "positive_rate" in self.overall.columns:
                acc, ll = no_skill(self.overall["positive_rate"][0])
                lines.append(f"    {'no skill':<12} accuracy {acc:.3f}   log loss {ll:.3f}   mean window ROC AUC 0.500"
                             f"   (a constant score at the base rate, {self.overall['positive_rate'][0]:.3f})")
        if self.monthly.height:
            lines.append("  accuracy by month of event time (labelled events):")
            wide = self.monthly.pivot(on="model", index="month", values="accuracy").sort("month")
            if "n_positive" in self.monthly.columns:
                rates = self.monthly.group_by("month").agg((pl.col("n_positive").max() / pl.col("n").max()).alias("r"))
                wide = wide.join(rates.select("month", pl.max_horizontal(pl.col("r"), 1 - pl.col("r"))
                                              .alias("no skill")), on="month", how="left")
            models = [c for c in wide.columns if c != "month"]
            lines.append("    month     " + "".join(f"{m:>14}" for m in models) + "      labelled")
            counts = dict(self.monthly.group_by("month").agg(pl.col("n").max()).iter_rows())
            for row in wide.iter_rows(named=True):
                cells = "".join(f"{row[m]:>14.3f}" if row[m] is not None else f"{'':>14}" for m in models)
                lines.append(f"    {row['month']}   {cells}    {counts[row['month']]:>10,}")
        lines.append("  tables (Delta; read with polars.read_delta(path)):")
        for name, (path, version) in self.tables.items():
            lines.append(f"    {name:<14} v{version:<6} {path}")
        return "\n".join(lines)


def span_text(us: float) -> str:
    """A span of event time (microseconds) in words.

    >>> span_text(48 * 365.25 * 86_400e6), span_text(5.5 * 86_400e6), span_text(3 * 3_600e6), span_text(40 * 60e6)
    ('48.0 years', '5.5 days', '3.0 h', '40 min')
    """
    days = us / 86_400e6
    if days >= 365.25:
        return f"{days / 365.25:.1f} years"
    if days >= 2:
        return f"{days:.1f} days"
    return f"{us / 3_600e6:.1f} h" if us >= 7_200e6 else f"{us / 60e6:.0f} min"


def no_skill(positive_rate: float) -> tuple[float, float]:
    """``(accuracy, log loss)`` of a constant score at ``positive_rate``: what a model must beat.

    >>> [round(v, 3) for v in no_skill(0.25)]
    [0.75, 0.562]
    """
    import math

    b = min(max(positive_rate, 1e-15), 1 - 1e-15)
    return max(positive_rate, 1 - positive_rate), -(b * math.log(b) + (1 - b) * math.log(1 - b))


def latest_run_id(lake: str | os.PathLike[str]) -> str:
    """The run that wrote the most recent checkpoint (by ``created_at``: Delta keeps no row order
    across files); every replay checkpoints its models when its stream ends."""
    if not exists(lake, "checkpoints"):
        raise LakeError(f"no checkpoints in {os.fspath(lake)!r}: replay or run a dataflow first")
    rows = read_table(lake, "checkpoints", columns=["run_id", "created_at"])
    if rows.height == 0:
        raise LakeError(f"no checkpoints in {os.fspath(lake)!r}: replay or run a dataflow first")
    return rows.sort(["created_at", "run_id"])["run_id"][-1]


def summarize(lake: str | os.PathLike[str], *, run_id: str | None = None) -> RunSummary:
    """Counts, prequential accuracy by month and table locations of one run (default: the latest)."""
    run_id = run_id or latest_run_id(lake)
    mine = pl.col("run_id") == run_id
    events = read_table(lake, "events", columns=["event_id"]).height
    labels = read_table(lake, "labels", columns=["event_id"]).height if exists(lake, "labels") else 0
    preds = read_table(lake, "predictions", columns=["run_id", "model"]).filter(mine)
    learns = (read_table(lake, "learn_log", columns=["run_id", "model"]).filter(mine)
              if exists(lake, "learn_log") else pl.DataFrame(schema={"model": pl.String}))
    dead = (read_table(lake, "dead_letters", columns=["run_id", "reason"]).filter(mine)
            if exists(lake, "dead_letters") else pl.DataFrame(schema={"reason": pl.String}))
    ckpts = read_table(lake, "checkpoints", columns=["run_id", "model"]).filter(mine)
    metrics = read_table(lake, "metrics").filter(mine) if exists(lake, "metrics") else None
    if metrics is not None and metrics.height:
        monthly = (metrics.group_by(pl.col("window_start").dt.strftime("%Y-%m").alias("month"), "model")
                   .agg(pl.col("n").sum(), pl.col("n_correct").sum(), pl.col("n_positive").sum())
                   .with_columns((pl.col("n_correct") / pl.col("n")).alias("accuracy"))
                   .sort("month", "model"))
        overall = (metrics.group_by("model", maintain_order=True)
                   .agg((pl.col("n_correct").sum() / pl.col("n").sum()).alias("accuracy"),
                        (pl.col("sum_log_loss").sum() / pl.col("n").sum()).alias("log_loss"),
                        pl.col("roc_auc").mean().alias("roc_auc"),
                        (pl.col("n_positive").sum() / pl.col("n").sum()).alias("positive_rate")))
    else:
        monthly = pl.DataFrame(schema={"month": pl.String, "model": pl.String, "n": pl.Int64,
                                       "n_correct": pl.Int64, "accuracy": pl.Float64})
        overall = pl.DataFrame()

    def counts(frame: pl.DataFrame, col: str) -> dict[str, int]:
        return dict(frame.group_by(col, maintain_order=True).len().iter_rows()) if frame.height else {}

    tables = {name: (table_uri(lake, name), table_version(lake, name))
              for name in TABLES if exists(lake, name)}
    return RunSummary(
        lake=os.fspath(lake), run_id=run_id, n_events=events, n_labels=labels,
        predictions=counts(preds, "model"), learned=counts(learns, "model"), dead_letters=dead.height,
        dead_letter_reasons=counts(dead, "reason"), checkpoints=counts(ckpts, "model"),
        monthly=monthly, overall=overall, tables=tables, discards=discard_lines(lake, run_id=run_id),
    )


def discard_lines(lake: str | os.PathLike[str], *, run_id: str | None = None) -> list[str]:
    """What runs did not learn from, from ``run_summaries``: one line per run and shard, then each
    warning (``warning: ...``); only ``run_id``'s when given."""
    if not exists(lake, "run_summaries"):
        return []
    rows = read_table(lake, "run_summaries", columns=["run_id", "shard", "seq", "summary", "warning"])
    if run_id is not None:
        rows = rows.filter(pl.col("run_id") == run_id)
    # one row per (run, shard): the latest (a run resumed after its end writes no second row)
    rows = rows.sort("run_id", "shard", "seq").unique(["run_id", "shard"], keep="last", maintain_order=True)
    lines = rows.get_column("summary").to_list()
    lines += [f"warning: {w}" for w in rows.get_column("warning").drop_nulls().to_list()]
    return lines


def windows(lake: str | os.PathLike[str], *, run_id: str | None = None) -> pl.DataFrame:
    """Per model and event-time window: accuracy, log loss, ROC AUC and the positive label rate."""
    run_id = run_id or latest_run_id(lake)
    return (read_table(lake, "metrics").filter(pl.col("run_id") == run_id)
            .group_by("model", "window_start")
            .agg(pl.col("n").sum(), pl.col("n_correct").sum(), pl.col("n_positive").sum(),
                 pl.col("sum_log_loss").sum(), pl.col("roc_auc").mean())
            .with_columns((pl.col("n_correct") / pl.col("n")).alias("accuracy"),
                          (pl.col("sum_log_loss") / pl.col("n")).alias("log_loss"),
                          (pl.col("n_positive") / pl.col("n")).alias("positive_rate"))
            .sort("model", "window_start"))
