"""Online learning against batch retraining on the same replayed history, as a Prefect flow.

    python -m flows.benchmark --lake PATH [--scenario flights|agrawal-drift|urls [--n N]] [--as-of VERSION] ...
    python -m flows.benchmark --lake PATH --scenario urls --n 200000 --online linear-hash,forest \
        --adwin linear-hash --batch sk-logreg --static sk-logreg --extra ""   # hashed URL tokens

1. Pins one Delta version of ``events`` + ``labels`` (``--as-of``; default the latest).
   With ``--scenario``, an empty lake is first filled with that scenario.
2. Replays it once in the dataflow's order and featurizes every event once
   (:mod:`flows.bench.stream`): every strategy sees the same features and label arrival times.
3. Chooses what ``auto`` leaves open from the data and says why (:mod:`flows.bench.plan`:
   retrain cadence, sliding window, the static models' training slice), estimates each
   strategy's time from its schedule and fits them into the time budget (``--budget``,
   default 20m: periodic strategies subsampled, the most expensive skipped if need be).
4. Runs each strategy (:mod:`flows.bench.strategies`) prequentially over it, each in a fresh
   process by default so its CPU time and memory are its own, with progress and an ETA
   (a bar on a terminal, a log line every 15 s otherwise).
5. Scores them (:mod:`flows.bench.report`; beside each metric the no-skill baseline, and
   the figures from the first event at which every strategy had a model), writes ``benchmark_windows`` and
   ``benchmark_runs`` to the lake, the HTML report to ``LAKE/reports/benchmark-ID.html``,
   and one MLflow parent run with a child run per strategy (default store
   ``sqlite:///LAKE/mlflow.db``, artifacts in ``LAKE/mlartifacts``; ``MLFLOW_TRACKING_URI``
   or ``--tracking-uri`` override). Only the MLflow step retries, and only on I/O errors.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.utilities.annotations import quote

from flows.bench.plan import BudgetPlan, label_clock, parse_budget, plan_budget, resolve_schedule
from flows.bench.progress import StrategyProgress
from flows.bench.report import (
    add_ready_metrics,
    auto_window,
    detect_drifts,
    known_drifts,
    plots,
    render_html,
    run_rows,
    score_strategy,
    window_rows,
)
from flows.bench.strategies import BenchConfig, StrategyRun, StrategySpec
from flows.bench.tasks import (  # noqa: F401  (re-exported: split out of this module)
    as_version,
    benchmark_id_for,
    ensure_history,
    featurize,
    log_mlflow,
    log_to_mlflow,
    pin_history,
    run_one,
    strategy_names,
    write_lake,
    write_report,
)
from flows.retry import is_io_error  # noqa: F401  (re-exported)
from flows.runtime import embedded_prefect
from lake.durations import parse_duration_us
from lake.entry import ArgumentParser, resolve_lake, run_main, settings
from lake.errors import UsageError
from lake.table import table_version

DEFAULT_STRATEGIES = (
    "online/linear", "adwin-reset/linear",
    "periodic-sliding/sk-logreg", "periodic-expanding/sk-logreg",
    "periodic-sliding/hgb", "periodic-expanding/hgb",
    "periodic-sliding/river-linear", "static/sk-logreg", "static/hgb",
)
TASK_STRATEGIES = {
    "binary": DEFAULT_STRATEGIES,
    "regression": ("online/linear", "online/tree", "adwin-reset/linear", "periodic-sliding/sk-ridge",
                   "periodic-expanding/sk-ridge", "periodic-sliding/hgb", "periodic-expanding/hgb", "static/hgb",
                   "online/mean", "online/persistence"),
    "multiclass": ("online/linear", "online/tree", "adwin-reset/tree", "periodic-sliding/sk-logreg",
                   "periodic-expanding/sk-logreg", "periodic-sliding/hgb", "periodic-expanding/hgb", "static/hgb",
                   "online/majority"),
}
"""The strategies of a benchmark by the lake's task (``online/mean``, ``online/persistence`` and
``online/majority`` are the naive baselines, learning as the others do)."""
_CLI_DEFAULTS = {  # --online, --adwin, --batch, --static, --extra: the lists a command line leaves out
    "binary": ("linear", "linear", "sk-logreg,hgb", "sk-logreg,hgb", "periodic-sliding/river-linear"),
    "regression": ("linear,tree,mean,persistence", "linear", "sk-ridge,hgb", "hgb", ""),
    "multiclass": ("linear,tree,majority", "tree", "sk-logreg,hgb", "hgb", ""),
}
EXPERIMENT = "riverlake-benchmark"
DEFAULT_BUDGET = "20m"
"""Wall time the strategies of one benchmark may take together (``--budget``)."""
_PROCESS_START_S = 6.0
"""Seconds a strategy's own process takes to start and import (2-9 s measured on a busy 2-core machine)."""


