"""Drift actions: what the step does to a model whose error-stream detector alarmed.

``reset`` replaces the model by a fresh one; ``retrain`` replaces it by a fresh one trained on
the recent labelled events the learner keeps. Either is recorded as a ``drift_actions`` row and
checkpointed. A model replaced less than ``action_window`` learns ago is left alone.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from dataflows.rows import row
from monitoring.error_drift import make_detector

log = logging.getLogger(__name__)


def act(learner: Any, slot: Any, *, seq: int, event_id: str, t: int, detector: str, checkpoints: list,
        actions: list) -> bool:
    """Carry out the run's drift action on ``slot`` of ``learner`` (a :class:`dataflows.learner.ShardLearner`)
    after ``detector`` alarmed; returns whether the model was replaced."""
    config = learner.config
    mon = config.monitor
    if slot.n_learned - slot.acted_at < mon.action_window:
        return False
    fresh = learner.build_model(slot.name, learner.slots.index(slot))
    trained_on = 0
    recent = learner.recent
    if mon.drift_action == "retrain" and recent:
        keyed = config.per_key
        for x, y, *key in recent:  # (x, y) in snapshots taken before per-key models
            if keyed:
                fresh.learn_one(x, y, key[0])
            else:
                fresh.learn_one(x, y)
        trained_on = len(recent)
    before = slot.n_learned
    slot.estimator = fresh
    slot.fresh = trained_on == 0
    slot.acted_at = slot.n_learned
    slot.detectors = [make_detector(d) for d in config.drift_detectors]
    learner.checkpoint(slot, seq, event_id, checkpoints, suffix=f"-{mon.drift_action}")
    actions.append(row("drift_actions", run_id=config.run_id, shard=learner.shard, seq=seq, model=slot.name,
                       action=mon.drift_action, detector=detector, signal="error", event_id=event_id, event_time=t,
                       n_learned_before=before, trained_on=trained_on, model_version=slot.version,
                       created_at=datetime.now(UTC)))
    log.info("shard %d: %s alarmed on %s's errors after %d learns: %s (%d recent events)", learner.shard,
             detector, slot.name, before, mon.drift_action, trained_on)
    return True
