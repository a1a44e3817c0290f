"""Control signals a running dataflow listens to, read from the lake (the system of record).

A promotion flow appends a row to ``promotions`` naming the model that is now
champion for a run; :class:`PromotionControl` notices it (polling at most every
``interval_s``) and the predict/learn step switches roles between two batches,
so no event is skipped or predicted twice.
"""

from __future__ import annotations

import logging
import os
import time

import polars as pl

from lake.schemas import TABLES
from lake.table import exists, read_table

log = logging.getLogger(__name__)


class PromotionControl:
    """Latest champion decided for ``run_id`` in the lake's ``promotions`` table."""

    def __init__(self, lake: str | os.PathLike[str], run_id: str, *, interval_s: float = 2.0) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s!r}")
        self.lake = os.fspath(lake)
        self.run_id = run_id
        self.interval_s = interval_s
        self._next = 0.0
        self._seen: tuple | None = None

    def poll(self) -> str | None:
        """The champion's model name when a new decision arrived since the last poll, else ``None``."""
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + self.interval_s
        if "promotions" not in TABLES:  # no promotion flow in this installation
            return None
        try:
            if not exists(self.lake, "promotions"):
                return None
            rows = (read_table(self.lake, "promotions", columns=["run_id", "decided_at", "champion"])
                    .filter(pl.col("run_id") == self.run_id))
        except Exception as ex:  # noqa: BLE001 - a control read must never stop the dataflow
            log.warning("could not read promotions for %s: %s", self.run_id, ex)
            return None
        if rows.height == 0:
            return None
        last = rows.sort("decided_at", maintain_order=True).row(-1)
        if last == self._seen:
            return None
        self._seen = last
        return last[2]
