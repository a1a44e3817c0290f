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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import river

from dataflows.features import KeyedFeaturizer
from dataflows.items import EVENT, Batch, Output
from dataflows.models import get_spec, score_one
from dataflows.validate import dead_letter
from lake.arrow import features_array, rows_to_arrow
from lake.schemas import LEARN_LOG, PREDICTIONS, UTC_TS
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

    __slots__ = ("name", "role", "estimator", "n_learned", "version", "checkpointed_at", "metrics")

    def __init__(self, name: str, role: str, estimator: Any, metrics: WindowedPrequential) -> None:
        self.name = name
        self.role = role
        self.estimator = estimator
        self.n_learned = 0
        self.version = ""
        self.checkpointed_at = -1
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
        self.labelled: dict[str, None] = {}  # insertion-ordered: oldest first
        self.last_seq = -1
        self.n_events = 0
        self.n_labels = 0
        self.started = False

    # -- checkpoints ---------------------------------------------------------------
    def _checkpoint(self, slot: _Slot, seq: int, last_event_id: str | None, rows: list) -> None:
        data = pickle.dumps(slot.estimator, protocol=5)
        cid = f"{slot.name}:s{self.shard}:{slot.n_learned}"
        slot.version = cid
        slot.checkpointed_at = slot.n_learned
        rows.append((
            self.config.run_id, self.shard, seq, cid, slot.name, get_spec(slot.name).description,
            slot.n_learned, last_event_id, model_digest(data), river.__version__,
            platform.python_version(), RIVERLAKE_VERSION, data, datetime.now(UTC),
        ))

    # -- the step ------------------------------------------------------------------
    def process(self, batch: Batch) -> Output:
        """Run a validated batch; returns the rows to write, as one Arrow table per table."""
        cfg = self.config
        run_id, shard = cfg.run_id, self.shard
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
        transform, observe = featurizer.transform_one, featurizer.learn_one
        pending = self.pending
        labelled = self.labelled
        remember = cfg.remember_labelled
        every = cfg.checkpoint_every
        # Columns of the events predicted and the labels learned in this batch.
        ev_seq: list[int] = []
        ev_id: list[str] = []
        ev_t: list[int] = []
        ev_key: list[str] = []
        ev_x: list[dict] = []
        ev_scores: list[list[float]] = [[] for _ in slots]
        ev_versions: list[list[str]] = [[] for _ in slots]
        lb_seq: list[int] = []
        lb_id: list[str] = []
        lb_t: list[int] = []
        lb_lt: list[int] = []
        lb_y: list[int] = []
        lb_scores: list[list[float]] = [[] for _ in slots]
        lb_order: list[list[int]] = [[] for _ in slots]
        lb_versions: list[list[str]] = [[] for _ in slots]
        estimators = [s.estimator for s in slots]
        n_slots = len(slots)
        for item in batch.items:
            seq = item[0]
            if item[1] == EVENT:
                _, _, event_id, t, key, payload = item
                if event_id in pending or event_id in labelled:
                    dead.append((run_id, shard, *dead_letter(
                        item, step="predict", reason="duplicate event_id", source=batch.source)))
                    continue
                x = transform(payload, key=key, event_time_us=t)
                observe(payload, key=key, event_time_us=t)
                scores = [score_one(est, x) for est in estimators]
                for i in range(n_slots):
                    ev_scores[i].append(scores[i])
                    ev_versions[i].append(slots[i].version)
                ev_seq.append(seq)
                ev_id.append(event_id)
                ev_t.append(t)
                ev_key.append(key)
                ev_x.append(x)
                pending[event_id] = (x, t, key, scores)
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
                lb_seq.append(seq)
                lb_id.append(event_id)
                lb_t.append(t)
                lb_lt.append(label_time)
                lb_y.append(int(y))
                for i in range(n_slots):
                    slot = slots[i]
                    s = scores[i]
                    lb_versions[i].append(slot.version)
                    estimators[i].learn_one(x, y)
                    slot.n_learned += 1
                    lb_scores[i].append(s)
                    lb_order[i].append(slot.n_learned)
                    closed = slot.metrics.update(t, label_time, y, s)
                    if closed:
                        metrics.extend(_metric_row(run_id, shard, seq, slot.name, r) for r in closed)
                    if slot.n_learned % every == 0:
                        self._checkpoint(slot, seq, event_id, checkpoints)
                labelled[event_id] = None
                if len(labelled) > remember:
                    del labelled[next(iter(labelled))]
        self.n_events += len(ev_seq)
        self.n_labels += len(lb_seq)
        if batch.items:
            self.last_seq = max(self.last_seq, batch.items[-1][0])
        if batch.dead:
            self.last_seq = max(self.last_seq, batch.dead[-1][0])
        tables: dict[str, pa.Table] = {}
        if ev_seq:
            tables["predictions"] = self._predictions(
                ev_seq, ev_id, ev_t, ev_key, ev_x, ev_scores, ev_versions)
        if lb_seq:
            tables["learn_log"] = self._learn_log(
                lb_seq, lb_id, lb_t, lb_lt, lb_y, lb_scores, lb_order, lb_versions)
        for name, rows in (("metrics", metrics), ("checkpoints", checkpoints), ("dead_letters", dead)):
            if rows:
                tables[name] = rows_to_arrow(name, rows)
        return Output(shard, tables)

    def _predictions(self, seq, ids, times, keys, xs, scores, versions) -> pa.Table:
        n = len(seq)
        shared = [pa.array(seq, pa.int64()), pa.array(ids, pa.string()),
                  pa.array(times, UTC_TS), pa.array(keys, pa.string())]
        features = features_array(xs)
        run_id = pa.array([self.config.run_id] * n, pa.string())
        shard = pa.array([self.shard] * n, pa.int32())
        parts = []
        thr = self.config.threshold
        for i, slot in enumerate(self.slots):
            score = pa.array(scores[i], pa.float64())
            parts.append(pa.Table.from_arrays([
                run_id, shard, *shared, pa.array([slot.name] * n, pa.string()),
                pa.array([slot.role] * n, pa.string()), pa.array(versions[i], pa.string()), score,
                pc.cast(pc.greater_equal(score, thr), pa.int64()), features,
            ], schema=PREDICTIONS))
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    def _learn_log(self, seq, ids, times, label_times, ys, scores, orders, versions) -> pa.Table:
        n = len(seq)
        shared = [pa.array(seq, pa.int64()), pa.array(ids, pa.string()),
                  pa.array(times, UTC_TS), pa.array(label_times, UTC_TS)]
        run_id = pa.array([self.config.run_id] * n, pa.string())
        shard = pa.array([self.shard] * n, pa.int32())
        label = pa.array(ys, pa.int64())
        parts = [
            pa.Table.from_arrays([
                run_id, shard, *shared, pa.array([slot.name] * n, pa.string()), label,
                pa.array(scores[i], pa.float64()), pa.array(orders[i], pa.int64()),
                pa.array(versions[i], pa.string()),
            ], schema=LEARN_LOG)
            for i, slot in enumerate(self.slots)
        ]
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    def finish(self) -> Output:
        """End of stream: close every metrics window and checkpoint every model."""
        seq = self.last_seq + 1
        metrics: list[tuple] = []
        checkpoints: list[tuple] = []
        for slot in self.slots:
            for row in slot.metrics.flush():
                metrics.append(_metric_row(self.config.run_id, self.shard, seq, slot.name, row))
            if self.started and slot.checkpointed_at != slot.n_learned:
                self._checkpoint(slot, seq, None, checkpoints)
        tables = {name: rows_to_arrow(name, rows)
                  for name, rows in (("metrics", metrics), ("checkpoints", checkpoints)) if rows}
        return Output(self.shard, tables)


def _metric_row(run_id: str, shard: int, seq: int, model: str, r: dict[str, Any]) -> tuple:
    return (
        run_id, shard, seq, model, r["window_start"], r["window_end"], r["n"], r["n_correct"],
        r["n_positive"], r["n_predicted_positive"], r["sum_log_loss"], r["accuracy"], r["log_loss"],
        r["roc_auc"], r["n_late_labels"], r["cum_n"], r["cum_accuracy"], r["cum_log_loss"],
    )
