"""Drift reports as a Prefect flow: two windows of the lake → Evidently → HTML/JSON, ``drift_reports``, MLflow.

    python -m flows.drift --lake PATH --reference 2013-03-01/7d --current 2013-12-01/7d
    python -m flows.drift --lake PATH --by version --reference 0 --current 1
    python -m flows.drift --lake PATH --window 1d          # the last day against the day before
    python -m flows.drift --lake PATH --window-events 2000 # the last 2,000 events against the 2,000 before
    python -m flows.drift --lake PATH                      # windows chosen from the data (--window auto)

``--window auto`` (the default, also of the scheduled deployment) takes the shortest of
1h, 6h, 1d, 7d, 28d whose two windows each hold 1,000 events, else the last 2,000
events against the 2,000 before; the choice and its reason are printed. A window that
cannot work is refused in one line before any work.

The logic lives in :mod:`monitoring.evidently_report` (windows, column selection,
Evidently, the summary row); this module is the flow around it:

1. build the report and save ``drift.html``/``drift.json`` (and ``quality.*`` when
   both windows have labels) under ``LAKE/reports/drift/REPORT_ID/``;
2. log it to MLflow (experiment ``riverlake-drift``: parameters, drifted share and
   per-column scores as metrics, the report folder as artifacts), retried with
   backoff: the only step that retries. A rerun replaces the runs of the same report;
3. append the summary row to ``drift_reports`` (idempotent per report id), with the
   MLflow run id, or none when MLflow stayed down: the row is written and the
   flow then fails, so the lake keeps the report and the failure shows.

The store: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///LAKE/mlflow.db`` with artifacts in ``LAKE/mlartifacts``.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.retry import retry_options
from lake.entry import ArgumentParser, run_main
from lake.storage import canonical
from monitoring.evidently_report import (
    DriftReport,
    append_report_row,
    check_windows,
    choose_windows,
    make_report,
)

EXPERIMENT = "riverlake-drift"
_METRIC_NAME = re.compile(r"[^A-Za-z0-9_\-. /]")


def metric_name(prefix: str, column: str) -> str:
    """An MLflow-safe metric name: ``metric_name("drift", "carrier=UA") == "drift.carrier_UA"``."""
    return f"{prefix}.{_METRIC_NAME.sub('_', column)}"


def log_report_to_mlflow(report: DriftReport, *, lake: str, tracking_uri: str | None = None,
                         experiment: str = EXPERIMENT) -> str:
    """Log ``report`` as one MLflow run (params, metrics, the report folder as artifacts); returns its id.

    Runs of an earlier try of the same report id are deleted first, so retries and reruns leave one.
    """
    import time

    from mlflow.entities import Metric, Param, RunTag

    from flows.registry import KIND_TAG, TAG, client_for, ensure_experiment, runs_tagged, tracking_uri_for

    uri = tracking_uri_for(lake, tracking_uri)
    client = client_for(uri)
    exp_id = ensure_experiment(client, experiment, uri)
    for old in runs_tagged(client, exp_id, report_id=report.report_id):
        client.delete_run(old.info.run_id)
    s = report.summary
    tags = {KIND_TAG: "drift-report", TAG + "report_id": report.report_id, TAG + "lake": canonical(lake),
            TAG + "by": report.by}
    if report.run_id:
        tags[TAG + "run_id"] = report.run_id
    run = client.create_run(exp_id, run_name=report.report_id, tags=tags)
    rid = run.info.run_id
    now = int(time.time() * 1000)
    values = {"drifted_share": s.drifted_share, "n_drifted": s.n_drifted, "n_columns": s.n_columns,
              "dataset_drift": float(s.dataset_drift), "reference_rows": report.reference_rows,
              "current_rows": report.current_rows}
    values.update({metric_name("drift", c): v for c, v in s.column_scores.items()})
    values.update({metric_name("quality", k): v for k, v in (report.quality or {}).items()})
    params = {"by": report.by, "reference": report.reference.label, "current": report.current.label,
              "model": report.model or "", "lake_run_id": report.run_id or "",
              "columns": ",".join(report.columns.numerical + report.columns.categorical)[:5000],
              "columns_available": report.columns.available, "drift_share": s.drift_share}
    client.log_batch(rid, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()],
                     params=[Param(k, str(v)) for k, v in params.items()],
                     tags=[RunTag(TAG + "html_path", report.html_path)])
    client.log_artifacts(rid, os.path.dirname(report.json_path), artifact_path="report")
    client.set_terminated(rid)
    return rid


@task(name="build-drift-report", cache_policy=NO_CACHE)
def build_report_task(lake: str, reference: str, current: str, by: str, max_columns: int, model: str | None,
                      run_id: str | None, source: str, exclude: list[str]) -> DriftReport:
    return make_report(lake, reference, current, by=by, max_columns=max_columns, model=model, run_id=run_id,
                       source=source, exclude=tuple(exclude))


@task(name="log-drift-report-to-mlflow", cache_policy=NO_CACHE)
def log_report_task(report: DriftReport, lake: str, tracking_uri: str | None) -> str:
    return log_report_to_mlflow(report, lake=lake, tracking_uri=tracking_uri)


@task(name="write-drift-report-row", cache_policy=NO_CACHE)
def write_row_task(lake: str, report: DriftReport) -> int:
    return append_report_row(lake, report)


@flow(name="drift-report")
def drift_report(lake: str = "lakehouse", reference: str = "", current: str = "",
                 by: Literal["time", "version"] = "time", tracking_uri: str | None = None, max_columns: int = 20,
                 model: str | None = None, run_id: str | None = None,
                 source: Literal["events", "predictions"] = "events", exclude: list[str] | None = None,
                 retries: int = 3, retry_delay_s: float = 2.0) -> dict[str, Any]:
    """Compare two windows of ``lake`` (see :mod:`monitoring.evidently_report` for the window syntax).

    ``model``/``run_id`` choose whose predictions are joined (default: the champion of the
    run covering most of the events); ``source="predictions"`` reports on the model's
    feature map; ``exclude`` names columns to leave out (e.g. calendar fields that
    differ between any two time windows). Returns the summary, paths and MLflow run id.
    """
    logger = get_run_logger()
    if not reference or not current:
        raise ValueError(f"reference and current windows are required, got {reference!r} and {current!r}")
    report = build_report_task(lake, reference, current, by, max_columns, model, run_id, source, list(exclude or ()))
    logger.info("%s: %s vs %s, %d/%d columns drifted (share %.3f) in %.1f s", report.report_id,
                report.reference.label, report.current.label, report.summary.n_drifted, report.summary.n_columns,
                report.summary.drifted_share, report.seconds)
    failure: BaseException | None = None
    try:
        report.mlflow_run_id = log_report_task.with_options(**retry_options(retries, retry_delay_s))(
            report, lake, tracking_uri)
    except Exception as ex:  # noqa: BLE001 - the lake still gets the row; the flow fails below
        failure = ex
        logger.error("MLflow logging failed after %d retries: %s", retries, ex)
    write_row_task(lake, report)
    if failure is not None:
        raise RuntimeError(f"drift report {report.report_id} is in the lake but not in MLflow: {failure}") from failure
    return {"report_id": report.report_id, "drifted_share": report.summary.drifted_share,
            "dataset_drift": report.summary.dataset_drift, "n_columns": report.summary.n_columns,
            "n_drifted": report.summary.n_drifted, "reference_rows": report.reference_rows,
            "current_rows": report.current_rows, "html_path": report.html_path, "json_path": report.json_path,
            "mlflow_run_id": report.mlflow_run_id, "seconds": report.seconds}


def unchanged_since_last_report(lake: str, reference: str, current: str) -> str | None:
    """Why a report of these time windows would repeat one the lake holds (it read ``events`` at the version the
    table is at now: no event arrived since), else None."""
    import polars as pl

    from lake.table import exists, open_table, read_table
    from monitoring.evidently_report import parse_window

    if not exists(lake, "drift_reports"):
        return None
    ref, cur = parse_window(reference, by="time"), parse_window(current, by="time")
    version = open_table(lake, "events").version()
    same = read_table(lake, "drift_reports", columns=[
        "created_at", "by", "reference_start", "reference_end", "current_start", "current_end",
        "reference_version", "report_id"]).filter(
        (pl.col("by") == "time") & (pl.col("reference_version") == version)
        & (pl.col("reference_start") == ref.start) & (pl.col("reference_end") == ref.end)
        & (pl.col("current_start") == cur.start) & (pl.col("current_end") == cur.end)).sort("created_at")
    if same.height == 0:
        return None
    return (f"skipped: report {same['report_id'][-1]} already compares these windows and no event arrived since "
            f"(events at version {version})")


@flow(name="drift-last-vs-previous")
def last_vs_previous(lake: str = "lakehouse", window: str = "auto", window_events: int | None = None,
                     tracking_uri: str | None = None, max_columns: int = 20, model: str | None = None,
                     source: Literal["events", "predictions"] = "events",
                     exclude: list[str] | None = None, skip_unchanged: bool = True) -> dict[str, Any]:
    """The last ``window`` of the events against the one before it (for a scheduled deployment).

    With ``skip_unchanged`` (the default), nothing is written when the lake already holds a report of the same
    windows read at the version ``events`` is still at: an hourly schedule on a lake that did not change adds no
    identical report, HTML file and MLflow run; the result then holds ``skipped`` (the reason).

    ``window``: ``auto`` or a duration (a bare number is seconds); ``window_events``: a number of events
    instead (see :func:`monitoring.evidently_report.choose_windows`); the choice is logged and returned.
    """
    logger = get_run_logger()
    choice = choose_windows(lake, window, events=window_events)
    logger.info("%s", choice)
    if source == "events" and skip_unchanged:
        unchanged = unchanged_since_last_report(lake, choice.reference, choice.current)
        if unchanged is not None:
            logger.info("%s", unchanged)
            return {"skipped": unchanged, "windows": str(choice)}
    out = drift_report(lake, choice.reference, choice.current, by="time", tracking_uri=tracking_uri,
                       max_columns=max_columns, model=model, source=source, exclude=exclude)
    return {**out, "windows": str(choice)}


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.drift", description=__doc__.split("\n")[0])
    parser.add_argument("--lake", default=os.environ.get("RIVERLAKE_LAKE", "lakehouse"))
    parser.add_argument("--reference", default=None, help="START/END (ISO times or a duration), or versions A[-B]")
    parser.add_argument("--current", default=None, help="same syntax as --reference")
    parser.add_argument("--by", default="time", choices=["time", "version"])
    parser.add_argument("--window", default="auto", help="without --reference/--current: the last window vs the "
                        "one before: a duration (1d; a bare number is seconds) or auto (default: chosen from "
                        "the data and printed)")
    parser.add_argument("--window-events", type=int, default=None, metavar="N",
                        help="instead of --window: the last N events vs the N before")
    parser.add_argument("--max-columns", type=int, default=20)
    parser.add_argument("--model", default=None, help="whose predictions to join (default: the champion)")
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--source", default="events", choices=["events", "predictions"])
    parser.add_argument("--exclude", default="", help="columns to leave out, comma-separated")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///LAKE/mlflow.db)")
    args = parser.parse_args(argv)
    from flows.registry import use_tracking_uri

    use_tracking_uri(args.tracking_uri)  # not a flow parameter: Prefect stores those
    exclude = [c.strip() for c in args.exclude.split(",") if c.strip()]
    if (args.reference is None) != (args.current is None):
        parser.error("give both --reference and --current, or neither (then --window)")
    if args.max_columns < 1:
        parser.error(f"--max-columns must be >= 1, got {args.max_columns}")
    # Windows are chosen and checked before the flow starts: a mistake is one line, not a failed flow run.
    by, reference, current = args.by, args.reference, args.current
    if reference is None:
        choice = choose_windows(args.lake, args.window, events=args.window_events)
        print(choice, flush=True)
        by, reference, current = "time", choice.reference, choice.current
    else:
        check_windows(args.lake, reference, current, by=by)
    from flows.registry import use_tracking_uri
    from flows.runtime import embedded_prefect

    use_tracking_uri(args.tracking_uri)  # not a flow parameter: Prefect stores those

    with embedded_prefect():
        result = drift_report(args.lake, reference, current, by=by, tracking_uri=None,
                              max_columns=args.max_columns, model=args.model, run_id=args.run_id,
                              source=args.source, exclude=exclude)
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    run_main(main)
