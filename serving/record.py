"""Recording what the server accepted: served events and labels appended to ``events`` and
``labels`` once per position (:class:`Recorder`), at offsets apart from ingested and Kafka ones.

Split from :mod:`serving.engine`.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from zlib import crc32

import pyarrow as pa

from dataflows.items import EVENT
from dataflows.kafka import PayloadTypes
from dataflows.priority import lower_writer_priority
from lake.schemas import UTC_TS, task_schema
from lake.table import TableWriter
from lake.tasks import Task
from monitoring.tasks import label_value
from serving.config import ServeConfig


def serving_offset(server_id: str, seq: int) -> int:
    """The ``events.offset`` of a served event: increasing with ``seq``, apart from ingested and Kafka offsets.

    >>> serving_offset("a", 1) - serving_offset("a", 0), serving_offset("a", 0) > (4096 << 40)
    (1, True)
    """
    return ((1 << 21) + crc32(server_id.encode()) % (1 << 21)) << 40 | seq


class Recorder:
    """Appends the served events and accepted labels to ``events`` and ``labels`` once per position."""

    def __init__(self, config: ServeConfig, types: PayloadTypes) -> None:
        self.config = config
        self.types = types
        sid = config.server_id
        labels = task_schema("labels", config.task) if config.task != "binary" else None  # the task's label type
        self._writers = {t: TableWriter(config.lake, t, writer_id=f"{sid}/{t}", compact_every=100,
                                        schema=labels if t == "labels" else None)
                         for t in ("events", "labels")}
        self._pending: dict[str, list[tuple]] = {"events": [], "labels": []}
        self._since = 0.0
        # Nothing a request waits for is in these commits (the log holds the positions): they take the CPU
        # the requests leave.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serving-record",
                                        initializer=lower_writer_priority)
        self._running: Future | None = None
        self._running_marks: dict[str, int] = {}
        self._handed = {"events": -1, "labels": -1}  # the highest position added per table
        self._landed = {"events": -1, "labels": -1}  # ... and known committed

    def add(self, items: list[tuple]) -> None:
        if not items:
            return
        if not self._pending["events"] and not self._pending["labels"]:
            self._since = time.monotonic()
        pending, handed = self._pending, self._handed
        for item in items:
            table = "events" if item[1] == EVENT else "labels"
            pending[table].append(item)
            handed[table] = item[0]

    def handed(self) -> dict[str, int]:
        """The highest position added per table, committed or not (for :meth:`landed`)."""
        return dict(self._handed)

    def landed(self, marks: dict[str, int]) -> bool:
        """Whether the lake holds every row up to ``marks`` (a :meth:`handed` of before); does not wait."""
        running = self._running
        if running is not None and running.done() and running.exception() is None:
            self._settled()
        return all(self._landed[t] >= position for t, position in marks.items())

    def _settled(self) -> None:
        for table, position in self._running_marks.items():
            self._landed[table] = max(self._landed[table], position)

    def maybe_flush(self, *, force: bool = False) -> None:
        n = len(self._pending["events"]) + len(self._pending["labels"])
        if not n or (self._running is not None and not self._running.done() and not force):
            return
        if force or n >= self.config.flush_rows or time.monotonic() - self._since >= self.config.flush_seconds:
            if self._running is not None:
                self._running.result()  # one commit at a time, in order; re-raises a failure
                self._settled()
            todo = {t: (rows, self._rows(t, rows)) for t, rows in self._pending.items() if rows}
            self._pending = {"events": [], "labels": []}
            self._running_marks = {t: items[0][-1][0] for t, items in todo.items()}
            self._running = self._pool.submit(self._commit, todo)

    def _commit(self, todo: dict[str, tuple[list[tuple], Any]]) -> None:
        for table, (items, build) in todo.items():
            writer = self._writers[table]
            done = writer.committed_position
            keep = items if done is None else [it for it in items if it[0] > done]
            if keep:
                writer.append(build(keep), position=keep[-1][0])

    def _rows(self, table: str, items: list[tuple]):
        """A function building the table's rows (called on the writer thread, after filtering)."""
        if table == "labels":
            task = self.config.task
            return lambda its: pa.table({
                "event_id": pa.array([it[2] for it in its], pa.string()),
                "label": pa.array([label_value(task, it[3]) for it in its], Task(task).label_type),
                "label_time": pa.array([it[4] for it in its], UTC_TS),
            })
        order = list(self.types.order)  # the column order as of now (new fields are appended)
        sid = self.config.server_id
        types = self.types

        def build(its: list[tuple]) -> pa.Table:
            return types.event_rows(its, [serving_offset(sid, it[0]) for it in its], order=order)

        return build

    def wait(self) -> None:
        """Commit everything added and wait for it."""
        self.maybe_flush(force=True)
        if self._running is not None:
            self._running.result()
            self._settled()

    def close(self) -> None:
        self.wait()
        self._pool.shutdown(wait=True)

    def abort(self) -> None:
        """Stop without committing more: a queued commit is dropped, a running one is waited for."""
        self._pool.shutdown(wait=True, cancel_futures=True)
