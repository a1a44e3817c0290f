"""The predict/learn step of one shard, free of Bytewax so it is tested on its own.

For each event: featurize (per-key state), let every model predict, keep the
features until the label comes. For each label: join it with the stored
features, score the stored predictions (prequential metrics), let every model
learn, and checkpoint a model every ``checkpoint_every`` learns. Everything it
decides comes out as rows for the lake, tagged with the item's ``seq``.
"""

from __future__ import annotations

import hashlib
import pickle
import platform
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import river

from dataflows.features import KeyedFeaturizer
from dataflows.items import EVENT, Batch, Output
from dataflows.models import get_spec, score_one
from dataflows.validate import dead_letter
from monitoring.prequential import WindowedPrequential

RIVERLAKE_VERSION = "0.1.0"
CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class RunConfig:
    """Settings of one run of the predict/learn step. Part of the run's identity."""

    run_id: str
    models: tuple[str, ...] = ("linear",)
    seed: int = 42
    checkpoint_every: int = 10_000
    window_us: int = 86_400_000_000
    grace_us: int = 86_400_000_000
    threshold: float = 0.5
    featurizer: dict[str, Any] = field(default_factory=dict)
    remember_labelled: int = 1_000_000

    def __post_init__(self) -> None:
        if not self.run_id:
            raise ValueError(f"run_id must be a non-empty string, got {self.run_id!r}")
        if not self.models:
            raise ValueError("models must name at least one model spec")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models must be distinct, got {self.models!r}")
        for name in self.models:
            get_spec(name)
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every!r}")
        if self.window_us <= 0:
            raise ValueError(f"window_us must be > 0, got {self.window_us!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold!r}")


class _Slot:
    """One model on this shard."""

    __slots__ = ("name", "role", "estimator", "n_learned", "version", "metrics")

    def __init__(self, name: str, role: str, estimator: Any, metrics: WindowedPrequential) -> None:
        self.name = name
        self.role = role
        self.estimator = estimator
        self.n_learned = 0
        self.version = ""
        self.metrics = metrics


def model_digest(model_bytes: bytes) -> str:
    return hashlib.sha256(model_bytes).hexdigest()


