"""The live lake sink's buffers: a shard's rows per table as the step handed them over, built into Arrow and
packed for a snapshot off the step's thread (:mod:`dataflows.sinks` commits them).

A buffer holds each step's rows as handed over (Arrow, or rows not yet Arrow: :class:`dataflows.rows.StepRows`,
:class:`lake.arrow.PendingRows`). A replay's buffer builds its latest steps into one table every
:data:`BUILD_PARTS` steps on the step's thread; a live one hands them to a thread of low priority as a
:class:`Chunk`, built there and packed as a snapshot's entry, so the prediction path never stops for a build
and a snapshot reuses the packed bytes (:func:`pack_entries`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from functools import partial

import pyarrow as pa

from dataflows import rows, sealed

BUILD_PARTS = 64
BUILD_ROWS = 4_096
"""A buffer's latest steps that are not Arrow yet (:class:`dataflows.rows.StepRows`, ...) are built
into one table once there are this many of them or they hold this many rows: one build for many
steps, and no commit or snapshot waits for a large one."""


class Chunk:
    """(live) A buffer's steps not yet Arrow, built into one table and packed for a snapshot on a thread of
    low priority (:meth:`dataflows.sinks.DeltaSinkPartition._chunk`): the step's thread never builds, and a
    snapshot that finds it done reuses its packed bytes instead of pickling the steps."""

    __slots__ = ("parts", "num_rows", "max_seq", "future")

    def __init__(self, parts: list[rows.Lazy], max_seq: int, future: Future[tuple[pa.Table, bytes]]) -> None:
        self.parts: list[rows.Lazy] | None = parts
        self.max_seq, self.future = max_seq, future
        self.num_rows = sum(p.num_rows for p in parts)
        future.add_done_callback(self._built)

    def _built(self, future: Future[tuple[pa.Table, bytes]]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.parts = None  # the table holds the rows: the steps' Python objects go (less for the collector)

    def ready(self) -> tuple[pa.Table, bytes] | None:
        """``(table, packed)`` once built, else ``None``."""
        f = self.future
        return f.result() if f.done() and not f.cancelled() and f.exception() is None else None

    def table(self) -> pa.Table:
        """The steps as one table: the background build's (waited for), or built here if it was dropped."""
        try:
            return self.future.result()[0]
        except CancelledError:
            return rows.concat(self.parts)

    def plain(self) -> list[pa.Table | rows.Lazy]:
        """What stands for the chunk in a pickle: its table if built, else its steps."""
        parts, done = self.parts, self.ready()
        if done is not None:
            return [done[0]]
        return list(parts) if parts is not None else [self.future.result()[0]]  # (built meanwhile)


Part = pa.Table | rows.Lazy | Chunk


def deferred(data: pa.Table | list[Part]) -> pa.Table | Callable[[], pa.Table]:
    """What the committer gets for a buffer's rows (:meth:`Buffer.take`): its parts are built into one table on the
    committer's thread (:func:`built_table`), not on the step's."""
    return partial(built_table, data) if isinstance(data, list) else data


def built_table(data: pa.Table | list[Part]) -> pa.Table:
    """A buffer's rows as one table (:meth:`Buffer.take`), on the thread that commits them."""
    if not isinstance(data, list):
        return data
    return rows.concat([part.table() if isinstance(part, Chunk) else part for part in data])


class Buffer:
    __slots__ = ("parts", "rows", "since", "max_seq", "lazy", "lazy_rows", "head_start", "build", "flushed")

    def __init__(self, head_start: float = 0.0, flushed: float = 0.0, *, build: bool = True) -> None:
        self.parts: list[Part] = []
        self.rows = 0
        self.since = 0.0
        self.flushed = flushed  # when its rows were last handed to the committer (or it was made)
        # how much older than it is its first rows count (their first commit comes sooner; negative: later)
        self.head_start = head_start
        self.max_seq = -1
        self.lazy = 0  # the last parts not yet Arrow, and their rows
        self.lazy_rows = 0
        # Whether rows not yet Arrow are built here (by the step's thread) every BUILD_PARTS steps; else (live)
        # they are handed to a background thread as a chunk (:class:`Chunk`), so no step waits for a build.
        self.build = build

    def add(self, data: pa.Table | rows.Lazy) -> bool:
        """Add a step's rows; ``True`` where the latest steps not yet Arrow are due for a chunk
        (:meth:`chunk`: a buffer that does not build)."""
        self.parts.append(data)
        self.rows += data.num_rows
        if isinstance(data, pa.Table):
            self.lazy = self.lazy_rows = 0
            return False
        self.lazy += 1
        self.lazy_rows += data.num_rows
        if self.lazy < BUILD_PARTS and self.lazy_rows < BUILD_ROWS:
            return False
        if not self.build:
            return True
        self.parts[-self.lazy:] = [rows.concat(self.parts[-self.lazy:])]
        self.lazy = self.lazy_rows = 0
        return False

    def chunk(self, make: Callable[[list[rows.Lazy]], Chunk]) -> None:
        """Hand the latest steps not yet Arrow to ``make`` (which starts their build) as one chunk."""
        self.parts[-self.lazy:] = [make(self.parts[-self.lazy:])]
        self.lazy = self.lazy_rows = 0

    def take(self) -> pa.Table | list[Part]:
        """Every buffered row as one table, or (a buffer that does not build) as its parts (for :func:`built_table`,
        on the thread that commits them); the buffer is left empty."""
        data = rows.concat(self.parts) if self.build else self.parts
        self.parts, self.rows, self.lazy, self.lazy_rows = [], 0, 0, 0
        return data


def pack_entries(table: str, shard: int, data: pa.Table | list[Part], position: int) -> list[bytes]:
    """Rows of one buffer not known to be in the lake (a commit's, or a buffer's still), packed as a snapshot's
    entries in order: each chunk already built and packed as it is (an entry of its own, at its last position),
    the rest pickled here (chunks still building as their steps)."""
    if not isinstance(data, list):
        return [sealed.pack([(table, shard, data, position)])]
    out: list[bytes] = []
    loose: list[pa.Table | rows.Lazy] = []
    for part in data:
        done = part.ready() if isinstance(part, Chunk) else None
        if done is None:
            loose += part.plain() if isinstance(part, Chunk) else [part]
            continue
        if loose:
            out.append(sealed.pack([(table, shard, loose, max(rows.max_seq(p) for p in loose))]))
            loose = []
        out.append(done[1])
    if loose:
        out.append(sealed.pack([(table, shard, loose, position)]))
    return out


def build_and_pack(table: str, shard: int, parts: list[rows.Lazy], top: int) -> tuple[pa.Table, bytes]:
    """(on the pack thread) A chunk's table, and it packed as a snapshot's entry (:class:`Chunk`)."""
    built = rows.concat(parts)
    return built, sealed.pack([(table, shard, [built], top)])
