"""The main job on the embedded default: fill a local lake with a scenario, replay it, run the flows.

    python -m flows.demo [--lake lakehouse] [--scenario flights] [--model linear,hoeffding-tree] [--limit N]

Steps: ingest the scenario; replay it through the dataflow (models, prequential
metrics, drift detectors, window statistics, anomaly scores); version the
checkpoints in MLflow; an Evidently drift report of the last week against the week
before; lake maintenance; a summary.

Every step is idempotent: running it again reuses what the lake already holds.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from lake.entry import ArgumentParser, resolve_lake, run_main


def _report_window(lake: str, wanted: str) -> str:
    """``wanted``, or half the lake's span of event time when it holds less than two such windows."""
    import polars as pl

    from lake.durations import parse_duration_us
    from lake.table import scan_table

    span = scan_table(lake, "events").select(
        (pl.col("event_time").max() - pl.col("event_time").min()).dt.total_seconds()).collect().item()
    if span is None or span >= 2 * parse_duration_us(wanted) / 1e6:
        return wanted
    half = max(1, int(span // 2))
    return f"{half // 3600}h" if half >= 7200 else f"{half}s"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--lake", default=resolve_lake(), help="lake root (default: $RIVERLAKE_LAKE, else lakehouse)")
    parser.add_argument("--scenario", default="flights", help="scenario to ingest (default flights)")
    parser.add_argument("--model", default="linear,hoeffding-tree",
                        help="model specs, champion first (default linear,hoeffding-tree)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N events of the scenario")
    parser.add_argument("--window", default="auto",
                        help="prequential metric window (default: chosen from the data, 1d on flights)")
    parser.add_argument("--exclude", default="tailnum,flight",
                        help="payload fields not used as features (default tailnum,flight: identifiers)")
    parser.add_argument("--report-window", default="7d",
                        help="drift report: the last window of event time against the one before (default 7d)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///LAKE/mlflow.db)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "prefect", "alembic", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from dataflows.online import run_replay
    from lake.ingest import ingest_scenario
    from lake.summary import summarize

    started = time.perf_counter()
    params = {"limit": args.limit} if args.limit else {}
    print(f"[1/6] ingest scenario {args.scenario!r} into {args.lake}", flush=True)
    print(ingest_scenario(args.lake, args.scenario, **params), flush=True)
    print(f"[2/6] replay through the dataflow (models {args.model})", flush=True)
    t = time.perf_counter()
    run_id = run_replay(args.lake, args.model, window=args.window, exclude=args.exclude)
    print(f"      done in {time.perf_counter() - t:.1f} s", flush=True)
    # the flow runs go to ./.prefect (the folder `make ui` serves), not to ~/.prefect
    os.environ.setdefault("PREFECT_HOME", os.path.abspath(".prefect"))
    print(f"      Prefect flow runs are recorded in {os.environ['PREFECT_HOME']} (see them with `make ui`)",
          flush=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # a busy 2-core machine
    from flows.drift import last_vs_previous
    from flows.maintenance import maintenance
    from flows.registry import use_tracking_uri
    from flows.versioning import version_checkpoints

    use_tracking_uri(args.tracking_uri)  # not a flow parameter: Prefect stores those

    print("[3/6] version the model checkpoints in MLflow (Prefect flow)", flush=True)
    versions = version_checkpoints(args.lake)
    print(f"      {len(versions['registered'])} checkpoints registered, {versions['already_synced']} already there "
          f"({versions['tracking_uri']}; see them, and the Prefect UI, with `make ui`)", flush=True)
    window = _report_window(args.lake, args.report_window)
    print(f"[4/6] drift report: the last {window} of event time against the {window} before "
          "(Prefect flow, Evidently)", flush=True)
    report = last_vs_previous(args.lake, window,
                              exclude=sorted({"year", "month", "day", "time_hour", *args.exclude.split(",")} - {""}))
    if "skipped" in report:  # run again on an unchanged lake: the report it made stands
        print(f"      {report['skipped']}", flush=True)
    else:
        print(f"      {report['n_drifted']}/{report['n_columns']} columns drifted (share "
              f"{report['drifted_share']:.2f}); report: {report['html_path']}", flush=True)
    print("[5/6] lake maintenance (Prefect flow)", flush=True)

    for table, row in maintenance(args.lake).items():
        print(f"      maintenance {table}: {row['files_removed_by_compaction']} files compacted into "
              f"{row['files_added_by_compaction']}, {row['files_vacuumed']} vacuumed", flush=True)
    print("[6/6] summary", flush=True)
    print(summarize(args.lake, run_id=run_id))
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
