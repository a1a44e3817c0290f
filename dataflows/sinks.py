"""The Delta sink: buffers the rows a dataflow produces and appends them idempotently.

Rows are buffered per (table, shard) and committed when a table's buffer holds
``flush_rows`` rows, when the oldest buffered row is ``flush_seconds`` old, when
Bytewax snapshots (so recovery never skips a buffered row) and at the end. Each
commit carries the Delta app transaction ``(f"{run_id}/{table}/shard-{n}", max seq)``;
after a restart, rows whose ``seq`` was already committed are dropped, so the
lake holds every row exactly once.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from dataflows.items import Output
from lake.schemas import schema_of
from lake.table import TableWriter

log = logging.getLogger(__name__)


def _features_array(dicts: list[dict[str, float]], type_: pa.DataType) -> pa.Array:
    """Map array of feature dicts; a dict shared by several rows is converted once."""
    index: dict[int, int] = {}
    unique: list[dict[str, float]] = []
    take: list[int] = []
    for d in dicts:
        i = index.get(id(d))
        if i is None:
            i = index[id(d)] = len(unique)
            unique.append(d)
        take.append(i)
    keys: list[str] = []
    values: list[float] = []
    offsets = [0]
    for d in unique:
        keys.extend(d)
        values.extend(d.values())
        offsets.append(len(keys))
    arr = pa.MapArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array(keys, pa.string()), pa.array(values, pa.float64()),
        type=type_,
    )
    if len(unique) == len(dicts):
        return arr
    return arr.take(pa.array(take, pa.int32()))


def rows_to_arrow(table: str, rows: list[tuple]) -> pa.Table:
    """Arrow table of ``rows`` (tuples in ``table``'s schema order)."""
    schema = schema_of(table)
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    arrays = []
    for field, col in zip(schema, columns, strict=True):
        if pa.types.is_map(field.type):
            arrays.append(_features_array(list(col), field.type))
        else:
            arrays.append(pa.array(col, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class _Buffer:
    __slots__ = ("rows", "since", "max_seq")

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.since = 0.0
        self.max_seq = -1


class DeltaSinkPartition(StatefulSinkPartition[Output, None]):
    def __init__(self, lake: str, *, run_id: str, flush_rows: int, flush_seconds: float) -> None:
        self.lake = lake
        self.run_id = run_id
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._buffers: dict[tuple[str, int], _Buffer] = {}
        self._writers: dict[tuple[str, int], TableWriter] = {}

    def write_batch(self, values: list[Output]) -> None:
        now = time.monotonic()
        for out in values:
            for table, rows in out.tables.items():
                if not rows:
                    continue
                buf = self._buffers.get((table, out.shard))
                if buf is None:
                    buf = self._buffers[(table, out.shard)] = _Buffer()
                if not buf.rows:
                    buf.since = now
                buf.rows.extend(rows)
                # rows are tuples whose third field is seq
                last = rows[-1][2]
                if last > buf.max_seq:
                    buf.max_seq = max(r[2] for r in rows)
        for key, buf in self._buffers.items():
            if buf.rows and (len(buf.rows) >= self.flush_rows or now - buf.since >= self.flush_seconds):
                self._flush(key, buf)

    def _flush(self, key: tuple[str, int], buf: _Buffer) -> None:
        table, shard = key
        writer = self._writers.get(key)
        if writer is None:
            writer = self._writers[key] = TableWriter(
                self.lake, table, writer_id=f"{self.run_id}/{table}/shard-{shard}")
        data = rows_to_arrow(table, buf.rows)
        written = writer.append(data, position=buf.max_seq)
        log.debug("%s shard %d: %d rows committed (%d skipped as already written)",
                  table, shard, written, len(buf.rows) - written)
        buf.rows = []

    def flush_all(self) -> None:
        for key, buf in self._buffers.items():
            if buf.rows:
                self._flush(key, buf)

    def snapshot(self) -> None:
        # Everything before this snapshot must be in the lake, or recovery would skip it.
        self.flush_all()
        return None

    def close(self) -> None:
        self.flush_all()

    @property
    def stats(self) -> dict[str, Any]:
        return {f"{t}/shard-{s}": (w.commits, w.rows_written, round(w.commit_seconds, 3))
                for (t, s), w in self._writers.items()}


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
    """

    def __init__(self, lake: str | os.PathLike[str], *, run_id: str, partitions: int = 1,
                 flush_rows: int = 200_000, flush_seconds: float = 5.0) -> None:
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

    def list_parts(self) -> list[str]:
        return [f"lake-{i:03d}" for i in range(self.partitions)]

    def part_fn(self, item_key: str) -> int:
        return int(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> DeltaSinkPartition:
        return DeltaSinkPartition(self.lake, run_id=self.run_id, flush_rows=self.flush_rows,
                                  flush_seconds=self.flush_seconds)
