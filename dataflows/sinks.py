"""The Delta sink: buffers the rows a dataflow produces and appends them idempotently.

Rows are buffered per (table, shard) and committed when a table's buffer holds
``flush_rows`` rows, when the oldest buffered row is ``flush_seconds`` old, when
Bytewax snapshots (so recovery never skips a buffered row) and at the end. With
``snapshot_rows`` (live runs) a snapshot does not wait for commits instead: it
holds the rows not yet known to be committed (buffered, or in a commit still
running), pickled as the step handed them over, zstd-compressed and sealed with an HMAC
(:func:`lake.integrity.seal`), and a restart from it commits them first, so recovery
never skips a row and the prediction path never stops for the lake: a commit due
while ``max_in_flight`` are queued waits in its buffer instead of holding up the step,
and the buffers' commits are spread over ``flush_seconds`` (:func:`dataflows.priority.table_point`); with
``phased``, once the snapshot period is known, every buffer is also committed shortly before each expected
snapshot (:class:`dataflows.priority.SnapshotPhase`), so a snapshot holds only the rows since. In
live runs the small tables people wait for (``urgent_tables``, e.g.
:data:`URGENT_TABLES`: window statistics, alarms, drift actions) are committed as
soon as rows come, on a thread of their own, so a large ``predictions`` commit
never holds them back; a buffer is committed at most every ``urgent_interval_s``
(rows that come sooner join the next commit), so a stream that closes windows
faster than that (a fast replay of history) does not spend its CPU on commits. Each
commit carries the Delta app transaction ``(f"{run_id}/{table}/shard-{n}", max seq)``;
after a restart, rows whose ``seq`` was already committed are dropped, so the
lake holds every row exactly once. A second process writing with the same run id
is fenced: the first of the two whose commit finds the position moved under it
logs :class:`~lake.errors.WriterFencedError` and stops, the other goes on.
A step's ``predictions`` and ``learn_log`` (and window statistics) come as rows not yet Arrow
(:class:`dataflows.rows.StepRows`, :class:`lake.arrow.PendingRows`): the buffer builds them,
every :data:`BUILD_PARTS` steps, into one table, equal to the steps' tables concatenated; in live runs
only the thread that commits them builds them, so no step waits for a build.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import partial

import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from dataflows import rows, sealed
from dataflows.committer import Landed, cohort, committer
from dataflows.items import Output
from dataflows.priority import SnapshotPhase, lower_writer_priority, table_point
from dataflows.sink_rows import Buffer, Chunk, Part, build_and_pack, deferred, pack_entries
from lake import integrity
from lake.errors import WriterFencedError
from lake.schemas import TABLES, task_schema
from lake.table import TableWriter

log = logging.getLogger(__name__)

TASK_TABLES = frozenset({"predictions", "learn_log", "metrics", "labels"})
"""Tables whose schema depends on the lake's task (:func:`lake.schemas.task_schema`)."""

URGENT_TABLES = frozenset({"window_stats", "drift_events", "drift_actions"})
"""Tables committed as soon as rows arrive (or, while one of their commits runs, right after it):
monitoring answers, a few rows at a time, wanted within a second."""


def _result(future: Future[Landed]) -> Landed:
    try:
        return future.result()
    except WriterFencedError as ex:
        # Bytewax may abort without printing the exception: say it here, on one line.
        log.error("%s", ex)
        raise


_Pending = tuple[str, int, bytes, int]
"""Rows of an older snapshot not known to be in the lake: ``(table, shard, Arrow IPC stream, position)``."""

_SnapshotRows = tuple[str, bytes]
"""Rows of a snapshot not known to be in the lake: sealed parts (:func:`dataflows.sealed.seal_parts`), each a
compressed pickle of ``[(table, shard, parts, position), ...]``, ``parts`` a buffer's as handed over (Arrow, or
rows not yet Arrow) or a running commit's table (packed beside the commit, so a snapshot reuses it). Older
snapshots: one such pickle compressed (:func:`_framed`), or sealed as it was."""

ROWS_PURPOSE = f"{integrity.RECOVERY_PURPOSE}: lake rows"
"""What the rows a live snapshot holds are sealed for (not interchangeable with a learner's state)."""


_ZSTD_ROWS = b"riverlake rows zstd\n"
"""Marks a snapshot's rows as ``marker + pickle's size (8 bytes, big-endian) + the pickle zstd-compressed``
(before it, the sealed bytes were the pickle itself, which begins with ``\\x80``)."""


