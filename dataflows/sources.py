"""Sources: where a dataflow's items come from. Every source emits :class:`~dataflows.items.Batch`."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from dataflows.items import Batch
from dataflows.replay import Pin, ReplayPlan

log = logging.getLogger(__name__)

DEFAULT_BATCH = 10_000
"""Items per replay batch when the replay is not paced."""
DEFAULT_PACED_BATCH = 2_000
"""Items per replay batch when it is paced (``rate``): one batch per ``2,000 / rate`` seconds."""


PROGRESS_EVERY_S = 10.0
"""Seconds between two progress lines of a replay partition (also one per 10% of its items)."""


class _ReplayPartition(StatefulSourcePartition[Batch, int]):
    def __init__(self, plan: ReplayPlan, *, start: int, batch_size: int, rate: float | None = None,
                 progress: Callable[[int, int, int], None] | None = None, run_id: str | None = None) -> None:
        self._progress = progress
        self._plan = plan
        self._pos = start
        self._start = start
        self._batch_size = batch_size
        self._rate = rate
        self._awake: datetime | None = None
        self._started = self._reported_at = time.monotonic()
        self._step = max(batch_size, len(plan) // 10)
        self._next_report = start + self._step
        self._finished = False
        self._label = f"replay {run_id} shard {plan.shard}" if run_id else f"replay shard {plan.shard}"
        log.info("shard %d: replaying %s items (%s events, %s labels) from seq %d",
                 plan.shard, f"{len(plan):,}", f"{plan.n_events:,}", f"{plan.n_labels:,}", start)

    def _report(self, total: int) -> None:
        """One progress line on stderr: events and items done, rate, time left."""
        now = time.monotonic()
        self._reported_at = now
        elapsed = max(now - self._started, 1e-9)
        rate = (self._pos - self._start) / elapsed
        eta = (total - self._pos) / rate if rate > 0 else float("inf")
        events = self._plan.events_before(self._pos)
        print(f"{self._label}: {events:,}/{self._plan.n_events:,} events, {self._pos:,}/{total:,} items "
              f"({100.0 * self._pos / max(total, 1):.0f}%), {rate:,.0f} items/s, "
              f"{'done' if self._pos >= total else f'ETA {_clock(eta)}'} after {_clock(elapsed)}",
              file=sys.stderr, flush=True)

    def next_batch(self) -> list[Batch]:
        total = len(self._plan)
        # Progress of the items emitted so far (the engine asks for the next batch once it took the last).
        if self._pos >= total:
            if not self._finished and self._pos > self._start:
                self._report(total)
            self._finished = True
            raise StopIteration
        if self._pos >= self._next_report or time.monotonic() - self._reported_at >= PROGRESS_EVERY_S:
            while self._next_report <= self._pos:
                self._next_report += self._step
            self._report(total)
        stop = self._pos + self._batch_size
        batch = self._plan.batch(self._pos, stop)
        if self._rate:
            self._awake = datetime.now(UTC) + timedelta(seconds=(min(stop, total) - self._pos) / self._rate)
        self._pos = min(stop, total)
        if self._progress is not None:
            self._progress(self._plan.shard, self._pos, total)
        return [batch]

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._pos


class ReplaySource(FixedPartitionedSource[Batch, int]):
    """Replays a pinned Delta version of ``events`` + ``labels``, one partition per shard.

    The resume state of a partition is the next ``seq`` to emit. ``plan``: the plan of a one-shard replay
    already built (:func:`dataflows.online.replay_job` builds it first, to choose the defaults from it), used
    by the partition instead of reading the tables again.
    """

    def __init__(self, lake: str | os.PathLike[str], *, pin: Pin, shards: int = 1,
                 batch_size: int | None = None, rate: float | None = None,
                 progress: Callable[[int, int, int], None] | None = None, balance: bool = False,
                 run_id: str | None = None, plan: ReplayPlan | None = None) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0 items per second, got {rate!r}")
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards!r}")
        if batch_size is None:
            # Large batches unpaced: per-batch costs (Arrow, numpy, the columnar path's set-up) spread over
            # more items (urls: ~2.5 us per event less than at 2,000); paced replays keep bursts short.
            batch_size = DEFAULT_BATCH if rate is None else DEFAULT_PACED_BATCH
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if plan is not None and (plan.shards, plan.pin) != (shards, pin):
            raise ValueError(f"the plan given is of {plan.shards} shard(s) at {plan.pin}, the source replays "
                             f"{shards} at {pin}")
        self.lake = os.fspath(lake)
        self.pin = pin
        self.shards = shards
        self.batch_size = batch_size
        self.rate = rate
        self.progress = progress  # called as progress(shard, items emitted, items in total)
        self.balance = balance  # keys placed on shards by event counts, not CRC-32 (replay.balanced_shards)
        self.run_id = run_id  # named in the progress lines on stderr
        self._plan = plan  # handed to its partition once: the partition's (and its memory's) from then on

    def list_parts(self) -> list[str]:
        return [f"shard-{i}" for i in range(self.shards)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _ReplayPartition:
        shard = int(for_part.rsplit("-", 1)[1])
        plan, self._plan = self._plan, None
        if plan is None or plan.shard != shard:
            plan = ReplayPlan(self.lake, pin=self.pin, shard=shard, shards=self.shards, balance=self.balance)
        return _ReplayPartition(plan, start=resume_state or 0, batch_size=self.batch_size, rate=self.rate,
                                progress=self.progress, run_id=self.run_id)


def _clock(seconds: float) -> str:
    """``"1h02m"``, ``"3m05s"``, ``"42s"`` (``"?"`` when unknown).

    >>> _clock(3725), _clock(185), _clock(4.2), _clock(float("inf"))
    ('1h02m', '3m05s', '4s', '?')
    """
    if not seconds < float("inf"):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
