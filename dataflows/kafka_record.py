"""Recording a Kafka partition's events and labels in the lake, once per Kafka offset.

**Recording.** Given a lake, the source appends every event and label it accepts
to the lake's ``events`` and ``labels`` tables, so today's live stream is
tomorrow's replay. Each partition appends with its own Delta app transaction
``kafka/{topic}/{partition}/{table}`` at the highest Kafka offset it covers, and
drops rows at or below the committed offset: after a restart from the recovery
snapshot (whose offset only passes rows that are committed or held in the
snapshot itself, and a restart commits those first) nothing is skipped and
nothing is written twice, whichever run consumes the topic. Commits run off the
prediction path, through the process's committer (:mod:`dataflows.committer`): the partitions'
commits of a table come due together and are made as one Delta commit carrying every
partition's app transaction; one starts shortly before each
expected snapshot (:class:`dataflows.priority.SnapshotPhase`), so a snapshot holds only the rows since.
Every :data:`PART_ITEMS` items handed over are built into the tables' rows and pickled and compressed
(:mod:`dataflows.sealed`) on the recorder's thread as they come (:class:`_Part`): a commit joins rows built
earlier instead of building them all at once (a burst of Python on four threads that took the interpreter
from the prediction path for a few hundred ms every ``flush_seconds``), and the rows not yet committed
travel in the snapshot as the parts packed earlier, only the newest few packed at the snapshot. An event
row's ``offset`` is :func:`lake_offset` of its partition and Kafka offset, so a
replay orders events of equal ``event_time`` as they arrived.

Split from :mod:`dataflows.kafka`, which re-exports :func:`lake_offset`.
"""

from __future__ import annotations

import bisect
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import pyarrow as pa
from deltalake.exceptions import CommitFailedError

from dataflows import sealed
from dataflows.committer import cohort, committer
from dataflows.items import EVENT
from dataflows.kafka_types import PayloadTypes
from dataflows.priority import SnapshotPhase, lower_writer_priority, table_point
from dataflows.trace import StageTrace
from lake.retry import retrying
from lake.schemas import UTC_TS, task_schema
from lake.table import TableWriter, exists, open_table
from monitoring.tasks import label_value

log = logging.getLogger("dataflows.kafka")  # the name users filter on, as before the split

_PARTITION_SHIFT = 40
_COMMIT_ATTEMPTS = 5
PART_ITEMS = 1_024
"""Items per part (:class:`_Part`): built into rows and packed for a snapshot (~100 KB pickled, ~25 KB
compressed for flights events) on the recorder's thread, once per item rather than at each commit or snapshot."""


class _Rows(NamedTuple):
    """A part's rows of one table and the positions (Kafka offsets) of its items, in order."""

    table: pa.Table
    positions: list[int]


class _Built(NamedTuple):
    events: _Rows | None
    labels: _Rows | None
    packed: bytes | None  # the part's items pickled and compressed (:func:`dataflows.sealed.pack`), for a snapshot


class _Part:
    """Items handed over together (offset order), built into rows and packed on the recorder's thread; a part
    whose build has not finished is built (or packed) where it is needed."""

    __slots__ = ("items", "future", "packed")

    def __init__(self, items: list[tuple], future: Future[_Built] | None = None) -> None:
        self.items = items
        self.future = future
        self.packed: bytes | None = None

    def built(self) -> _Built | None:
        f = self.future
        return f.result() if f is not None and f.done() and not f.cancelled() and f.exception() is None else None

    def pack(self) -> bytes:
        """The part's items packed: the background's bytes, else packed here (once)."""
        if self.packed is None:
            done = self.built()
            self.packed = done.packed if done is not None and done.packed is not None else sealed.pack(self.items)
        return self.packed


def lake_offset(partition: int, kafka_offset: int) -> int:
    """The ``offset`` of a live event in ``events``: increasing with arrival within a partition.

    Unique among one topic's events (up to 2**40 messages per partition) and above
    the offsets an ingest of fewer than 2**40 rows gives.

    >>> lake_offset(0, 7), lake_offset(3, 0) > lake_offset(2, 10**9)
    (1099511627783, True)
    """
    return ((partition + 1) << _PARTITION_SHIFT) + kafka_offset


# --------------------------------------------------------------------------- recording

