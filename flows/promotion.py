"""Promotion flow: champion vs challengers on recent prequential metrics; moves the registry aliases.

    python -m flows.promotion --lake lakehouse [--run-id R] [--window 7d | --last 5000]
                              [--metric log_loss|accuracy|mae|rmse] [--min-labels 500] [--margin 0.01]
    python -m flows.promotion --lake lakehouse --rollback [--run-id R]

The rule (:func:`decide`): over the recent window of a run's ``learn_log`` (the
labels that arrived in the last ``window`` of the run's label clock, or its last
N labelled events), every model's prequential score is computed from the
scores it gave *before* learning each label, on the same events. With fewer
than ``min_labels`` labelled events the champion is kept. Otherwise the best
challenger is promoted when it beats the champion by more than ``margin`` (in
the metric's units: lower log loss, higher accuracy), else the champion is kept.
``learn_log`` rather than ``metrics``: its rows are per label and available at
once, while a ``metrics`` window is written only after it closes.

The metric defaults to the lake's task's primary metric
(:attr:`lake.tasks.Task.primary_metric`; lower is better): log loss for binary and
multiclass lakes, MAE for regression lakes. Multiclass and regression lakes are scored
from the ``metrics`` table's per-task sums (``sum_log_loss``, ``n_correct``;
``sum_abs_error``, ``sum_sq_error``) over its most recent closed windows: ``learn_log``
keeps only the predicted class's probability, not the label's.

Every decision (``promote``, ``keep``, ``rollback``) is recorded:

- as a row of the lake table ``promotions`` (``champion`` is the model spec
  serving from then on, ``previous`` the one before; ``champion_value`` is the
  champion's metric value, ``challenger_value`` the best other model's). A
  running dataflow of that run serves the ``champion`` of the latest row from
  its next batch on (:class:`dataflows.control.PromotionControl`);
- in the MLflow registry: alias ``champion`` on the champion's registered model
  (``riverlake-<model>``) at the version of its latest checkpoint, alias
  ``challenger`` on every other model of the run at theirs, and tags
  ``riverlake.decision*`` on the champion's version. Checkpoints not yet
  versioned are registered first (:mod:`flows.versioning`).

:func:`rollback` undoes the latest change of champion of a run: the model it
replaced is champion again, its alias back on the version it had then, and a
``rollback`` row is recorded. MLflow first, then the lake: when MLflow is down
nothing is recorded and the flow fails after its retries.

Aliases live on registered models shared by every run of the lake: the latest
decision of any run sets them. For a run of several shards, the alias points at
the shard with the most learning.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.retry import retry_options
from lake.entry import ArgumentParser, require_tables, run_main
from lake.errors import LakeError
from lake.schemas import TABLES
from lake.summary import latest_run_id
from lake.table import append, exists, scan_table

METRICS = {"log_loss": "lower", "accuracy": "higher", "mae": "lower", "rmse": "lower"}
"""Metrics a promotion can compare, and which way is better."""
TASK_METRICS = {"binary": ("log_loss", "accuracy"), "multiclass": ("log_loss", "accuracy"),
                "regression": ("mae", "rmse")}
"""Metrics each task's promotion can compare (the first is the task's primary metric)."""

_EPS = 1e-15  # log-loss clipping, as in monitoring.prequential


@dataclass(frozen=True)
class WindowScores:
    """Each model's metric over the same recent labelled events of a run."""

    metric: str
    n_labels: int
    values: dict[str, float]
    window: str


@dataclass(frozen=True)
class Decision:
    """What a promotion (or rollback) decided; becomes one ``promotions`` row."""

    decision: str  # promote | keep | rollback
    champion: str
    previous: str
    reason: str
    metric: str | None = None
    champion_value: float | None = None
    challenger_value: float | None = None
    n_labels: int | None = None


def _scan(lake: str, table: str) -> pl.LazyFrame:
    return scan_table(lake, table)