class ShardLearner:
    """State and logic of the predict/learn step for one shard."""

    def __init__(self, config: RunConfig, *, shard: int) -> None:
        self.config = config
        self.shard = shard
        self.featurizer = KeyedFeaturizer(**config.featurizer)
        self.slots = [
            _Slot(
                name,
                CHAMPION if i == 0 else CHALLENGER,
                get_spec(name).build(seed=config.seed + i),
                WindowedPrequential(window_us=config.window_us, grace_us=config.grace_us,
                                    threshold=config.threshold),
            )
            for i, name in enumerate(config.models)
        ]
        # event_id -> (features, event_time_us, key, scores, versions)
        self.pending: dict[str, tuple] = {}
        self.labelled: OrderedDict[str, None] = OrderedDict()
        self.last_seq = -1
        self.n_events = 0
        self.n_labels = 0
        self.started = False

    # -- checkpoints ---------------------------------------------------------------
    def _checkpoint(self, slot: _Slot, seq: int, last_event_id: str | None, rows: list) -> None:
        data = pickle.dumps(slot.estimator, protocol=5)
        cid = f"{self.config.run_id}:{slot.name}:s{self.shard}:{slot.n_learned}"
        slot.version = cid
        rows.append((
            self.config.run_id, self.shard, seq, cid, slot.name, get_spec(slot.name).description,
            slot.n_learned, last_event_id, model_digest(data), river.__version__,
            platform.python_version(), RIVERLAKE_VERSION, data, datetime.now(UTC),
        ))

    # -- the step ------------------------------------------------------------------
    def process(self, batch: Batch) -> Output:
        """Run a validated batch; returns the rows to write."""
        cfg = self.config
        run_id, shard = cfg.run_id, self.shard
        preds: list[tuple] = []
        learns: list[tuple] = []
        metrics: list[tuple] = []
        checkpoints: list[tuple] = []
        dead = [(run_id, shard, *d) for d in batch.dead]
        slots = self.slots
        if not self.started:
            first_seq = batch.items[0][0] if batch.items else (batch.dead[0][0] if batch.dead else 0)
            for slot in slots:
                self._checkpoint(slot, first_seq, None, checkpoints)
            self.started = True
        featurizer = self.featurizer
        pending = self.pending
        labelled = self.labelled
        threshold = cfg.threshold
        every = cfg.checkpoint_every
        for item in batch.items:
            seq = item[0]
            if item[1] == EVENT:
                _, _, event_id, t, key, payload = item
                if event_id in pending or event_id in labelled:
                    dead.append((run_id, shard, *dead_letter(
                        item, step="predict", reason="duplicate event_id", source=batch.source)))
                    continue
                x = featurizer.transform_one(payload, key=key, event_time_us=t)
                featurizer.learn_one(payload, key=key, event_time_us=t)
                scores = []
                for slot in slots:
                    s = score_one(slot.estimator, x)
                    scores.append(s)
                    preds.append((run_id, shard, seq, event_id, t, key, slot.name, slot.role,
                                  slot.version, s, int(s >= threshold), x))
                pending[event_id] = (x, t, key, scores)
                self.n_events += 1
            else:
                _, _, event_id, label, label_time, _ = item
                entry = pending.pop(event_id, None)
                if entry is None:
                    reason = ("label arrived twice" if event_id in labelled
                              else "label for an unknown event")
                    dead.append((run_id, shard, *dead_letter(
                        item, step="learn", reason=reason, source=batch.source)))
                    continue
                x, t, key, scores = entry
                y = bool(label)
                featurizer.learn_label(key=key, y=y)
                for slot, s in zip(slots, scores, strict=True):
                    slot.estimator.learn_one(x, y)
                    slot.n_learned += 1
                    learns.append((run_id, shard, seq, event_id, t, label_time, slot.name, int(y), s,
                                   slot.n_learned, slot.version))
                    for row in slot.metrics.update(event_time_us=t, label_time_us=label_time, y=y, score=s):
                        metrics.append(_metric_row(run_id, shard, seq, slot.name, row))
                    if slot.n_learned % every == 0:
                        self._checkpoint(slot, seq, event_id, checkpoints)
                labelled[event_id] = None
                if len(labelled) > cfg.remember_labelled:
                    labelled.popitem(last=False)
                self.n_labels += 1
            self.last_seq = seq
        if batch.items:
            self.last_seq = max(self.last_seq, batch.items[-1][0])
        if batch.dead:
            self.last_seq = max(self.last_seq, batch.dead[-1][0])
        return Output(shard, {
            "predictions": preds, "learn_log": learns, "metrics": metrics,
            "checkpoints": checkpoints, "dead_letters": dead,
        })

    def finish(self) -> Output:
        """End of stream: close every metrics window and checkpoint every model."""
        seq = self.last_seq + 1
        metrics: list[tuple] = []
        checkpoints: list[tuple] = []
        for slot in self.slots:
            for row in slot.metrics.flush():
                metrics.append(_metric_row(self.config.run_id, self.shard, seq, slot.name, row))
            if self.started and not slot.version.endswith(f":{slot.n_learned}"):
                self._checkpoint(slot, seq, None, checkpoints)
        return Output(self.shard, {"metrics": metrics, "checkpoints": checkpoints})


def _metric_row(run_id: str, shard: int, seq: int, model: str, r: dict[str, Any]) -> tuple:
    return (
        run_id, shard, seq, model, r["window_start"], r["window_end"], r["n"], r["n_correct"],
        r["n_positive"], r["n_predicted_positive"], r["sum_log_loss"], r["accuracy"], r["log_loss"],
        r["roc_auc"], r["n_late_labels"], r["cum_n"], r["cum_accuracy"], r["cum_log_loss"],
    )