def _framed(data: bytes) -> bytes:
    """A pickle compressed with zstd at level 1 for a snapshot: ~1/5 of a live sink's rows (their strings and
    numbers repeat), compressed in ~1 ms a MB; Bytewax's SQLite store writes and drops ~5x fewer bytes."""
    return _ZSTD_ROWS + sealed.compress(data)


def _unframe(framed: bytes) -> bytes:
    """The pickle :func:`_framed` compressed (only once its HMAC checked out)."""
    return sealed.decompress(memoryview(framed)[len(_ZSTD_ROWS):])


def _resumed(resume: list[_Pending] | _SnapshotRows | None) -> list[tuple[str, int, pa.Table, int]]:
    """The rows a snapshot holds as ``(table, shard, table's rows, position)``; its pickle is loaded only once
    its HMAC checked out (a snapshot of an older riverlake holds Arrow IPC streams)."""
    if resume is None:
        return []
    if isinstance(resume, list):
        out = []
        for table, shard, data, position in resume:
            with pa.ipc.open_stream(data) as reader:
                out.append((table, shard, reader.read_all(), position))
        return out
    what = "recovery state of the lake sink"
    if sealed.is_sealed_parts(resume):  # verified before anything is decompressed or unpickled
        pending = [entry for part in sealed.unseal_parts(resume, purpose=ROWS_PURPOSE, what=what) for entry in part]
    elif isinstance(resume, tuple) and len(resume) == 2 and isinstance(resume[1], bytes) \
            and resume[1].startswith(_ZSTD_ROWS):
        integrity.verify(resume[1], resume[0], purpose=ROWS_PURPOSE, what=what)  # before it is decompressed
        pending = pickle.loads(_unframe(resume[1]))  # verified above
    else:  # sealed uncompressed (older riverlake), or not sealed at all (refused there)
        pending = integrity.unseal(resume, purpose=ROWS_PURPOSE, what=what)
    return [(table, shard, rows.concat(parts) if isinstance(parts, list) else parts, position)
            for table, shard, parts, position in pending]


