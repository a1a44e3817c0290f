"""The Delta sink: buffers the rows a dataflow produces and appends them idempotently.

Rows are buffered per (table, shard) and committed when a table's buffer holds
``flush_rows`` rows, when the oldest buffered row is ``flush_seconds`` old, when
Bytewax snapshots (so recovery never skips a buffered row) and at the end. In
live runs the small tables people wait for (``urgent_tables``, e.g.
:data:`URGENT_TABLES`: window statistics, alarms, drift actions) are committed as
soon as rows come, on a thread of their own, so a large ``predictions`` commit
never holds them back. Each
commit carries the Delta app transaction ``(f"{run_id}/{table}/shard-{n}", max seq)``;
after a restart, rows whose ``seq`` was already committed are dropped, so the
lake holds every row exactly once. A second process writing with the same run id
is fenced: the first of the two whose commit finds the position moved under it
logs :class:`~lake.errors.WriterFencedError` and stops, the other goes on.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from dataflows.items import Output
from lake.errors import WriterFencedError
from lake.schemas import TABLES
from lake.table import TableWriter

log = logging.getLogger(__name__)

URGENT_TABLES = frozenset({"window_stats", "drift_events", "drift_actions"})
"""Tables committed as soon as rows arrive (or, while one of their commits runs, right after it):
monitoring answers, a few rows at a time, wanted within a second."""


class _Buffer:
    __slots__ = ("parts", "rows", "since", "max_seq")

    def __init__(self) -> None:
        self.parts: list[pa.Table] = []
        self.rows = 0
        self.since = 0.0
        self.max_seq = -1


def _result(future: Future[int]) -> int:
    try:
        return future.result()
    except WriterFencedError as ex:
        # Bytewax may abort without printing the exception: say it here, on one line.
        log.error("%s", ex)
        raise


class DeltaSinkPartition(StatefulSinkPartition[Output, None]):
    """Buffers per (table, shard); commits run on one background thread.

    Delta's Rust writer releases the GIL, so Parquet encoding and the commit
    overlap with the dataflow's Python work. Commits of one writer stay in order
    (a single thread), at most ``max_in_flight`` are queued, and a snapshot or
    close waits for all of them, so recovery never skips an unwritten row.
    """

    def __init__(self, lake: str, *, run_id: str, flush_rows: int, flush_seconds: float,
                 max_in_flight: int = 4, compact_every: int | None = 100,
                 urgent_tables: frozenset[str] = frozenset()) -> None:
        self.urgent_tables = urgent_tables
        self.compact_every = compact_every
        self.lake = lake
        self.run_id = run_id
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_in_flight = max_in_flight
        self._buffers: dict[tuple[str, int], _Buffer] = {}
        self._writers: dict[tuple[str, int], TableWriter] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="riverlake-delta")
        self._urgent_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="riverlake-delta-urgent")
        self._in_flight: deque[Future[int]] = deque()
        self._urgent: dict[tuple[str, int], Future[int]] = {}  # the running commit of each urgent buffer

    def write_batch(self, values: list[Output]) -> None:
        now = time.monotonic()
        for out in values:
            for table, data in out.tables.items():
                if data.num_rows == 0:
                    continue
                buf = self._buffers.get((table, out.shard))
                if buf is None:
                    buf = self._buffers[(table, out.shard)] = _Buffer()
                if not buf.parts:
                    buf.since = now
                buf.parts.append(data)
                buf.rows += data.num_rows
                top = pc.max(data.column("seq")).as_py()
                if top > buf.max_seq:
                    buf.max_seq = top
        for key, buf in self._buffers.items():
            if not buf.parts:
                continue
            if key[0] in self.urgent_tables:
                running = self._urgent.get(key)
                if running is None or running.done():
                    self._flush(key, buf)
            elif buf.rows >= self.flush_rows or now - buf.since >= self.flush_seconds:
                self._flush(key, buf)
        self._reap(block=False)

    def _flush(self, key: tuple[str, int], buf: _Buffer) -> None:
        table, shard = key
        writer = self._writers.get(key)
        if writer is None:
            writer = self._writers[key] = TableWriter(
                self.lake, table, writer_id=f"{self.run_id}/{table}/shard-{shard}",
                compact_every=self.compact_every)
        data = buf.parts[0] if len(buf.parts) == 1 else pa.concat_tables(buf.parts)
        buf.parts, buf.rows = [], 0
        urgent = table in self.urgent_tables
        while not urgent and len(self._in_flight) >= self.max_in_flight:
            _result(self._in_flight.popleft())
        future = (self._urgent_pool if urgent else self._pool).submit(writer.append, data, position=buf.max_seq)
        if urgent:
            self._urgent[key] = future
        self._in_flight.append(future)

    def _reap(self, *, block: bool) -> None:
        while self._in_flight and (block or self._in_flight[0].done()):
            _result(self._in_flight.popleft())  # re-raises a failed commit here

    def flush_all(self) -> None:
        for key, buf in self._buffers.items():
            if buf.parts:
                self._flush(key, buf)
        self._reap(block=True)

    def snapshot(self) -> None:
        # Everything before this snapshot must be in the lake, or recovery would skip it.
        self.flush_all()
        return None

    def close(self) -> None:
        try:
            self.flush_all()
        finally:
            self._pool.shutdown(wait=True)
            self._urgent_pool.shutdown(wait=True)
        for (table, shard), w in self._writers.items():
            log.info("%s shard %d: %d rows in %d commits (%.2f s)", table, shard, w.rows_written,
                     w.commits, w.commit_seconds)


class DeltaSink(FixedPartitionedSink[Output, None]):
    """Writes :class:`Output` rows keyed by shard (``"0"``, ``"1"``, ...) to the lake.

    Parameters
    ----------
    lake
        Lake root.
    run_id
        Identity of the run: part of every writer id, so the same run never writes a row twice.
    partitions
        Number of sink partitions (spread over workers); shards map onto them.
    flush_rows, flush_seconds
        Commit a table's buffer once it holds this many rows or is this old.
    urgent_tables
        Tables committed as soon as rows arrive (live runs: :data:`URGENT_TABLES`).
    part_names
        Names of the partitions (default ``lake-000``, ...); giving the source's names
        places each sink partition on the worker of the same source partition.
    """

    def __init__(self, lake: str | os.PathLike[str], *, run_id: str, partitions: int = 1,
                 flush_rows: int = 25_000, flush_seconds: float = 5.0,
                 urgent_tables: frozenset[str] | set[str] = frozenset(),
                 part_names: list[str] | None = None) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions!r}")
        if flush_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, got {flush_rows!r}")
        if flush_seconds <= 0:
            raise ValueError(f"flush_seconds must be > 0, got {flush_seconds!r}")
        self.lake = os.fspath(lake)
        self.run_id = run_id
        self.partitions = partitions
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        unknown = set(urgent_tables) - set(TABLES)
        if unknown:
            raise ValueError(f"urgent_tables names unknown tables {sorted(unknown)}")
        self.urgent_tables = frozenset(urgent_tables)
        if part_names is not None and len(part_names) != partitions:
            raise ValueError(f"part_names must name {partitions} partitions, got {part_names!r}")
        self.part_names = list(part_names) if part_names is not None else None

    def list_parts(self) -> list[str]:
        return self.part_names or [f"lake-{i:03d}" for i in range(self.partitions)]

    def part_fn(self, item_key: str) -> int:
        return int(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> DeltaSinkPartition:
        return DeltaSinkPartition(self.lake, run_id=self.run_id, flush_rows=self.flush_rows,
                                  flush_seconds=self.flush_seconds, urgent_tables=self.urgent_tables)
