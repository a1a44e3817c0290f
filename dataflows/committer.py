"""One Delta commit per table for all of a process's writers of it that are due together.

A live flow on one worker has a lake sink partition per shard and a Kafka recorder per
partition, each with its own writer id per table (``{run_id}/{table}/shard-{n}``,
``kafka/{topic}/{p}/events``): left to themselves they make one commit per table and
writer where one would do, and a commit's CPU is mostly its fixed part (reading the log,
writing the commit, ~5 ms) and the table's files. They hand their rows to a
:class:`Committer` instead (:func:`committer`, one per process and lane): it gathers the
entries of one table that come while a commit runs, or within :data:`GATHER_S` of the first
(less once every writer seen lately has one queued), and commits them together with
:func:`lake.table.append_together`, each writer's app transaction in the same commit. What
each writer guarantees alone stays: idempotence, fencing, stopping after a failure
(see :func:`~lake.table.append_together` for a combined commit that one writer's fencing refuses).

Commits of one lane run one after the other on one thread (a table's entries in the order
handed over, so one writer's commits stay in order), the live lane's at a low priority
(:func:`dataflows.priority.lower_writer_priority`): Parquet encoding bursts do not pile up on
the cores the prediction path runs on. A lane's thread stops when idle and starts again on
the next entry. Futures give :class:`Landed`; cancelling one before its commit starts
drops its entry (a sink that aborts).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from dataflows.priority import lower_writer_priority
from lake.table import TableWriter, append_together

GATHER_S = 0.05
"""How long the first entry of a table waits for the other writers of that table (live commits are off the
prediction path: a few tens of ms cost nothing there, and four commits become one)."""

RECORD_GATHER_S = 0.25
"""The same for the Kafka recorders' lane: each builds its rows (Python, from the consumed items) on a thread of
its own at a low priority before it hands them over, so theirs come over a longer spell; nobody waits on them
(a recovery snapshot holds what is not committed yet)."""

RECENT_S = 30.0
"""Writers that handed a table rows this recently are waited for (up to :data:`GATHER_S`)."""

IDLE_S = 5.0
"""A lane's thread stops after this long without entries."""


class Landed(NamedTuple):
    """A committed entry: its rows written (0 if already in the lake) and how long its commit took."""

    rows: int
    seconds: float


@dataclass
class _Entry:
    writer: TableWriter
    data: Any
    position: int
    at: float
    gather: bool
    future: Future[Landed] = field(default_factory=Future)


