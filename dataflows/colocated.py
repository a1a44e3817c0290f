"""Co-located shards: each source partition runs its own shard's predict/learn step.

In the default graph (:func:`dataflows.online.make_flow`) the source partition of
shard ``s`` and the sink partition of shard ``s`` sit on the same worker, but the
predict/learn state of shard ``s`` goes wherever Bytewax's router hashes the key
``"s"``: with few keys the hash spreads them unevenly (measured: 2 and 4 shards
all on one of two processes, 8 split 6/2), and every batch and its output cross
between processes on the way. Here the learner lives inside the source partition
(its state is part of the partition's snapshot) and the sink partitions carry the
source's partition names, so reading, learning and writing a shard share one
worker and nothing crosses. The rows written are the same; only placement changes.
"""

from __future__ import annotations

import logging
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from dataflows.control import PromotionControl
from dataflows.items import Batch, Output
from dataflows.learner import RunConfig, ShardLearner, resume_learner, seal_learner
from dataflows.validate import validate_batch

log = logging.getLogger(__name__)


class _ColocatedPartition(StatefulSourcePartition[Output, tuple]):
    def __init__(self, part: StatefulSourcePartition[Batch, Any], config: RunConfig, learner: ShardLearner | None,
                 control: PromotionControl | None) -> None:
        self.part = part
        self.config = config
        self.learner = learner
        self.control = control
        self._finished = False

    def next_batch(self) -> list[Output]:
        if self._finished:
            raise StopIteration
        try:
            batches = self.part.next_batch()
        except StopIteration:
            self._finished = True
            return [self.learner.finish()] if self.learner is not None else []
        out = []
        for batch in batches:
            if self.learner is None:
                self.learner = ShardLearner(self.config, shard=batch.shard)
                log.info("shard %d: predict/learn in this worker, beside its source partition", batch.shard)
            if self.control is not None:
                champion = self.control.poll()
                if champion is not None:
                    self.learner.set_champion(champion)
            out.append(self.learner.process(validate_batch(batch, self.config.task)))
        return out

    def next_awake(self) -> Any:
        return self.part.next_awake()

    def snapshot(self) -> tuple:
        return self.part.snapshot(), seal_learner(self.learner, self.config)

    def close(self) -> None:
        self.part.close()


class ColocatedSource(FixedPartitionedSource[Output, tuple]):
    """``source``'s partitions, each followed by validation and its shard's :class:`ShardLearner`."""

    def __init__(self, source: FixedPartitionedSource[Batch, Any], config: RunConfig, *,
                 control_lake: str | None = None, control_interval_s: float = 2.0) -> None:
        self.source = source
        self.config = config
        self.control_lake = control_lake
        self.control_interval_s = control_interval_s

    def list_parts(self) -> list[str]:
        return self.source.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: tuple | None) -> _ColocatedPartition:
        inner_state, sealed = resume_state if resume_state is not None else (None, None)
        learner = resume_learner(sealed, self.config)
        if learner is not None:
            from dataflows.online import check_resumed

            check_resumed(learner.config, self.config)
        control = (PromotionControl(self.control_lake, self.config.run_id, interval_s=self.control_interval_s)
                   if self.control_lake is not None else None)
        return _ColocatedPartition(self.source.build_part(step_id, for_part, inner_state), self.config, learner,
                                   control)
