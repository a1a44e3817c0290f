"""Lake maintenance as a Prefect flow: compact, checkpoint and vacuum every table.

    python -m flows.maintenance --lake lakehouse [--retention-hours 168]

The work is :func:`lake.maintain.maintain`; this flow schedules it (see ``flows.serve``).
It is safe while a dataflow appends: compaction commits only rewrite files that
existed when it started, appends land beside them.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from flows.retry import retry_options
from lake.entry import ArgumentParser, resolve_lake, run_main


@task(**retry_options(2, 5.0))
def maintain_table(lake: str, table: str, retention_hours: int) -> dict[str, Any]:
    from lake.maintain import maintain

    return maintain(lake, [table], retention_hours=retention_hours).get(table, {})


@flow(name="lake-maintenance")
def maintenance(lake: str = "lakehouse", retention_hours: int = 168) -> dict[str, dict[str, Any]]:
    """Compact + checkpoint + vacuum each table that exists in ``lake``."""
    from lake.schemas import TABLES
    from lake.table import exists

    logger = get_run_logger()
    report = {}
    for table in TABLES:
        if exists(lake, table):
            report[table] = maintain_table(lake, table, retention_hours)
            logger.info("%s: %s", table, report[table])
    return report


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.maintenance", description=__doc__.split("\n")[0])
    parser.add_argument("--lake", default=resolve_lake(), help="lake root (default: $RIVERLAKE_LAKE, else lakehouse)")
    parser.add_argument("--retention-hours", type=int, default=168)
    args = parser.parse_args(argv)
    for table, row in maintenance(args.lake, args.retention_hours).items():
        print(table, row)
    return 0


if __name__ == "__main__":
    run_main(main)
