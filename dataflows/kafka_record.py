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
The rows not yet committed travel in the snapshot compressed (:mod:`dataflows.sealed`): the
recorder pickles and compresses them in parts of :data:`PART_ITEMS` as they are handed over, so a
snapshot joins parts made earlier and packs only the newest few. An event
row's ``offset`` is :func:`lake_offset` of its partition and Kafka offset, so a
replay orders events of equal ``event_time`` as they arrived.

Split from :mod:`dataflows.kafka`, which re-exports :func:`lake_offset`.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor

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
"""Items per compressed part of what a snapshot holds (~100 KB pickled, ~25 KB compressed for flights events;
packed in ~1 ms on the step, once per item rather than at each snapshot)."""


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
        self._running_parts: list[bytes] = []  # the running commit's items, packed
        self._running_loose: list[tuple] = []  # ... and those not yet packed (at the next snapshot, if any)
        prefix = f"kafka/{topic}/{partition}"
        self._events = TableWriter(lake, "events", writer_id=f"{prefix}/events", compact_every=100)
        self._labels = TableWriter(lake, "labels", writer_id=f"{prefix}/labels", compact_every=100,
                                   schema=None if task == "binary" else task_schema("labels", task))
        self._ev: list[tuple] = []
        self._lb: list[tuple] = []
        # The same items in the order handed over (offset order): full parts packed, the newest loose.
        self._parts: list[bytes] = []
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
        if not self._ev and not self._lb:
            self._since = time.monotonic() - self._head_start
            self._head_start = 0.0
        for item in items:
            (self._ev if item[1] == EVENT else self._lb).append(item)
        self._loose += items
        if len(self._loose) >= PART_ITEMS:
            self._parts.append(sealed.pack(self._loose))
            self._loose = []

    def maybe_flush(self) -> None:
        """Start a commit when the rows are due and none runs (raises a failed commit's error)."""
        if self._running is not None:
            if not self._running.done():
                return
            self._reap()
        n = len(self._ev) + len(self._lb)
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
        ev, self._ev = self._ev, []
        lb, self._lb = self._lb, []
        if ev or lb:
            if self._running is not None:
                self._reap()
            self._running = self._pool.submit(self._commit, ev, lb, gather)
            self._running_parts, self._parts = self._parts, []
            self._running_loose, self._loose = self._loose, []

    def held(self) -> list[bytes]:
        """The items handed over and not known to be committed: packed parts (:func:`dataflows.sealed.pack`) of
        lists of items, in offset order (called at each snapshot: its times phase a commit to come shortly
        before the next one). Only the items since the last full part are pickled here."""
        self._phase.snapshot(time.monotonic())
        out: list[bytes] = []
        if self._running is not None and not (self._running.done() and self._running.exception() is None):
            if self._running_loose:
                self._running_parts.append(sealed.pack(self._running_loose))
                self._running_loose = []
            out += self._running_parts
        if self._loose:
            self._parts.append(sealed.pack(self._loose))
            self._loose = []
        return out + self._parts

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
        self._running_parts, self._running_loose = [], []
        if running is not None:
            running.result()  # re-raises a failed commit here, in the dataflow

    def _commit(self, ev: list[tuple], lb: list[tuple], gather: bool) -> None:
        start = time.monotonic()
        try:
            self._write(ev, lb, gather)
        finally:
            self._phase.expected = time.monotonic() - start  # the phased commit starts at least this early

    def _write(self, ev: list[tuple], lb: list[tuple], gather: bool) -> None:
        if ev:
            self._append(self._events, ev, self._event_rows, gather)
        if lb:
            self._append(self._labels, lb, self._label_rows, gather)
        if self._trace is not None:
            done = ev + lb
            self._trace.mark("recorded", self._partition, min(it[0] for it in done), max(it[0] for it in done))

    def _append(self, writer: TableWriter, items: list[tuple], rows, gather: bool) -> None:
        current = [writer]

        def once() -> None:
            done = current[0].committed_position
            todo = items if done is None else [it for it in items if it[0] > done]
            if todo:  # one commit with the other partitions' rows of the table due now (their app transactions in it)
                committer(record=True).submit(current[0], rows(todo), position=todo[-1][0], gather=gather).result()

        def reopen(ex: BaseException) -> None:
            # Another worker's commit (a new table, a merged column) won the race. The append
            # is idempotent: re-read the table and this writer's position, and try again.
            old = current[0]
            log.info("%s: commit lost a race (%s); retrying", old.writer_id, ex)
            current[0] = TableWriter(old.lake, old.table, writer_id=old.writer_id, compact_every=old.compact_every,
                                     schema=old.schema)
            if old.table == "events":
                self._events = current[0]
                if exists(self._lake, "events"):
                    self._types.adopt(pa.schema(open_table(self._lake, "events").schema().to_arrow()))
            else:
                self._labels = current[0]

        retrying(once, on=CommitFailedError, attempts=_COMMIT_ATTEMPTS, before_retry=reopen)

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
