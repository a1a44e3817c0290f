"""Serve riverlake's flows as scheduled Prefect deployments (visible in the Prefect UI).

    prefect server start --host 127.0.0.1 --port 4200 &          # the UI and API, loopback only
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve --lake lakehouse

Deployments: model versioning every 5 minutes, champion promotion every 15
minutes, an Evidently drift report of the last day against the day before every
hour, lake maintenance daily. Each run is a subprocess of this process; stop
this process before the server (SIGTERM pauses the deployments).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from lake.entry import ArgumentParser, run_main


def deployments(lake: str, *, tracking_uri: str | None = None) -> list[Any]:
    """The deployments to serve for ``lake`` (built without contacting the API)."""
    from flows.drift import last_vs_previous
    from flows.maintenance import maintenance
    from flows.promotion import promote
    from flows.versioning import version_checkpoints
    from lake.storage import canonical

    lake = canonical(lake)  # an absolute folder, or an object-store URI as given
    return [
        version_checkpoints.to_deployment(
            name="versioning", interval=timedelta(minutes=5), concurrency_limit=1,
            parameters={"lake": lake, "tracking_uri": tracking_uri}),
        promote.to_deployment(
            name="promotion", interval=timedelta(minutes=15), concurrency_limit=1,
            parameters={"lake": lake, "tracking_uri": tracking_uri}),
        last_vs_previous.to_deployment(
            name="drift-report", interval=timedelta(hours=1), concurrency_limit=1,
            parameters={"lake": lake, "window": "1d", "tracking_uri": tracking_uri}),
        maintenance.to_deployment(
            name="maintenance", cron="17 3 * * *", concurrency_limit=1, parameters={"lake": lake}),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--lake", default=os.environ.get("RIVERLAKE_LAKE", "lakehouse"))
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: LAKE/mlflow.db)")
    args = parser.parse_args(argv)
    from prefect import serve

    serve(*deployments(args.lake, tracking_uri=args.tracking_uri))
    return 0


if __name__ == "__main__":
    run_main(main)
