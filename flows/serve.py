"""Serve riverlake's flows as scheduled Prefect deployments (visible in the Prefect UI).

    prefect server start --host 127.0.0.1 --port 4200 &          # the UI and API, loopback only
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve --lake lakehouse

Deployments: model versioning every 5 minutes, champion promotion every 15
minutes, an Evidently drift report every hour (its windows chosen from the data:
``window="auto"``, see :func:`monitoring.evidently_report.choose_windows`; skipped
when no event arrived since the last report), lake maintenance daily; on demand
(Run in the UI, parameters editable there): a replay of the newest history
(:mod:`flows.replay`) and the online-vs-batch benchmark. Each run is a subprocess of this process; stop this process
before the server (SIGTERM pauses the deployments).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from lake.entry import ArgumentParser, run_main


def deployments(lake: str, *, window: str = "auto", window_events: int | None = None) -> list[Any]:
    """The deployments to serve for ``lake`` (built without contacting the API). Their runs find the
    MLflow store as the flows do: ``$MLFLOW_TRACKING_URI`` of the serving process, else the lake's own
    (a URI may hold a password: it is no deployment parameter).

    ``window``: the drift report's windows (``auto``: chosen from the data at each run, or a duration);
    ``window_events``: a number of events per window instead.
    """
    from flows.benchmark import benchmark
    from flows.drift import last_vs_previous
    from flows.maintenance import maintenance
    from flows.promotion import promote
    from flows.replay import replay
    from flows.versioning import version_checkpoints
    from lake.storage import canonical

    lake = canonical(lake)  # an absolute folder, or an object-store URI as given
    return [
        version_checkpoints.to_deployment(
            name="versioning", interval=timedelta(minutes=5), concurrency_limit=1,
            parameters={"lake": lake}),
        promote.to_deployment(
            name="promotion", interval=timedelta(minutes=15), concurrency_limit=1,
            parameters={"lake": lake}),
        last_vs_previous.to_deployment(
            name="drift-report", interval=timedelta(hours=1), concurrency_limit=1,
            parameters={"lake": lake, "window": window, "window_events": window_events}),
        maintenance.to_deployment(
            name="maintenance", cron="17 3 * * *", concurrency_limit=1, parameters={"lake": lake}),
        # on demand (Run in the UI, parameters editable there): the newest history through the dataflow,
        # and online learning against batch retraining on it
        replay.to_deployment(
            name="replay", concurrency_limit=1, parameters={"lake": lake, "model": "linear,tree"}),
        benchmark.to_deployment(
            name="benchmark", concurrency_limit=1, parameters={"lake": lake}),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--lake", default=os.environ.get("RIVERLAKE_LAKE", "lakehouse"))
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else LAKE/mlflow.db)")
    parser.add_argument("--drift-window", default="auto", help="drift report windows: a duration (1d; a bare "
                        "number is seconds) or auto (default: chosen from the data at each run)")
    parser.add_argument("--drift-window-events", type=int, default=None, metavar="N",
                        help="instead of --drift-window: the last N events vs the N before")
    args = parser.parse_args(argv)
    from lake.durations import is_duration

    window = args.drift_window.strip()
    if window != "auto" and not is_duration(window):
        parser.error(f"--drift-window must be auto or a duration (1d), got {window!r}")
    if args.drift_window_events is not None and (window != "auto" or args.drift_window_events < 2):
        parser.error(f"--drift-window-events takes a number >= 2 in place of --drift-window, got "
                     f"{args.drift_window_events}")
    from prefect import serve

    from flows.registry import use_tracking_uri

    use_tracking_uri(args.tracking_uri)  # the flow runs (subprocesses) inherit it
    serve(*deployments(args.lake, window=window, window_events=args.drift_window_events))
    return 0


if __name__ == "__main__":
    run_main(main)