class DeltaSinkPartition(StatefulSinkPartition[Output, _SnapshotRows | None]):
    """Buffers per (table, shard); commits run on the process's committer (:mod:`dataflows.committer`).

    Delta's Rust writer releases the GIL, so Parquet encoding and the commit
    overlap with the dataflow's Python work. The committer makes one commit of a table for
    every partition's buffer of it that is due at the same time (a writer id per shard, each
    app transaction in that commit). Commits of one writer stay in order and at most
    ``max_in_flight`` of a partition are queued. A snapshot waits
    for every commit, or, with ``snapshot_rows``, takes the rows not yet committed
    (``resume`` gives them back, committed before anything else); close waits for
    every commit. With ``snapshot_rows`` nothing the step calls waits for the lake: a
    buffer due while ``max_in_flight`` commits are queued stays buffered until one is
    done, and a snapshot pickles the rows as they are (it builds no Arrow).
    """

    def __init__(self, lake: str, *, run_id: str, flush_rows: int, flush_seconds: float,
                 max_in_flight: int | None = None, compact_every: int | None = 100,
                 urgent_tables: frozenset[str] = frozenset(), urgent_interval_s: float = 0.5,
                 snapshot_rows: bool = False, resume: list[_Pending] | _SnapshotRows | None = None,
                 phased: bool = False,
                 task: str = "binary",
                 background: bool | None = None) -> None:
        self.task = task
        self.snapshot_rows = snapshot_rows
        self.urgent_tables = urgent_tables
        self.urgent_interval_s = urgent_interval_s
        self.compact_every = compact_every
        self.lake = lake
        self.run_id = run_id
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        # (live) 8: a phased commit hands every table over at once, in every partition, and the committer makes
        # one commit per table of them; with fewer places a partition's last tables came later, on their own.
        self.max_in_flight = max_in_flight if max_in_flight is not None else 8 if snapshot_rows else 4
        self._buffers: dict[tuple[str, int], Buffer] = {}
        self._writers: dict[tuple[str, int], TableWriter] = {}
        # Live (snapshot_rows) and serving (``background``): nothing on the prediction path waits for a
        # commit, so commits take the CPU it leaves; in a replay a snapshot waits for them and they run at
        # the usual priority.
        low = snapshot_rows if background is None else background
        self._committer = committer(low=low)
        self._urgent_committer = committer(urgent=True)
        # (live) The process's partitions of this run: a table's commit one of them starts on its own schedule
        # the others join at their next batch, so the committer makes it one commit (dataflows.committer).
        self._cohort = cohort("sink", os.fspath(lake), run_id) if snapshot_rows else None
        self._phased_at = -math.inf  # when this partition last started a phased commit
        # (live) The phased commit's rows pickled and compressed beside it, at a low priority, for the snapshot
        # that comes while it runs (they are most of what that snapshot holds): the snapshot reuses them. (Not
        # every commit's: that pickled ~4 MB/s of rows, ~15 ms of the GIL a second, for one snapshot in 10 s.)
        self._pack_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="riverlake-pack",
                                             initializer=lower_writer_priority) if snapshot_rows else None
        self._packed: dict[Future[Landed], Future[list[bytes]]] = {}
        # Each commit with its rows, kept until it is known to be in the lake (a snapshot holds them).
        self._in_flight: deque[tuple[Future[Landed], str, int, pa.Table | list[Part], int]] = deque()
        self._urgent: dict[tuple[str, int], Future[Landed]] = {}  # the running commit of each urgent buffer
        self._urgent_at: dict[tuple[str, int], float] = {}  # when each urgent buffer's last commit started
        self._landed: dict[tuple[str, int], int] = {}  # the highest position known committed per buffer
        self._catch_up: list[tuple[str, int]] = []  # buffers of this period's phased commit still to start
        self._took: dict[str, float] = {}  # how long each table's last commit took
        for table, shard, data, position in _resumed(resume):
            # The rows the snapshot held: committed now, before any row after them (rows of them a
            # commit had already written are dropped by the writer's position).
            self._writer((table, shard)).append(data, position=position)
        # (live, ``phased``) Every buffer is committed shortly before each expected snapshot (the first due a
        # snapshot period from now), so a snapshot holds only the rows since then. Off by default: a snapshot
        # reuses the chunks packed in the background and pickles only the steps since, so the burst of every
        # table's commit just before it cost the prediction path more than it saved (p99 170-194 against
        # 121-138 ms at 5,000 messages/s, BENCHMARKS).
        self._phase = SnapshotPhase(start=time.monotonic(), enabled=phased)

    def write_batch(self, values: list[Output]) -> None:
        now = time.monotonic()
        for out in values:
            for table, data in out.tables.items():
                if data.num_rows == 0:
                    continue
                buf = self._buffers.get((table, out.shard))
                if buf is None:
                    buf = self._buffers[(table, out.shard)] = self._new_buffer(table, now)
                if not buf.parts:
                    buf.since, buf.head_start = now - buf.head_start, 0.0
                due = buf.add(data)
                top = rows.max_seq(data)
                if top > buf.max_seq:
                    buf.max_seq = top
                if due:
                    buf.chunk(partial(self._chunk, table, out.shard))
        together = self._cohort
        for key, buf in self._buffers.items():
            if not buf.parts:
                continue
            table = key[0]
            if table in self.urgent_tables:
                running = self._urgent.get(key)
                if running is not None and not running.done():
                    continue
                if now - self._urgent_at.get(key, -math.inf) >= self.urgent_interval_s:
                    if together is not None:
                        together.lead(table, now, within=self.urgent_interval_s / 2)
                elif together is None or not together.follows(table, buf.flushed):
                    continue
                self._urgent_at[key] = buf.flushed = now
                self._flush(key, buf)
            elif buf.rows >= self.flush_rows or (now - buf.since >= self.flush_seconds and not (
                    self.snapshot_rows and self._phase.holds_back(now, self.flush_seconds))):
                if self._flush(key, buf, wait=not self.snapshot_rows):
                    buf.flushed = now
                    if together is not None:
                        together.lead(table, now, within=self.flush_seconds / 2)
            elif together is not None and together.follows(table, buf.flushed) and self._flush(key, buf, wait=False):
                buf.flushed = now
        if self.snapshot_rows and (self._catch_up or self._phase.due(now)
                                   or self._cohort.follows("phased", self._phased_at)):
            self._phased_commit(now)
        self._reap(block=False)

    def _phased_commit(self, now: float) -> None:
        """(live) Start committing every buffer (but the urgent ones) before the expected snapshot; a buffer
        that finds ``max_in_flight`` commits queued is started by a later batch."""
        if not self._catch_up and self._phase.due(now):  # this partition leads: the others' phased commits join it
            self._cohort.lead("phased", now, within=self.flush_seconds / 2)
        self._phased_at = now
        keys = self._catch_up or [key for key, buf in self._buffers.items()
                                  if buf.parts and key[0] not in self.urgent_tables]
        started, self._catch_up = [], []
        for key in keys:
            buf = self._buffers[key]
            if not buf.parts:
                continue
            if self._flush(key, buf, wait=False, pack=True):
                buf.flushed = now
                started.append(self._in_flight[-1][0])
                # this buffer's next periodic commit comes up to half a period later than flush_seconds (its
                # table's point, the same in every partition: the tables' commits stay spread, each table's
                # buffers in all partitions come due together, and the next phased one is not the largest)
                buf.head_start = -table_point(key[0], self.flush_seconds / 2)
            else:
                self._catch_up.append(key)
        self._phase.started(now, started)

    def _chunk(self, table: str, shard: int, parts: list[rows.Lazy]) -> Chunk:
        """(live) ``parts`` (a buffer's latest steps) built into one table and packed for a snapshot on the pack
        thread (low priority): work the step's thread used to do, ~20 ms for 64 steps of four models."""
        top = max(rows.max_seq(p) for p in parts)
        return Chunk(parts, top, self._pack_pool.submit(build_and_pack, table, shard, parts, top))

    def _new_buffer(self, table: str, now: float) -> Buffer:
        if not self.snapshot_rows:
            return Buffer(flushed=now)
        if table in self.urgent_tables:
            return Buffer(flushed=now, build=False)
        # (live) Each buffer commits every flush_seconds from its first rows; the tables' first commits are
        # spread over that period, so their commits (bursts of Parquet encoding on the cores the prediction
        # path runs on) come one by one instead of all at once. A table's point is the same in every
        # partition: its shards' buffers come due together and the committer makes them one commit.
        return Buffer(head_start=table_point(table, self.flush_seconds), flushed=now, build=False)

    def _writer(self, key: tuple[str, int]) -> TableWriter:
        writer = self._writers.get(key)
        if writer is None:
            table, shard = key
            writer = self._writers[key] = TableWriter(
                self.lake, table, writer_id=f"{self.run_id}/{table}/shard-{shard}",
                compact_every=self.compact_every,
                schema=task_schema(table, self.task) if table in TASK_TABLES and self.task != "binary" else None)
        return writer

    def _flush(self, key: tuple[str, int], buf: Buffer, *, wait: bool = True, pack: bool = False,
               gather: bool = True) -> bool:
        """Commit ``buf``; a non-urgent commit waits for a place among ``max_in_flight``, or, without ``wait``,
        is left for a later call (then ``False``). With ``pack`` (the phased commit, which the next snapshot
        finds running), its rows are also packed for that snapshot beside the commit. Without ``gather`` (the
        caller waits for it) the commit does not wait for the other partitions' buffers of the table."""
        table, shard = key
        urgent = table in self.urgent_tables
        if not urgent:
            self._reap(block=False)
            if not wait and len(self._in_flight) >= self.max_in_flight:
                return False
        writer = self._writer(key)
        while not urgent and len(self._in_flight) >= self.max_in_flight:
            self._reap_one()
        data = buf.take()
        if urgent:
            future = self._urgent[key] = self._urgent_committer.submit(writer, deferred(data), position=buf.max_seq,
                                                                       gather=gather)
        else:
            future = self._committer.submit(writer, deferred(data), position=buf.max_seq, gather=gather)
            future.add_done_callback(lambda f, table=table: self._note_took(table, f))
        self._in_flight.append((future, table, shard, data, buf.max_seq))
        if pack and self._pack_pool is not None:
            self._packed[future] = self._pack_pool.submit(pack_entries, table, shard, data, buf.max_seq)
        return True

    def _note_took(self, table: str, future: Future[Landed]) -> None:
        """(on the committer's thread) Note how long a table's commit took: the phased commit before a snapshot
        starts early enough for every table's commit, one after the other, to be done by then."""
        if not future.cancelled() and future.exception() is None:
            self._took[table] = future.result().seconds
            self._phase.expected = sum(list(self._took.values()))

    def _reap(self, *, block: bool) -> None:
        while self._in_flight and (block or self._in_flight[0][0].done()):
            self._reap_one()

    def _reap_one(self) -> None:
        """Wait for the oldest commit in flight (re-raising its failure) and note its position as landed."""
        future, table, shard, _, position = self._in_flight.popleft()
        self._packed.pop(future, None)
        _result(future)
        self._landed[(table, shard)] = max(position, self._landed.get((table, shard), -1))

    def handed(self) -> dict[tuple[str, int], int]:
        """The highest position handed over per (table, shard), committed or not (for :meth:`landed`)."""
        return {key: buf.max_seq for key, buf in self._buffers.items() if buf.max_seq >= 0}

    def landed(self, marks: dict[tuple[str, int], int]) -> bool:
        """Whether the lake holds every row up to ``marks`` (a :meth:`handed` of before): what a caller that
        does not wait for commits checks between batches (commits are seen as they are reaped)."""
        self._reap(block=False)
        return all(self._landed.get(key, -1) >= position for key, position in marks.items())

    def flush_all(self) -> None:
        for key, buf in self._buffers.items():
            if buf.parts:
                self._flush(key, buf, gather=False)  # waited for here: the other partitions' may come only after
        self._reap(block=True)

    def snapshot(self) -> _SnapshotRows | None:
        # Recovery must not skip a row before this snapshot: they are all committed now, or (live)
        # the ones not yet known to be in the lake travel in it and the dataflow does not wait.
        if not self.snapshot_rows:
            self.flush_all()  # a second process with this run id is fenced here, before its snapshot
            return None
        self._phase.snapshot(time.monotonic())
        self._catch_up = []  # the last period's phased commit: its buffers commit on their periodic schedule now
        self._reap(block=False)
        # The rows as they are, pickled (building the buffers' last steps into Arrow and writing IPC streams
        # took 2-5x as long), compressed (Bytewax writes the snapshot into SQLite on this thread: each MB
        # saved there is worth more than compressing it), sealed with an HMAC: a restart decompresses and
        # unpickles them only once the tag checks out. A running commit's rows were packed beside it.
        parts = []
        for future, table, shard, data, position in self._in_flight:
            if future.done() and future.exception() is None:
                continue
            packing = self._packed.get(future)
            if packing is not None and packing.done() and packing.exception() is None:
                parts += packing.result()
            else:
                parts += pack_entries(table, shard, data, position)
        # A buffer's chunks already built and packed are reused as they are; the rest of its rows are pickled here.
        for (table, shard), buf in self._buffers.items():
            if buf.parts:
                parts += pack_entries(table, shard, buf.parts, buf.max_seq)
        return sealed.seal_parts(parts, purpose=ROWS_PURPOSE) if parts else None

    def abort(self) -> None:
        """Stop after a failed commit, committing nothing more: queued commits are dropped (their rows are
        not known to be in the lake, so a restart writes them), a running one is waited for."""
        futures = [entry[0] for entry in self._in_flight]
        for future in futures:
            future.cancel()  # only one not started yet
        wait(futures)
        self._stop_packing()
        self._buffers.clear()
        self._in_flight.clear()

    def _stop_packing(self) -> None:
        if self._pack_pool is not None:
            self._pack_pool.shutdown(wait=True, cancel_futures=True)
        self._packed.clear()

    def close(self) -> None:
        try:
            self.flush_all()
        finally:
            wait([entry[0] for entry in self._in_flight])
            self._stop_packing()
        for (table, shard), w in self._writers.items():
            log.info("%s shard %d: %d rows in %d commits (%.2f s)", table, shard, w.rows_written,
                     w.commits, w.commit_seconds)


