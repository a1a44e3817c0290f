"""Sources: where a dataflow's items come from. Every source emits :class:`~dataflows.items.Batch`."""

from __future__ import annotations

import os

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from dataflows.items import Batch
from dataflows.replay import Pin, ReplayPlan


class _ReplayPartition(StatefulSourcePartition[Batch, int]):
    def __init__(self, plan: ReplayPlan, *, start: int, batch_size: int) -> None:
        self._plan = plan
        self._pos = start
        self._batch_size = batch_size

    def next_batch(self) -> list[Batch]:
        if self._pos >= len(self._plan):
            raise StopIteration
        stop = self._pos + self._batch_size
        batch = self._plan.batch(self._pos, stop)
        self._pos = min(stop, len(self._plan))
        return [batch]

    def snapshot(self) -> int:
        return self._pos


class ReplaySource(FixedPartitionedSource[Batch, int]):
    """Replays a pinned Delta version of ``events`` + ``labels``, one partition per shard.

    The resume state of a partition is the next ``seq`` to emit.
    """

    def __init__(self, lake: str | os.PathLike[str], *, pin: Pin, shards: int = 1,
                 batch_size: int = 2_000) -> None:
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.lake = os.fspath(lake)
        self.pin = pin
        self.shards = shards
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return [f"shard-{i}" for i in range(self.shards)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _ReplayPartition:
        shard = int(for_part.rsplit("-", 1)[1])
        plan = ReplayPlan(self.lake, pin=self.pin, shard=shard, shards=self.shards)
        return _ReplayPartition(plan, start=resume_state or 0, batch_size=self.batch_size)
