"""Serve riverlake's flows as scheduled Prefect deployments (visible in the Prefect UI).

    prefect server start --host 127.0.0.1 --port 4200 &          # the UI and API, loopback only
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve --lake lakehouse

Deployments: model versioning every 5 minutes, champion promotion every 15
minutes, an Evidently drift report of the last day against the day before every
hour, lake maintenance daily. Each run is a subprocess of this process; stop
this process before the server (SIGTERM pauses the deployments).
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from typing import Any


def deployments(lake: str) -> list[Any]:
    """The deployments to serve for ``lake`` (built without contacting the API). Their runs find the
    MLflow store as the flows do: ``$MLFLOW_TRACKING_URI`` of the serving process, else the lake's own
    (a URI may hold a password: it is no deployment parameter)."""
    from flows.drift import last_vs_previous
    from flows.maintenance import maintenance
    from flows.promotion import promote
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
            parameters={"lake": lake, "window": "1d"}),
        maintenance.to_deployment(
            name="maintenance", cron="17 3 * * *", concurrency_limit=1, parameters={"lake": lake}),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--lake", default=os.environ.get("RIVERLAKE_LAKE", "lakehouse"))
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else LAKE/mlflow.db)")
    args = parser.parse_args(argv)
    from prefect import serve

    from flows.registry import use_tracking_uri

    use_tracking_uri(args.tracking_uri)  # the flow runs (subprocesses) inherit it
    serve(*deployments(args.lake))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
