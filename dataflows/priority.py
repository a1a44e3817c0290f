"""Lake writes at a lower CPU priority than the prediction path (Linux; elsewhere a no-op).

On a machine with few cores, a Delta commit (Parquet encoding on delta-rs's tokio
threads, Arrow building on a Python thread) competes for the CPU with the thread
that polls, scores and sends. :func:`lower_writer_priority` raises the nice value of
the calling thread and of the process's ``tokio-rt-worker`` threads by
:data:`NICE`, so the scheduler serves the prediction path first and the commits
take the CPU it leaves. Commits still run and still gate nothing but themselves:
exactly-once is unchanged, only when a commit lands moves. :func:`stagger` spreads periodic
commits over their period for the same reason.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

NICE = 10
"""How much lower (in nice steps) lake-writing threads run than the rest of the process."""

_LOWERED: set[int] = set()
_LOCK = threading.Lock()


def _renice(tid: int, by: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
    except OSError as ex:  # gone, or not allowed: the commit just runs at the usual priority
        log.debug("could not lower the priority of thread %d: %s", tid, ex)


def lower_writer_priority(by: int = NICE) -> None:
    """Run the calling thread, and delta-rs's runtime threads, ``by`` nice steps lower (each thread once)."""
    if not hasattr(os, "setpriority"):
        return
    tids = [threading.get_native_id()]
    try:
        for task in Path("/proc/self/task").iterdir():
            if (task / "comm").read_text().strip() == "tokio-rt-worker":
                tids.append(int(task.name))
    except OSError:
        pass
    with _LOCK:
        for tid in tids:
            if tid not in _LOWERED:
                _LOWERED.add(tid)
                _renice(tid, by)


_GOLDEN = (5 ** 0.5 - 1) / 2


def stagger(k: int, period: float) -> float:
    """How far into ``period`` the ``k``-th of several periodic lake writers should be: ``k`` and the ones
    after it spread evenly over the period (the golden-ratio sequence), so their commits, each a burst of
    Parquet encoding, do not all fall on the same moment and stall the prediction path together.

    >>> [round(stagger(k, 5.0), 2) for k in range(4)]
    [0.0, 3.09, 1.18, 4.27]
    """
    return period * ((k * _GOLDEN) % 1.0)


def table_point(table: str, period: float) -> float:
    """:func:`stagger` of a lake table: its own point in ``period``, the same for every writer of the table in
    the process (the shards' sink partitions, the Kafka partitions' recorders), so their commits come due
    together and make one (:mod:`dataflows.committer`), while different tables' commits stay spread.

    >>> table_point("events", 5.0) == stagger(0, 5.0), table_point("predictions", 5.0) == stagger(2, 5.0)
    (True, True)
    """
    from lake.schemas import TABLES

    return stagger(list(TABLES).index(table), period)


class SnapshotPhase:
    """When a live writer's commit should start so that it is in the lake by the next recovery snapshot.

    A live snapshot holds the rows not yet committed (pickled, on the prediction path's thread), so the fewer
    there are at that moment the shorter its pause. Bytewax snapshots at a steady period from the flow's
    start; once it is known (the first snapshot's time since ``start``, when the writer was built, then the
    time between snapshots: :meth:`snapshot`), :meth:`due` says when to start a commit of everything
    buffered: :attr:`margin` before the next one is expected. The margin is measured: after each snapshot
    it becomes 1.5 times what the last such commit took (from its start to the end of the last of its
    commits, :meth:`started`) plus ``floor``; if one was still running at the snapshot, it doubles. It is
    never less than 1.5 times what the writer's own recent commits took (:attr:`expected`, seconds, set by
    the writer) plus ``floor``, and at most half the period. Nothing about exactly-once changes: a commit
    still running at a snapshot keeps its rows in it, as any other.

    >>> p = SnapshotPhase(first_margin=0.5)
    >>> p.snapshot(10.0); p.due(19.6)          # one snapshot and no start: no period yet
    False
    >>> p.snapshot(20.0); p.period, p.due(29.4), p.due(29.6)
    (10.0, False, True)
    >>> q = SnapshotPhase(start=0.0, first_margin=0.5)
    >>> q.snapshot(10.2); q.due(20.0)           # built at 0: the first snapshot tells the period
    True
    """

    def __init__(self, *, start: float | None = None, first_margin: float = 0.5, floor: float = 0.05,
                 enabled: bool = True) -> None:
        if first_margin <= 0 or floor < 0:
            raise ValueError(f"first_margin must be > 0 and floor >= 0, got {first_margin!r}, {floor!r}")
        self.enabled = enabled  # off: never due, never holding a periodic commit back (it still learns the period)
        self.margin = first_margin
        self.floor = floor
        self.expected = 0.0  # how long the writer's phased commit should take, from its recent commits
        self.period: float | None = None
        self._last = start
        self._wave_at: float | None = None  # when this period's phased commits started
        self._wave: list = []  # their futures
        self._wave_done = 0.0  # when the last of them finished

    def snapshot(self, now: float) -> None:
        """A snapshot is being taken now: learn the period, and how early the last phased commit had to start."""
        if self._last is not None and now > self._last:
            self.period = now - self._last
        self._last = now
        if self._wave_at is not None:
            if all(f.done() for f in self._wave):
                margin = 1.5 * (self._wave_done - self._wave_at) + self.floor
            else:
                margin = 2 * self.lead()
            self.margin = max(self.floor, min(margin, self.period / 2 if self.period else margin))
        self._wave_at, self._wave = None, []

    def lead(self) -> float:
        """How long before the next snapshot the phased commit starts."""
        lead = max(self.margin, 1.5 * self.expected + self.floor)
        return min(lead, self.period / 2) if self.period else lead

    def next_at(self) -> float | None:
        """When the next snapshot is expected (``None`` before two were seen)."""
        return None if self.period is None or self._last is None else self._last + self.period

    def due(self, now: float) -> bool:
        """Whether the phased commit of this period should start now (once per period)."""
        if not self.enabled:
            return False
        nxt = self.next_at()
        return nxt is not None and self._wave_at is None and now >= nxt - self.lead()

    def holds_back(self, now: float, flush_seconds: float) -> bool:
        """Whether a periodic commit due now should wait for the phased one, less than half a period away."""
        if not self.enabled:
            return False
        nxt = self.next_at()
        return (nxt is not None and self._wave_at is None
                and 0 < nxt - self.lead() - now < flush_seconds / 2)

    def started(self, now: float, futures: list) -> None:
        """The phased commits of this period started at ``now`` (more may join later, as places free up)."""
        if self._wave_at is None:
            self._wave_at = now
        for f in futures:
            self._wave.append(f)
            f.add_done_callback(self._finished)

    def _finished(self, _future) -> None:
        self._wave_done = time.monotonic()  # on the committing thread; a plain assignment