# --------------------------------------------------------------------------- the flow


@flow(name="benchmark")
def benchmark(
    lake: str = "lakehouse",
    as_of: str | int | None = None,
    labels_as_of: str | int | None = None,
    strategies: list[str] | None = None,
    retrain_every: str | None = "auto",
    sliding: str | None = "auto",
    retrain_every_events: int | None = None,
    sliding_events: int | None = None,
    window: str = "auto",
    seed: int = 42,
    max_train_rows: int | None = None,
    exclude: list[str] | None = None,
    categorical: list[str] | None = None,
    isolate: bool = True,
    tracking_uri: str | None = None,
    experiment: str = EXPERIMENT,
    recovery_window: int = 1_000,
    scenario: str | None = None,
    scenario_params: dict[str, Any] | None = None,
    hash_fields: list[str] | None = None,
    n_buckets: int = 2**20,
    static_rows: int | str | None = "auto",
    budget: str | float | None = DEFAULT_BUDGET,
) -> dict[str, Any]:
    """Pin, replay once, run every strategy on it, score, and write lake rows, report and MLflow runs.

    ``as_of``: events version (or an ISO timestamp pinning both tables), default latest;
    ``labels_as_of``: labels version, default latest at the start. ``retrain_every``,
    ``sliding``: a duration (``7d``; a bare number is seconds), or a number of events as
    ``retrain_every_events``, ``sliding_events``; ``auto`` (see
    :func:`flows.bench.plan.resolve_schedule`, as ``static_rows``: labels the static models
    are fitted on). ``window``: the event-time window of the per-window metrics, a duration of
    :mod:`lake.durations` (``auto``: at most 60 windows). ``isolate``: each strategy in its own
    process. ``budget``: wall time of all strategies together (``"20m"``, seconds, ``None``), see
    :func:`flows.bench.plan.plan_budget`.
    ``hash_fields``/``n_buckets``: text fields (a URL) tokenized and hashed, as in the dataflow.
    """
    logger = get_run_logger()
    started = time.perf_counter()
    lake = os.fspath(lake)
    filled = ensure_history(lake, scenario, scenario_params)
    if filled:
        logger.info("%s", filled)
    from lake.tasks import read_task

    found = read_task(lake)
    task = found.name if found is not None else "binary"
    names = list(strategies or TASK_STRATEGIES[task])
    for name in names:
        StrategySpec.parse(name, task=task)
    budget_s = parse_budget(budget)
    pin = pin_history(lake, as_of, labels_as_of)
    featurizer: dict[str, Any] = {"exclude": sorted(exclude or []), "categorical": sorted(categorical or [])}
    if hash_fields:
        featurizer.update(hash_fields=sorted(hash_fields), n_buckets=n_buckets)
    t = time.perf_counter()
    stream = featurize(lake, pin, featurizer)
    featurize_s = time.perf_counter() - t
    if stream.n_events == 0 or len(stream.arrival) == 0:
        raise UsageError(f"nothing to benchmark in {lake}: {stream.n_events} events, {len(stream.arrival)} labels "
                         f"at events v{pin['events']}, labels v{pin['labels']}")
    chosen = resolve_schedule(stream, retrain_every, sliding, static_rows, retrain_every_events=retrain_every_events,
                              sliding_events=sliding_events)
    for line in chosen.lines:
        logger.info("%s", line)
    config = BenchConfig(seed=seed, retrain_every=chosen.retrain_every, sliding=chosen.sliding,
                         retrain_every_events=chosen.retrain_every_events, sliding_events=chosen.sliding_events,
                         max_train_rows=max_train_rows, static_rows=chosen.static_rows)
    overhead = _PROCESS_START_S if isolate else 0.0
    budget_plan = plan_budget(stream, names, config, budget_s, overhead_s=overhead)
    _log_plan(logger, budget_plan, budget_s)
    if not any(c is not None for c in budget_plan.configs.values()):
        raise UsageError(f"no strategy fits in the budget of {budget_s:,.0f} s: {budget_plan.notes}")
    window_name, window_us = auto_window(stream) if window == "auto" else (window, parse_duration_us(window))
    identity = {"lake": os.path.abspath(lake), "pin": pin, "strategies": names, "config": asdict(config),
                "window_us": window_us, "featurizer": featurizer, "recovery_window": recovery_window,
                "budget_s": budget_s}
    created = datetime.now(UTC)
    benchmark_id = benchmark_id_for(identity, now=created)
    logger.info("benchmark %s: %s task, %d events, %d labels (events v%s, labels v%s), %d strategies", benchmark_id,
                task, stream.n_events, len(stream.arrival), pin["events"], pin["labels"], len(names))

    work = tempfile.mkdtemp(prefix=f"riverlake-{benchmark_id}-")
    try:
        stream_dir = str(stream.save(Path(work) / "stream")) if isolate else None
        runs: list[StrategyRun] = []
        spent = estimated = 0.0
        t_runs = time.perf_counter()
        for i, name in enumerate(names, 1):
            if budget_s is not None and i > 1 and spent > 0 and estimated > 0:
                # re-plan what is left with the estimates scaled by what the runs so far took
                left = [n for n in names[i - 1:] if budget_plan.configs[n] is not None]
                again = plan_budget(stream, left, config, budget_s - (time.perf_counter() - t_runs),
                                    scale=max(1.0, spent / estimated), overhead_s=overhead)
                for n in left:
                    budget_plan.configs[n] = again.configs[n]
                    budget_plan.estimates[n] = again.estimates[n]
                    before = budget_plan.notes.pop(n, None)
                    if n in again.notes:
                        budget_plan.notes[n] = again.notes[n] + " (re-planned: the strategies so far took " \
                            f"{spent / estimated:.1f}x their estimates)"
                        if again.notes[n] != (before or "").split(" (re-planned")[0]:
                            logger.info("%s: %s", n, budget_plan.notes[n])
            cfg = budget_plan.configs[name]
            if cfg is None:
                continue
            progress = StrategyProgress(name, index=i, count=len(names), estimate_s=budget_plan.estimates[name],
                                        log=logger.info)
            t = time.perf_counter()
            run = run_one(quote(stream), stream_dir, name, cfg, work, quote(progress))
            spent += time.perf_counter() - t
            estimated += budget_plan.estimates[name]
            logger.info("%s: %.1f s wall (estimated %.0f s), train %.1f s CPU, predict %.1f s CPU", name,
                        run.costs["wall_s"], budget_plan.estimates[name], run.costs["train_cpu_s"],
                        run.costs["predict_cpu_s"])
            runs.append(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    known = known_drifts(lake, stream)
    reference = next((r for r in runs if r.name.startswith("online/")), runs[0])
    drifts = known if known is not None else detect_drifts(stream, reference.scores, config.threshold,
                                                           min_gap=2 * recovery_window)
    results = [score_strategy(stream, r, window_us=window_us, drifts=drifts, threshold=config.threshold,
                              w=recovery_window) for r in runs]
    ready = add_ready_metrics(stream, results, runs, threshold=config.threshold)
    logger.info("every strategy had a model from event %d on (%s): figures *_ready count from there", ready,
                datetime.fromtimestamp(int(stream.event_time[min(ready, stream.n_events - 1)]) / 1e6, tz=UTC).date())
    strategies_s = time.perf_counter() - started
    report_path = os.path.join(os.path.abspath(lake), "reports", f"benchmark-{benchmark_id}.html")
    info = {k: stream.info[k] for k in ("events_version", "labels_version", "n_events", "n_labels", "n_features",
                                        "unknown_labels", "duplicate_labels", "task")}
    settings = {**asdict(config), "window": window_name, "window_us": window_us, "strategies": names,
                "featurizer": featurizer, "recovery_window": recovery_window, "isolate": isolate,
                "drifts": "known" if known is not None else f"detected by ADWIN on {reference.name}",
                "featurize_s": round(featurize_s, 2), "chosen": list(chosen.lines), "ready_event": ready,
                "budget": {"budget_s": budget_s,
                           "estimates_s": {k: round(v, 1) for k, v in budget_plan.estimates.items()},
                           "notes": budget_plan.notes}}
    write_lake(lake, benchmark_id, window_rows(benchmark_id, results),
               run_rows(benchmark_id, results, info=info, config=settings, report_path=report_path,
                        created_at=created, notes=budget_plan.notes))
    title = f"Online vs batch retraining: {os.path.basename(os.path.abspath(lake))}"
    page = render_html(benchmark_id=benchmark_id, title=title, info=info, config=settings, results=results,
                       drifts=drifts, known=known is not None, figures=plots(stream, results, drifts,
                                                                             known=known is not None),
                       stream=stream)
    write_report(report_path, page)
    from flows.registry import artifact_location, redact_uri, tracking_uri_for

    uri = tracking_uri_for(lake, tracking_uri)
    artifacts = artifact_location(uri)
    params = {"lake": os.path.abspath(lake), "benchmark_id": benchmark_id, **info, **{
        k: (json.dumps(v) if isinstance(v, list | dict) else v) for k, v in settings.items()}}
    strategy_params = {r.name: {"strategy": r.name, "mode": r.name.split("/")[0], "learner": r.name.split("/")[1],
                                "retrain_every": chosen.retrain_every, "sliding": chosen.sliding,
                                "retrain_every_events": chosen.retrain_every_events,
                                "sliding_events": chosen.sliding_events, "seed": seed,
                                "retrain_stride": budget_plan.configs[r.name].retrain_stride,
                                "static_rows": chosen.static_rows, "note": budget_plan.notes.get(r.name, "")}
                       for r in results}
    parent = log_mlflow(tracking_uri=uri, artifact_location=artifacts, experiment=experiment,
                        benchmark_id=benchmark_id, params=params, results=results, strategy_params=strategy_params,
                        report_path=report_path)
    total_s = time.perf_counter() - started
    logger.info("benchmark %s done in %.1f s; report %s; MLflow run %s", benchmark_id, total_s, report_path, parent)
    return {"benchmark_id": benchmark_id, "pin": pin, "info": info, "settings": settings, "report": report_path,
            "mlflow_run_id": parent, "tracking_uri": redact_uri(uri), "seconds": total_s,
            "strategies_seconds": strategies_s,
            "drifts": drifts, "results": {r.name: r.metrics for r in results}, "runs": runs,
            "recovery": {r.name: r.recovery for r in results}, "chosen": list(chosen.lines),
            "notes": dict(budget_plan.notes), "ready_event": ready}


def _log_plan(logger: Any, plan: BudgetPlan, budget_s: float | None) -> None:
    """The estimates, the budget and what it changed, before any strategy runs."""
    total = sum(plan.estimates.values())
    logger.info("estimated %s for %d strategies (%s); budget %s", _secs(plan.total), len(plan.configs),
                ", ".join(f"{k} {_secs(v)}" for k, v in plan.estimates.items()),
                "none" if budget_s is None else _secs(budget_s))
    if plan.notes:
        logger.info("over the budget at full schedule (estimated %s): %s", _secs(total),
                    "; ".join(f"{k}: {v}" for k, v in plan.notes.items()))


def _secs(s: float) -> str:
    return f"{s:,.0f} s" if s < 120 else f"{s / 60:,.1f} min"


# --------------------------------------------------------------------------- CLI


def markdown_table(results: dict[str, dict[str, Any]], *, task: str = "binary") -> str:
    """Per-strategy figures (``{strategy: metrics}``) as the Markdown table BENCHMARKS.md shows, with
    ``task``'s metrics."""
    if task != "binary":
        return _task_markdown_table(results, task)
    cols = [("accuracy", "acc", "{:.4f}"), ("log_loss", "log loss", "{:.4f}"), ("roc_auc", "ROC AUC", "{:.4f}"),
            ("train_cpu_s", "train CPU s", "{:.1f}"), ("predict_cpu_s", "predict CPU s", "{:.2f}"),
            ("peak_rss_mb", "peak MiB", "{:.0f}"), ("model_bytes_max", "model KiB", "{:,.0f}"),
            ("history_rows_max", "rows kept", "{:,.0f}"), ("latency_p50_us", "p50 µs", "{:,.0f}"),
            ("latency_p99_us", "p99 µs", "{:,.0f}"), ("acc_after_drift_mean", "acc after drift", "{:.3f}"),
            ("recovery_events_mean", "recovery events", "{:,.0f}")]
    cols[3:3] = [("accuracy_ready", "acc (all had a model)", "{:.4f}"),
                 ("log_loss_ready", "log loss (all had a model)", "{:.4f}")]
    lines = ["| strategy | " + " | ".join(c[1] for c in cols) + " | not recovered |", "|---" * (len(cols) + 2) + "|"]
    first = next(iter(results.values()), {})
    baseline = {"accuracy": first.get("noskill_accuracy"), "log_loss": first.get("noskill_log_loss"), "roc_auc": 0.5,
                "accuracy_ready": first.get("noskill_accuracy_ready"),
                "log_loss_ready": first.get("noskill_log_loss_ready")}
    rows = list(results.items())
    if first:
        rows.append(("*no skill (base rate)*", baseline))
    for name, m in rows:
        cells = []
        for key, _, fmt in cols:
            v = m.get(key)
            if key == "model_bytes_max" and v is not None:
                v = v / 1024
            cells.append("–" if v is None else fmt.format(v))
        measured = m.get("drifts_measured") if name in results else None
        cells.append("–" if not measured else f"{m['drifts_not_recovered']:.0f} of {measured:.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _task_markdown_table(results: dict[str, dict[str, Any]], task: str) -> str:
    """:func:`markdown_table` of a multiclass or regression benchmark: the task's metrics, overall and from
    the first event at which every strategy had a model, costs, and the no-skill row."""
    from flows.bench.report import LABELS, TASK_METRICS

    metrics = TASK_METRICS[task]
    cols = [(m, LABELS[m], "{:.4f}") for m in metrics] + [
        (f"{m}_ready", f"{LABELS[m]} (all had a model)", "{:.4f}") for m in metrics] + [
        ("train_cpu_s", "train CPU s", "{:.1f}"), ("predict_cpu_s", "predict CPU s", "{:.2f}"),
        ("peak_rss_mb", "peak MiB", "{:.0f}"), ("latency_p50_us", "p50 µs", "{:,.0f}")]
    lines = ["| strategy | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    first = next(iter(results.values()), {})
    rows = list(results.items())
    if first:
        what = "class shares" if task == "multiclass" else "mean of the labels"
        rows.append((f"*no skill ({what})*", {c: first.get(f"noskill_{c}") for c, _, _ in cols}))
    for name, m in rows:
        cells = ["–" if m.get(key) is None else fmt.format(m[key]) for key, _, fmt in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_from_lake(lake: str, benchmark_id: str | None = None) -> dict[str, dict[str, Any]]:
    """``{strategy: metrics}`` of one benchmark (default: the latest) from ``benchmark_runs``."""
    import polars as pl

    from lake.table import read_table

    runs = read_table(lake, "benchmark_runs")
    if benchmark_id is None:
        benchmark_id = runs.sort("created_at").get_column("benchmark_id")[-1]
    rows = runs.filter(pl.col("benchmark_id") == benchmark_id).to_dicts()
    return {r["strategy"]: r for r in rows}


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--lake", default=resolve_lake(), help="lake root (default: $RIVERLAKE_LAKE, else lakehouse)")
    parser.add_argument("--scenario", default=None, help="fill an empty lake with this scenario first")
    parser.add_argument("--n", type=int, default=None, help="--scenario agrawal-drift, urls: number of events")
    parser.add_argument("--hash-fields", default=None, help="text fields tokenized and hashed (default: url for "
                        "--scenario urls)")
    parser.add_argument("--n-buckets", type=int, default=2**20, help="hash space of --hash-fields")
    parser.add_argument("--as-of", default=None, help="events version (or ISO timestamp for both tables); latest")
    parser.add_argument("--labels-as-of", default=None, help="labels version (default: latest at the start)")
    parser.add_argument("--online", default=None, help="River specs learning online (default linear; e.g. "
                        "linear,tree; regression and multiclass lakes: linear,tree and the naive baselines)")
    parser.add_argument("--adwin", default=None, help="River specs with ADWIN-triggered reset (default linear)")
    parser.add_argument("--batch", default=None, help="batch learners retrained periodically "
                        "(sk-logreg, sk-sgd, hgb, river-SPEC; regression: sk-ridge, sk-sgd, hgb; "
                        "default sk-logreg,hgb, on a regression lake sk-ridge,hgb)")
    parser.add_argument("--windows", default="sliding,expanding", help="training windows of the batch learners")
    parser.add_argument("--static", default=None, help="batch learners fitted once (default sk-logreg,hgb; "
                        "regression and multiclass: hgb)")
    parser.add_argument("--extra", default=None,
                        help="more strategies by full name (default periodic-sliding/river-linear on a binary lake)")
    parser.add_argument("--retrain-every", default="auto", help="a period (7d; a bare number is seconds); "
                        "default auto")
    parser.add_argument("--retrain-every-events", type=int, default=None, metavar="N",
                        help="instead of --retrain-every: every N events")
    parser.add_argument("--sliding", default="auto", help="sliding window, a period (28d); default auto")
    parser.add_argument("--sliding-events", type=int, default=None, metavar="N",
                        help="instead of --sliding: the last N events")
    parser.add_argument("--window", default="auto", help="event-time window of per-window metrics, a duration "
                        "(1d; a bare number is seconds); default auto")
    parser.add_argument("--static-rows", default="auto", help="labels the static models are fitted on (default "
                        "auto: the first retrain point's, at least 1,000)")
    parser.add_argument("--budget", default=DEFAULT_BUDGET, help="wall time of all strategies together (30m, "
                        f"seconds, none; default {DEFAULT_BUDGET}): over it, periodic strategies are subsampled "
                        "and the most expensive skipped, and the report says so")
    parser.add_argument("--max-train-rows", type=int, default=None, help="cap on rows per retrain (default none)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--exclude", default="", help="payload fields not used as features (comma list)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: env or LAKE/mlflow.db)")
    parser.add_argument("--experiment", default=EXPERIMENT)
    parser.add_argument("--in-process", action="store_true", help="run strategies in this process (faster start, "
                        "timings and memory less clean)")
    parser.add_argument("--markdown", default=None, help="also write the results table as Markdown to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "alembic", "sqlalchemy", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Settings are checked before the flow starts: a mistake is one line, not a failed flow run.
    from lake.tasks import read_task

    found = read_task(args.lake) if table_version(args.lake, "labels") is not None else None
    task = found.name if found is not None else None  # None: an empty lake a scenario fills (checked by the flow)
    with settings():
        given = (args.online, args.adwin, args.batch, args.static, args.extra)
        names = None
        if any(v is not None for v in given):  # some lists given: the others keep the binary defaults
            defaults = _CLI_DEFAULTS[task or "binary"]
            lists = [d if v is None else v for v, d in zip(given, defaults, strict=True)]
            names = strategy_names(*lists[:3], args.windows, *lists[3:], task=task)
        parse_budget(args.budget)
        static_rows = args.static_rows if args.static_rows == "auto" else int(args.static_rows)
        BenchConfig(retrain_every=None if args.retrain_every == "auto" else args.retrain_every,
                    sliding=None if args.sliding == "auto" else args.sliding,
                    retrain_every_events=args.retrain_every_events, sliding_events=args.sliding_events,
                    max_train_rows=args.max_train_rows, seed=args.seed)
        if args.window != "auto":
            parse_duration_us(args.window)
    if args.scenario is None or table_version(args.lake, "events") is not None:
        pin = {"events": as_version(args.as_of), "labels": as_version(args.labels_as_of)}
        if isinstance(pin["events"], str) or isinstance(pin["labels"], str):
            pin = {"events": None, "labels": None}  # timestamps: checked by the flow itself
        clock = label_clock(args.lake, events_version=pin["events"], labels_version=pin["labels"])
        if clock.n_events == 0 or len(clock.arrival) == 0:
            raise UsageError(f"nothing to benchmark in {args.lake}: {clock.n_events} events, "
                             f"{len(clock.arrival)} labels")
        resolve_schedule(clock, args.retrain_every, args.sliding, static_rows,
                         retrain_every_events=args.retrain_every_events, sliding_events=args.sliding_events)
    hash_fields = args.hash_fields if args.hash_fields is not None else ("url" if args.scenario == "urls" else "")
    hash_fields = [p for p in hash_fields.split(",") if p]
    started = time.perf_counter()
    from flows.registry import use_tracking_uri

    use_tracking_uri(args.tracking_uri)  # not a flow parameter: Prefect stores those
    with embedded_prefect():
        out = benchmark(lake=args.lake, as_of=args.as_of, labels_as_of=args.labels_as_of, strategies=names,
                        retrain_every=args.retrain_every, sliding=args.sliding,
                        retrain_every_events=args.retrain_every_events, sliding_events=args.sliding_events,
                        window=args.window, seed=args.seed,
                        max_train_rows=args.max_train_rows,
                        exclude=[p for p in args.exclude.split(",") if p], isolate=not args.in_process,
                        tracking_uri=None, experiment=args.experiment, scenario=args.scenario,
                        scenario_params={"n": args.n} if args.n else None, hash_fields=hash_fields,
                        n_buckets=args.n_buckets, static_rows=static_rows, budget=args.budget)
    table = markdown_table(out["results"], task=out["info"]["task"])
    print(table)
    s = out["settings"]
    every = s["retrain_every"] or f"{s['retrain_every_events']:,} events"
    window = s["sliding"] or f"{s['sliding_events']:,} events"
    print(f"\nbenchmark {out['benchmark_id']}: {out['info']['n_events']:,} events, {out['info']['n_labels']:,} labels "
          f"(events v{out['pin']['events']}, labels v{out['pin']['labels']}); retrain every {every}, "
          f"sliding window {window}, metric window {s['window']}; drifts: {s['drifts']} ({len(out['drifts'])})")
    for line in out["chosen"]:
        print(f"chosen: {line}")
    ready = out["ready_event"]
    print(f"every strategy had a model from event {ready:,} on: the columns '(all had a model)' count from there; "
          "'no skill': a constant score at the base rate (multiclass: the class shares; regression: the mean)")
    for name, note in out["notes"].items():
        print(f"budget: {name}: {note}")
    print(f"report: {out['report']}\nMLflow: {out['tracking_uri']} run {out['mlflow_run_id']}")
    print(f"benchmark flow {out['seconds']:.1f} s (strategies + scoring {out['strategies_seconds']:.1f} s); "
          f"command {time.perf_counter() - started:.1f} s")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)