class PartitionRecorder:
    """Appends the events and labels one partition accepted to the lake, once per Kafka offset.

    Commits run on a thread of the recorder's own, off the prediction path: the
    source hands rows over and goes on polling. One commit runs at a time (rows
    that come meanwhile wait for the next, so a slow commit grows the next one
    rather than a queue). :meth:`held` gives the rows not yet known to be in the
    lake, pickled and compressed (:func:`dataflows.sealed.pack`, parts of lists of
    items in offset order), which the source's snapshot holds beside its offset;
    :meth:`wait` returns once everything handed over is committed.
    """

    def __init__(self, lake: str, topic: str, partition: int, types: PayloadTypes, *, flush_rows: int,
                 flush_seconds: float, trace: StageTrace | None = None, task: str = "binary",
                 phased: bool = False) -> None:
        self._lake, self._partition, self._types = lake, partition, types
        self._task = task
        self._flush_rows, self._flush_seconds = flush_rows, flush_seconds
        self._trace = trace
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"riverlake-record-{partition}",
                                        initializer=lower_writer_priority)
        self._running: Future[None] | None = None
        self._running_parts: list[_Part] = []  # the running commit's items
        prefix = f"kafka/{topic}/{partition}"
        self._events = TableWriter(lake, "events", writer_id=f"{prefix}/events", compact_every=100)
        self._labels = TableWriter(lake, "labels", writer_id=f"{prefix}/labels", compact_every=100,
                                   schema=None if task == "binary" else task_schema("labels", task))
        self._n = 0  # items handed over and not yet handed to a commit
        # The same items in the order handed over (offset order): full parts (building on the recorder's thread,
        # or built), the newest loose.
        self._parts: list[_Part] = []
        self._loose: list[tuple] = []
        self._since = 0.0
        # Every partition's first commit at the same point of flush_seconds (``events``' own, apart from the
        # lake sink's tables): the partitions' commits come due together and are made as one.
        self._head_start = table_point("events", flush_seconds)
        # (``phased``) A commit of everything shortly before each expected snapshot, so a snapshot holds only the
        # rows since. Off by default: the items are packed in parts as they come, so a snapshot of them is cheap,
        # and the commit's burst just before the snapshot cost the prediction path more (see the lake sink's).
        self._phase = SnapshotPhase(start=time.monotonic(), enabled=phased)
        # The topic's partitions in this process: a commit one starts on its own schedule the others join.
        self._cohort = cohort("record", lake, topic)
        self._flushed_at = self._phased_at = time.monotonic()

    def add(self, items: list[tuple]) -> None:
        if not items:
            return
        if not self._n:
            self._since = time.monotonic() - self._head_start
            self._head_start = 0.0
        self._n += len(items)
        self._loose += items
        if len(self._loose) >= PART_ITEMS:
            part = self._loose
            self._parts.append(_Part(part, self._pool.submit(self._build, part)))
            self._loose = []

    def maybe_flush(self) -> None:
        """Start a commit when the rows are due and none runs (raises a failed commit's error)."""
        if self._running is not None:
            if not self._running.done():
                return
            self._reap()
        n = self._n
        if not n:
            return
        now = time.monotonic()
        together = self._cohort
        if self._phase.due(now) or together.follows("phased", self._phased_at):
            if self._phase.due(now):  # this partition leads; the others' phased commits join it
                together.lead("phased", now, within=self._flush_seconds / 2)
            self._phased_at = self._flushed_at = now
            self.flush()
            self._phase.started(now, [self._running])
            # the next periodic commit up to half a period later than flush_seconds (the same point in every
            # partition, so they are still made together), and the next phased one is not the largest
            self._head_start = -table_point("events", self._flush_seconds / 2)
        elif n >= self._flush_rows or (now - self._since >= self._flush_seconds
                                       and not self._phase.holds_back(now, self._flush_seconds)):
            together.lead("events", now, within=self._flush_seconds / 2)
            self._flushed_at = now
            self.flush()
        elif together.follows("events", self._flushed_at):
            self._flushed_at = now
            self.flush()

    def flush(self, *, gather: bool = True) -> None:
        """Start committing every row handed over (after the running commit, if any); without ``gather`` (the
        caller waits for it) the commit does not wait for the other partitions' rows (``Committer.submit``)."""
        if self._n:
            if self._running is not None:
                self._reap()
            parts = self._parts + ([_Part(self._loose)] if self._loose else [])
            self._parts, self._loose, self._n = [], [], 0
            self._running = self._pool.submit(self._commit, parts, gather)
            self._running_parts = parts

    def held(self) -> list[bytes]:
        """The items handed over and not known to be committed: packed parts (:func:`dataflows.sealed.pack`) of
        lists of items, in offset order (called at each snapshot: its times phase a commit to come shortly
        before the next one). Only the items since the last full part are pickled here."""
        self._phase.snapshot(time.monotonic())
        parts: list[_Part] = []
        if self._running is not None and not (self._running.done() and self._running.exception() is None):
            parts += self._running_parts
        if self._loose:  # packed here, and kept as a part (the next snapshot reuses it)
            self._parts.append(_Part(self._loose))
            self._loose = []
        return [part.pack() for part in parts + self._parts]

    def wait(self) -> None:
        """Commit every row handed over; returns when they are in the lake."""
        self.flush(gather=False)
        if self._running is not None:
            self._reap()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)

    def _reap(self) -> None:
        running, self._running = self._running, None
        self._running_parts = []
        if running is not None:
            running.result()  # re-raises a failed commit here, in the dataflow

    def _build(self, items: list[tuple], *, pack: bool = True) -> _Built:
        """(on the recorder's thread) A part's rows of each table, and (``pack``) its items packed for a snapshot."""
        ev = [it for it in items if it[1] == EVENT]
        lb = [it for it in items if it[1] != EVENT]
        return _Built(_Rows(self._event_rows(ev), [it[0] for it in ev]) if ev else None,
                      _Rows(self._label_rows(lb), [it[0] for it in lb]) if lb else None,
                      sealed.pack(items) if pack else None)

    def _commit(self, parts: list[_Part], gather: bool) -> None:
        start = time.monotonic()
        try:
            self._write(parts, gather)
        finally:
            self._phase.expected = time.monotonic() - start  # the phased commit starts at least this early

    def _write(self, parts: list[_Part], gather: bool) -> None:
        # The parts' builds ran before this commit on this thread (one thread: in the order submitted); a part
        # handed over loose, or whose build failed, is built here.
        built = [part.built() or self._build(part.items, pack=False) for part in parts]
        for kind, rows, writer in ((0, self._event_rows, self._events), (1, self._label_rows, self._labels)):
            pieces = [b[kind] for b in built if b[kind] is not None]
            if pieces:
                self._append(writer, pieces, parts, rows, gather, events=kind == 0)
        if self._trace is not None:
            self._trace.mark("recorded", self._partition, parts[0].items[0][0], parts[-1].items[-1][0])

    def _append(self, writer: TableWriter, pieces: list[_Rows], parts: list[_Part], rows, gather: bool, *,
                events: bool) -> None:
        current = [writer]
        fresh = [True]  # the parts' rows were built with the types of now (not after a lost race)
        position = pieces[-1].positions[-1]

        def once() -> None:
            done = current[0].committed_position
            if done is not None and done >= position:
                return
            if fresh[0]:
                data = self._joined(pieces, done)
            else:  # built again from the items, in the types the table has now
                data = rows([it for part in parts for it in part.items
                             if (it[1] == EVENT) == events and (done is None or it[0] > done)])
            # one commit with the other partitions' rows of the table due now (their app transactions in it)
            committer(record=True).submit(current[0], data, position=position, gather=gather).result()

        def reopen(ex: BaseException) -> None:
            # Another worker's commit (a new table, a merged column) won the race. The append
            # is idempotent: re-read the table and this writer's position, and try again.
            old = current[0]
            log.info("%s: commit lost a race (%s); retrying", old.writer_id, ex)
            current[0] = TableWriter(old.lake, old.table, writer_id=old.writer_id, compact_every=old.compact_every,
                                     schema=old.schema)
            fresh[0] = False
            if old.table == "events":
                self._events = current[0]
                if exists(self._lake, "events"):
                    self._types.adopt(pa.schema(open_table(self._lake, "events").schema().to_arrow()))
            else:
                self._labels = current[0]

        retrying(once, on=CommitFailedError, attempts=_COMMIT_ATTEMPTS, before_retry=reopen)

    def _joined(self, pieces: list[_Rows], done: int | None) -> pa.Table:
        """The pieces' rows after position ``done`` (there are some) as one table, payload columns in the order of
        now (a part built earlier may lack a field that came later, or one all null in it)."""
        tables = []
        for piece in pieces:
            skip = 0 if done is None else bisect.bisect_right(piece.positions, done)
            if skip < len(piece.positions):
                tables.append(piece.table.slice(skip) if skip else piece.table)
        if len(tables) == 1:
            return tables[0]
        joined = pa.concat_tables(tables, promote_options="default")
        order = self._types.order
        payload = set(order)
        names = set(joined.column_names)
        return joined.select([n for n in joined.column_names if n not in payload] + [n for n in order if n in names])

    def _event_rows(self, items: list[tuple]) -> pa.Table:
        return self._types.event_rows(items, [lake_offset(self._partition, it[0]) for it in items])

    def _label_rows(self, items: list[tuple]) -> pa.Table:
        task = self._task  # labels in the lake's task's type (validated before they were handed over)
        return pa.table({
            "event_id": pa.array([it[2] for it in items], pa.string()),
            "label": pa.array([label_value(task, it[3]) for it in items],
                              task_schema("labels", task).field("label").type),
            "label_time": pa.array([it[4] for it in items], UTC_TS),
        })