def current_champion(lake: str, run_id: str) -> str:
    """The model serving in ``run_id``: the latest ``promotions`` row's, else the last champion prediction's."""
    if exists(lake, "promotions"):
        rows = (_scan(lake, "promotions").filter(pl.col("run_id") == run_id)
                .select("decided_at", "champion").collect().sort("decided_at", maintain_order=True))
        if rows.height:
            return rows["champion"][-1]
    if exists(lake, "predictions"):
        last = (_scan(lake, "predictions").filter((pl.col("run_id") == run_id) & (pl.col("role") == "champion"))
                .select("seq", "shard", "model").sort(["seq", "shard"]).tail(1).collect())
        if last.height:
            return last["model"][0]
    raise LakeError(f"run {run_id!r} has no predictions and no promotions: which model serves is unknown")


def window_scores(lake: str, run_id: str, *, window: str | int = "7d", metric: str | None = None,
                  threshold: float = 0.5) -> WindowScores:
    """Every model's ``metric`` over the run's recent labelled events (see the module docstring).

    ``metric``: default the lake's task's primary metric; one of :data:`TASK_METRICS` for its task.
    """
    from lake.tasks import read_task

    task = read_task(lake)
    task_name = task.name if task is not None else "binary"
    metric = metric or TASK_METRICS[task_name][0]
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    if metric not in TASK_METRICS[task_name]:
        raise ValueError(f"metric {metric!r} does not apply to the {task_name} task of {lake}: use one of "
                         f"{', '.join(TASK_METRICS[task_name])}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    if isinstance(window, bool) or (isinstance(window, int) and window < 1):
        raise ValueError(f"window must be a duration like '7d' or a number of labelled events >= 1, got {window!r}")
    if task_name != "binary":
        return _metrics_window_scores(lake, run_id, window=window, metric=metric)
    if not exists(lake, "learn_log"):
        return WindowScores(metric, 0, {}, str(window))
    log = (_scan(lake, "learn_log").filter(pl.col("run_id") == run_id)
           .select("model", "event_id", "label", "score", "label_time", "shard", "seq").collect())
    if log.height == 0:
        return WindowScores(metric, 0, {}, str(window))
    events = log.select("event_id", "label_time", "shard", "seq").unique("event_id", keep="first")
    if isinstance(window, int):
        recent = events.sort(["label_time", "shard", "seq"]).tail(window)
        described = f"last {window} labelled events"
    else:
        clock = log["label_time"].max()
        recent = events.filter(pl.col("label_time") > _since(clock, window))
        described = f"labels of the last {window} up to {clock.isoformat()}"
    rows = log.join(recent.select("event_id"), on="event_id", how="semi")
    n_models = rows["model"].n_unique()
    shared = rows.group_by("event_id").agg(pl.col("model").n_unique().alias("k")).filter(pl.col("k") == n_models)
    rows = rows.join(shared.select("event_id"), on="event_id", how="semi")
    y = pl.col("label") == 1
    if metric == "log_loss":
        p = pl.when(y).then(pl.col("score")).otherwise(1.0 - pl.col("score")).clip(_EPS, 1.0)
        value = (-p.log()).mean()
    else:
        value = ((pl.col("score") >= threshold) == y).cast(pl.Float64).mean()
    per_model = rows.group_by("model").agg(value.alias("v")).sort("model")
    return WindowScores(metric, shared.height, dict(zip(per_model["model"], per_model["v"], strict=True)), described)


def _since(clock: Any, window: str) -> pl.Expr:
    """The instant ``window`` (a duration such as ``"7d"``) before ``clock``, as a polars expression."""
    from lake.durations import parse_duration_us

    span_us = parse_duration_us(window)
    if span_us <= 0:
        raise ValueError(f"window must be > 0, got {window!r}")
    return pl.lit(clock) - pl.duration(microseconds=span_us)


_SUMS = {"mae": "sum_abs_error", "rmse": "sum_sq_error", "log_loss": "sum_log_loss", "accuracy": "n_correct"}
"""Column of a task's ``metrics`` rows each metric is computed from (a sum over the window's labels)."""


def _metrics_window_scores(lake: str, run_id: str, *, window: str | int, metric: str) -> WindowScores:
    """Every model's ``metric`` over the run's most recent closed ``metrics`` windows (multiclass, regression).

    The windows every model has rows for, newest first: those ending within ``window`` of the
    latest window's end, or, for a number N, as many as hold N labels (whole windows).
    Shards are summed; the value is the sum column over the labels (the root of it for RMSE).
    """
    if not exists(lake, "metrics"):
        return WindowScores(metric, 0, {}, str(window))
    total = _SUMS[metric]
    rows = (_scan(lake, "metrics").filter(pl.col("run_id") == run_id)
            .group_by("model", "window_start", "window_end")
            .agg(pl.col("n").sum(), pl.col(total).cast(pl.Float64).sum().alias("total")).collect())
    if rows.height == 0:
        return WindowScores(metric, 0, {}, str(window))
    n_models = rows["model"].n_unique()
    windows = (rows.group_by("window_start", "window_end")
               .agg(pl.col("model").n_unique().alias("k"), pl.col("n").min())
               .filter((pl.col("k") == n_models) & (pl.col("n") > 0))
               .sort("window_end", "window_start", descending=True))
    if isinstance(window, int):
        before = windows["n"].cum_sum() - windows["n"]
        recent = windows.filter(before < window)
        described = f"last {recent['n'].sum()} labelled events ({recent.height} metrics windows, >= {window} asked)"
    else:
        clock = rows["window_end"].max()
        recent = windows.filter(pl.col("window_end") > _since(clock, window))
        described = f"metrics windows of the last {window} up to {clock.isoformat()}"
    chosen = rows.join(recent.select("window_start", "window_end"), on=["window_start", "window_end"], how="semi")
    value = pl.col("total").sum() / pl.col("n").sum()
    if metric == "rmse":
        value = value.sqrt()
    per_model = chosen.group_by("model").agg(value.alias("v")).sort("model")
    return WindowScores(metric, int(recent["n"].sum()), dict(zip(per_model["model"], per_model["v"], strict=True)),
                        described)


def decide(scores: WindowScores, *, champion: str, min_labels: int = 500, margin: float = 0.01) -> Decision:
    """Promote the best challenger when it beats ``champion`` by more than ``margin`` on enough labels.

    >>> s = WindowScores("log_loss", 800, {"linear": 0.40, "tree": 0.52}, "last 800 labelled events")
    >>> decide(s, champion="tree").decision, decide(s, champion="tree").champion
    ('promote', 'linear')
    >>> decide(s, champion="tree", margin=0.2).decision
    'keep'
    >>> decide(s, champion="tree", min_labels=1000).reason
    'keep tree: 800 labelled events in the window (last 800 labelled events), fewer than min_labels=1000'
    """
    if min_labels < 1:
        raise ValueError(f"min_labels must be >= 1, got {min_labels!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    metric, values = scores.metric, scores.values
    common = {"metric": metric, "n_labels": scores.n_labels}

    def keep(reason: str, best: float | None = None) -> Decision:
        return Decision("keep", champion, champion, f"keep {champion}: {reason}",
                        champion_value=values.get(champion), challenger_value=best, **common)

    challengers = sorted(m for m in values if m != champion)
    if champion not in values:
        return keep(f"it has no labelled events in the window ({scores.window})")
    if not challengers:
        return keep("no challenger in this run")
    sign = 1.0 if METRICS[metric] == "lower" else -1.0
    best = min(challengers, key=lambda m: (sign * values[m], m))
    if scores.n_labels < min_labels:
        return keep(f"{scores.n_labels} labelled events in the window ({scores.window}), "
                    f"fewer than min_labels={min_labels}", values[best])
    gain = sign * (values[champion] - values[best])
    if gain > margin:
        return Decision("promote", best, champion,
                        f"{best} {metric} {values[best]:.5f} beats {champion} {values[champion]:.5f} by "
                        f"{gain:.5f} > margin {margin} over {scores.n_labels} labelled events ({scores.window})",
                        champion_value=values[best], challenger_value=values[champion], **common)
    return keep(f"best challenger {best} {metric} {values[best]:.5f} vs {values[champion]:.5f}: "
                f"gain {gain:.5f} not above margin {margin} over {scores.n_labels} labelled events "
                f"({scores.window})", values[best])


def latest_checkpoints(lake: str, run_id: str) -> dict[str, str]:
    """``{model: checkpoint_id}`` of each model's most-learned checkpoint in the run (lowest shard on ties)."""
    rows = (_scan(lake, "checkpoints").filter(pl.col("run_id") == run_id)
            .select("model", "shard", "n_learned", "checkpoint_id").collect()
            .sort(["model", "n_learned", "shard"], descending=[False, True, False]))
    if rows.height == 0:
        raise LakeError(f"run {run_id!r} has no checkpoints in {lake!r}")
    first = rows.unique("model", keep="first", maintain_order=True)
    return dict(zip(first["model"], first["checkpoint_id"], strict=True))


def registry_targets(lake: str, run_id: str, *, tracking_uri: str, experiment: str = "riverlake",
                     registered_model_prefix: str = "riverlake") -> dict[str, dict[str, str]]:
    """``{model: {registered_model, version, checkpoint_id}}`` of each model's latest checkpoint.

    Checkpoints not yet in MLflow are registered first.
    """
    from flows.registry import checkpoint_key, client_for, find_version, registered_model_name
    from flows.versioning import sync_lake

    latest = latest_checkpoints(lake, run_id)
    sync_lake(lake, tracking_uri, experiment=experiment, registered_model_prefix=registered_model_prefix,
              run_id=run_id, checkpoint_ids=list(latest.values()))
    client = client_for(tracking_uri)
    targets = {}
    for model, ckpt in latest.items():
        name = registered_model_name(registered_model_prefix, model)
        version = find_version(client, name, checkpoint_key(run_id, ckpt))
        if version is None:
            raise LakeError(f"checkpoint {run_id}/{ckpt} is not registered in {name!r} after syncing")
        targets[model] = {"registered_model": name, "version": version, "checkpoint_id": ckpt}
    return targets


def record(lake: str, run_id: str, decision: Decision, targets: dict[str, dict[str, str]], *,
           tracking_uri: str, decided_at: datetime) -> dict[str, Any]:
    """Move the aliases, tag the champion's version, then append the ``promotions`` row; returns the row.

    Safe to repeat with the same ``decided_at`` (a retry): aliases and tags are set again, the row
    is written once.
    """
    from flows.registry import CHALLENGER, CHAMPION, TAG, client_for, drop_alias

    if decision.champion not in targets:
        raise LakeError(f"model {decision.champion!r} has no registered checkpoint in run {run_id!r}")
    client = client_for(tracking_uri)
    champ = targets[decision.champion]
    client.set_registered_model_alias(champ["registered_model"], CHAMPION, champ["version"])
    drop_alias(client, champ["registered_model"], CHALLENGER)
    for model, target in sorted(targets.items()):
        if model != decision.champion:
            client.set_registered_model_alias(target["registered_model"], CHALLENGER, target["version"])
            drop_alias(client, target["registered_model"], CHAMPION)
    tags = {
        "decision": decision.decision, "decided_at": decided_at.isoformat(), "decision_reason": decision.reason,
        "decision_run_id": run_id, "previous_champion": decision.previous, "decision_metric": decision.metric,
        "decision_champion_value": decision.champion_value, "decision_challenger_value": decision.challenger_value,
        "decision_n_labels": decision.n_labels,
    }
    for key, value in tags.items():
        if value is not None:
            client.set_model_version_tag(champ["registered_model"], champ["version"], TAG + key, str(value))
    row = {"decided_at": decided_at, "run_id": run_id, **asdict(decision), **champ}
    row["registry_version"] = row.pop("version")
    schema = TABLES["promotions"]
    table = pa.table({f.name: pa.array([row.get(f.name)], f.type) for f in schema}, schema=schema)
    stamp = int(decided_at.timestamp() * 1_000_000)
    append(lake, "promotions", table, writer_id=f"promotion/{run_id}/{stamp}", position=1)
    return {**row, "decided_at": decided_at.isoformat()}


def rollback_decision(lake: str, run_id: str) -> tuple[Decision, dict[str, str] | None]:
    """The decision that undoes the run's latest change of champion, and the registry version to restore.

    The version is the one the restored model's alias had when it last became champion;
    ``None`` when it never did by a recorded decision (its latest checkpoint is used).
    """
    if not exists(lake, "promotions"):
        raise LakeError(f"nothing to roll back: no promotions in {lake!r}")
    rows = (_scan(lake, "promotions").filter(pl.col("run_id") == run_id).collect()
            .sort("decided_at", maintain_order=True).with_row_index("i"))
    changes = rows.filter(pl.col("champion") != pl.col("previous"))
    if changes.height == 0:
        raise LakeError(f"nothing to roll back: run {run_id!r} never changed champion")
    last = changes.row(-1, named=True)
    restored, demoted = last["previous"], last["champion"]
    before = rows.filter((pl.col("i") < last["i"]) & (pl.col("champion") == restored)
                         & pl.col("registry_version").is_not_null())
    restore = None
    if before.height:
        b = before.row(-1, named=True)
        restore = {"registered_model": b["registered_model"], "version": b["registry_version"],
                   "checkpoint_id": b["checkpoint_id"]}
    decision = Decision("rollback", restored, demoted,
                        f"rollback: {restored} is champion again, undoing the {last['decision']} of {demoted} "
                        f"decided at {last['decided_at'].isoformat()}")
    return decision, restore


# ------------------------------------------------------------------------------------------ Prefect


@task(name="decide-champion", cache_policy=NO_CACHE)
def decide_task(lake: str, run_id: str, window: str | int, metric: str | None, threshold: float, min_labels: int,
                margin: float) -> Decision:
    scores = window_scores(lake, run_id, window=window, metric=metric, threshold=threshold)
    return decide(scores, champion=current_champion(lake, run_id), min_labels=min_labels, margin=margin)


@task(name="register-latest-checkpoints", cache_policy=NO_CACHE)
def targets_task(lake: str, run_id: str, tracking_uri: str, experiment: str,
                 registered_model_prefix: str) -> dict[str, dict[str, str]]:
    return registry_targets(lake, run_id, tracking_uri=tracking_uri, experiment=experiment,
                            registered_model_prefix=registered_model_prefix)


@task(name="record-decision", cache_policy=NO_CACHE)
def record_task(lake: str, run_id: str, decision: Decision, targets: dict[str, dict[str, str]],
                tracking_uri: str, decided_at: datetime) -> dict[str, Any]:
    return record(lake, run_id, decision, targets, tracking_uri=tracking_uri, decided_at=decided_at)


@flow(name="promote-champion")
def promote(lake: str = "lakehouse", run_id: str | None = None, window: str | int = "7d", min_labels: int = 500,
            margin: float = 0.01, metric: str | None = None, tracking_uri: str | None = None,
            experiment: str = "riverlake", registered_model_prefix: str = "riverlake", threshold: float = 0.5,
            retries: int = 3, retry_delay_s: float = 5.0) -> dict[str, Any]:
    """Compare champion and challengers of ``run_id`` (default: the latest run) and record the decision.

    ``metric``: default the lake's task's primary metric (log loss; MAE for regression).
    """
    from flows.registry import tracking_uri_for

    logger = get_run_logger()
    uri = tracking_uri_for(lake, tracking_uri)
    run_id = run_id or latest_run_id(lake)
    decision = decide_task(lake, run_id, window, metric, threshold, min_labels, margin)
    logger.info("run %s: %s", run_id, decision.reason)
    retry = retry_options(retries, retry_delay_s)
    targets = targets_task.with_options(**retry)(lake, run_id, uri, experiment, registered_model_prefix)
    row = record_task.with_options(**retry)(lake, run_id, decision, targets, uri, datetime.now(UTC))
    logger.info("%s is champion of run %s: %s version %s", row["champion"], run_id, row["registered_model"],
                row["registry_version"])
    return row


@flow(name="rollback-champion")
def rollback(lake: str = "lakehouse", run_id: str | None = None, tracking_uri: str | None = None,
             experiment: str = "riverlake", registered_model_prefix: str = "riverlake", retries: int = 3,
             retry_delay_s: float = 5.0) -> dict[str, Any]:
    """Undo the latest change of champion of ``run_id`` (default: the latest run)."""
    from flows.registry import tracking_uri_for

    logger = get_run_logger()
    uri = tracking_uri_for(lake, tracking_uri)
    run_id = run_id or latest_run_id(lake)
    decision, restore = rollback_decision(lake, run_id)
    logger.info("run %s: %s", run_id, decision.reason)
    retry = retry_options(retries, retry_delay_s)
    targets = targets_task.with_options(**retry)(lake, run_id, uri, experiment, registered_model_prefix)
    if restore is not None:
        targets = {**targets, decision.champion: restore}
    return record_task.with_options(**retry)(lake, run_id, decision, targets, uri, datetime.now(UTC))


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.promotion", description=__doc__.split("\n")[0])
    parser.add_argument("--lake", default=os.environ.get("RIVERLAKE_LAKE", "lakehouse"), help="lake root folder")
    parser.add_argument("--run-id", default=None, help="run to decide for (default: the latest)")
    window = parser.add_mutually_exclusive_group()
    window.add_argument("--window", default="7d", help="recent labels by label time, e.g. 7d, 12h (default 7d)")
    window.add_argument("--last", type=int, default=None, help="instead: the last N labelled events")
    parser.add_argument("--metric", choices=sorted(METRICS), default=None,
                        help="default: the task's primary metric (log_loss; mae for a regression lake)")
    parser.add_argument("--min-labels", type=int, default=500, help="labelled events needed to decide (default 500)")
    parser.add_argument("--margin", type=float, default=0.01, help="how much better a challenger must be")
    parser.add_argument("--threshold", type=float, default=0.5, help="decision threshold for accuracy")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///LAKE/mlflow.db)")
    parser.add_argument("--prefix", default="riverlake", help="registered models are named PREFIX-MODEL")
    parser.add_argument("--rollback", action="store_true", help="undo the run's latest change of champion")
    args = parser.parse_args(argv)
    require_tables(args.lake, "predictions", "labels")  # before the flow: a missing table is one line
    from flows.registry import use_tracking_uri

    use_tracking_uri(args.tracking_uri)  # not a flow parameter: Prefect stores those
    try:
        if args.rollback:
            row = rollback(args.lake, args.run_id, None, registered_model_prefix=args.prefix)
        else:
            row = promote(args.lake, args.run_id, args.last if args.last is not None else args.window,
                          args.min_labels, args.margin, args.metric, None,
                          registered_model_prefix=args.prefix, threshold=args.threshold)
    except (LakeError, ValueError) as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    print(f"{row['decision']}: {row['reason']}")
    print(f"champion of run {row['run_id']}: {row['champion']} ({row['registered_model']} version "
          f"{row['registry_version']}, checkpoint {row['checkpoint_id']})")
    return 0


if __name__ == "__main__":
    run_main(main)
