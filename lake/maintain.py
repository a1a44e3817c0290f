"""Upkeep of the lake's tables: compaction of small files, Delta checkpoints, log clean-up and vacuum.

The writers (:mod:`lake.table`) compact as they go on long runs; :func:`maintain` is the whole pass that
``python -m lake maintain`` and the maintenance flow (:mod:`flows.maintenance`) run on a schedule.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from lake.table import delta_columns, exists, open_table, writer_properties


def maintain(
    lake: str | os.PathLike[str],
    tables: Iterable[str] | None = None,
    *,
    retention_hours: int = 168,
    dry_run: bool = False,
) -> dict[str, dict[str, Any]]:
    """Compact small files, write a Delta checkpoint, clean the log and vacuum old files.

    Keeps commit time flat on long runs. Files removed more than ``retention_hours``
    ago are deleted (time travel to versions that needed them stops working).
    """
    if retention_hours < 0:
        raise ValueError(f"retention_hours must be >= 0, got {retention_hours!r}")
    from lake.schemas import TABLES

    report: dict[str, dict[str, Any]] = {}
    for name in tables or TABLES:
        if not exists(lake, name):
            continue
        dt = open_table(lake, name)
        before = dt.version()
        compact = {} if dry_run else dt.optimize.compact(writer_properties=writer_properties(delta_columns(dt)))
        dt = open_table(lake, name)
        if not dry_run:
            dt.create_checkpoint()
            dt.cleanup_metadata()
        removed = dt.vacuum(
            retention_hours=retention_hours,
            dry_run=dry_run,
            enforce_retention_duration=False,
        )
        report[name] = {
            "version_before": before,
            "version_after": dt.version(),
            "files_removed_by_compaction": compact.get("numFilesRemoved", 0),
            "files_added_by_compaction": compact.get("numFilesAdded", 0),
            "files_vacuumed": len(removed),
            "dry_run": dry_run,
        }
    return report