class DeltaSink(FixedPartitionedSink[Output, _SnapshotRows | None]):
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
    urgent_interval_s
        The least time between two commits of one urgent table's buffer.
    snapshot_rows
        Snapshots hold the rows not yet committed instead of waiting for their commits
        (live runs: a snapshot never holds up a prediction).
    part_names
        Names of the partitions (default ``lake-000``, ...); giving the source's names
        places each sink partition on the worker of the same source partition.
    """

    def __init__(self, lake: str | os.PathLike[str], *, run_id: str, partitions: int = 1,
                 flush_rows: int = 25_000, flush_seconds: float = 5.0,
                 urgent_tables: frozenset[str] | set[str] = frozenset(),
                 part_names: list[str] | None = None, urgent_interval_s: float = 0.5,
                 snapshot_rows: bool = False, task: str = "binary") -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions!r}")
        if flush_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, got {flush_rows!r}")
        if flush_seconds <= 0:
            raise ValueError(f"flush_seconds must be > 0, got {flush_seconds!r}")
        if urgent_interval_s < 0:
            raise ValueError(f"urgent_interval_s must be >= 0, got {urgent_interval_s!r}")
        self.urgent_interval_s = urgent_interval_s
        self.snapshot_rows = snapshot_rows
        self.task = task  # the lake's (lake.tasks): the schema of its predictions, learn_log, metrics, labels
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

    def build_part(self, step_id: str, for_part: str,
                   resume_state: list[_Pending] | _SnapshotRows | None) -> DeltaSinkPartition:
        return DeltaSinkPartition(self.lake, run_id=self.run_id, flush_rows=self.flush_rows,
                                  flush_seconds=self.flush_seconds, urgent_tables=self.urgent_tables,
                                  urgent_interval_s=self.urgent_interval_s, snapshot_rows=self.snapshot_rows,
                                  resume=resume_state, task=self.task)