class Committer:
    """Commits writers' entries, one Delta commit per table for the entries due together (see the module)."""

    def __init__(self, *, low: bool, name: str, gather_s: float = GATHER_S, recent_s: float = RECENT_S,
                 idle_s: float = IDLE_S) -> None:
        if gather_s < 0 or recent_s < 0 or idle_s <= 0:
            raise ValueError(f"gather_s and recent_s must be >= 0 and idle_s > 0, got {gather_s!r}, "
                             f"{recent_s!r}, {idle_s!r}")
        self.low, self.name = low, name
        self.gather_s, self.recent_s, self.idle_s = gather_s, recent_s, idle_s
        self.commits = 0  # Delta commits made (for measurements)
        self._cond = threading.Condition()
        self._queue: deque[_Entry] = deque()
        self._seen: dict[str, dict[str, float]] = {}  # per table uri: writer id -> when it last handed rows
        self._thread: threading.Thread | None = None

    def submit(self, writer: TableWriter, data: Any, *, position: int, gather: bool = True) -> Future[Landed]:
        """Queue ``data`` (rows, or a callable that builds them on the committer's thread) for ``writer``'s next
        commit at ``position``; the future gives :class:`Landed` or the
        writer's error (:func:`lake.table.append_together`). Without ``gather`` (a caller about to wait for it,
        e.g. at close, while the other writers may only come after) the commit waits for no other writer."""
        entry = _Entry(writer, data, int(position), time.monotonic(), gather)
        with self._cond:
            self._seen.setdefault(writer.uri, {})[writer.writer_id] = entry.at
            self._queue.append(entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return entry.future

    def _run(self) -> None:
        if self.low:
            lower_writer_priority()
        while True:
            batch = self._next()
            if batch is None:
                return
            self._commit(batch)

    def _next(self) -> list[_Entry] | None:
        """The entries of the next commit: the oldest entry's table, one entry per writer id (``None``: idle)."""
        with self._cond:
            while not self._queue:
                if not self._cond.wait(self.idle_s) and not self._queue:
                    self._thread = None
                    return None
            first = self._queue[0]
            uri = first.writer.uri
            deadline = first.at + (self.gather_s if first.gather else 0.0)
            while True:
                now = time.monotonic()
                seen = self._seen.get(uri, {})
                expected = {wid for wid, at in seen.items() if now - at <= self.recent_s}
                queued = {e.writer.writer_id for e in self._queue if e.writer.uri == uri}
                if now >= deadline or queued >= expected:
                    break
                self._cond.wait(deadline - now)
            batch: list[_Entry] = []
            ids: set[str] = set()
            rest: deque[_Entry] = deque()
            for e in self._queue:
                if e.writer.uri == uri and e.writer.writer_id not in ids:
                    ids.add(e.writer.writer_id)
                    batch.append(e)
                else:
                    rest.append(e)
            self._queue = rest
            return batch

    def _commit(self, batch: list[_Entry]) -> None:
        batch = [e for e in batch if e.future.set_running_or_notify_cancel()]  # cancelled: dropped
        if not batch:
            return
        start = time.perf_counter()
        built = []
        for e in batch:  # rows handed over as what builds them are built here, off the caller's thread
            try:
                built.append((e, e.data() if callable(e.data) else e.data))
            except Exception as ex:  # noqa: BLE001 - that entry's error; the others are committed
                e.future.set_exception(ex)
        batch = [e for e, _ in built]
        if not batch:
            return
        try:
            out = append_together([(e.writer, data, e.position) for e, data in built])
        except BaseException as ex:  # noqa: BLE001 - e.g. a bad batch: every entry's error, the thread goes on
            for e in batch:
                e.future.set_exception(ex)
            return
        seconds = time.perf_counter() - start
        if any(not isinstance(o, Exception) for o in out):
            self.commits += 1
        for e, o in zip(batch, out, strict=True):
            if isinstance(o, Exception):
                e.future.set_exception(o)
            else:
                e.future.set_result(Landed(o, seconds))


_LANES: dict[str, Committer] = {}
_LANES_LOCK = threading.Lock()


def committer(*, urgent: bool = False, low: bool = False, record: bool = False) -> Committer:
    """The process's committer of a lane: ``urgent`` tables (a thread of their own at the usual priority, so a
    large commit never holds them back), the Kafka recorders' (``record``, low priority: their partitions'
    commits come due together, none queued behind a sink's), or the bulk of the commits at a ``low`` priority
    (live, serving) or at the usual one (replays)."""
    name = ("riverlake-commit-urgent" if urgent else "riverlake-commit-record" if record
            else "riverlake-commit-low" if low else "riverlake-commit")
    with _LANES_LOCK:
        lane = _LANES.get(name)
        if lane is None:
            lane = _LANES[name] = Committer(low=(low or record) and not urgent, name=name,
                                            gather_s=RECORD_GATHER_S if record and not urgent else GATHER_S)
        return lane


class Cohort:
    """The writers of one process that hand the same tables to a committer (a sink's shard partitions, a topic's
    recorders): when one of them starts a commit of a table on its own schedule (it *leads*), the others hand
    theirs over at their next chance (they *follow*), so the committer makes the table's commit once for all
    of them, whatever their own timers say. Followers do not lead, and neither does a writer whose own
    schedule comes due ``within`` a lead of another (its commit is one of that lead's): nobody commits twice
    for one lead. The same for the commit of everything phased before a snapshot (``"phased"``)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}  # per table (or "phased"): when a writer last led a commit of it

    def lead(self, table: str, now: float, *, within: float) -> None:
        """A writer's own schedule starts a commit of ``table`` now: the others join it (unless one led less
        than ``within`` seconds ago: then this one joins that)."""
        if now - self.at.get(table, -math.inf) > within:
            self.at[table] = now

    def follows(self, table: str, flushed_at: float) -> bool:
        """Whether a writer that last handed ``table`` over at ``flushed_at`` should hand it over now."""
        return self.at.get(table, -math.inf) > flushed_at


_COHORTS: dict[tuple[str, ...], Cohort] = {}


def cohort(*key: str) -> Cohort:
    """The process's :class:`Cohort` of ``key`` (e.g. ``("sink", lake, run_id)``)."""
    with _LANES_LOCK:
        return _COHORTS.setdefault(key, Cohort())
