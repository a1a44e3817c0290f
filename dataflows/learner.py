"""The predict/learn step of one shard, free of Bytewax so it is tested on its own.

For each event: featurize (per-key state), let every model predict, keep the
features until the label comes. For each label: join it with the stored
features, score the stored predictions (prequential metrics), let every model
learn, and checkpoint a model every ``checkpoint_every`` learns. Everything it
decides comes out as rows for the lake, tagged with the item's ``seq``.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import platform
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import river

from dataflows.features import KeyedFeaturizer
from dataflows.items import EVENT, Batch, Output
from dataflows.models import get_spec
from dataflows.perkey import PerKeyModel
from dataflows.recent import RecentIds
from dataflows.validate import dead_letter
from lake.arrow import features_array, rows_to_arrow
from lake.schemas import LEARN_LOG, PREDICTIONS, UTC_TS
from monitoring.error_drift import ErrorDriftDetector, make_detector
from monitoring.prequential import WindowedPrequential
from monitoring.stream import MonitorConfig, StreamMonitor

log = logging.getLogger(__name__)

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
    # Give up waiting for a label this long (event time) after the event; None: wait forever.
    label_ttl_us: int | None = 7 * 86_400_000_000
    # Drift detectors run on each model's 0/1 error stream; alarms go to `drift_events`.
    drift_detectors: tuple[str, ...] = ("adwin",)
    # Window statistics, anomaly scores, label-free detectors and drift actions (monitoring.stream).
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    # One model per event key (dataflows.perkey) instead of one per shard: a key's model sees
    # exactly its key's events, so predictions do not depend on how keys are spread over shards.
    per_key: bool = False
    # Per-key models kept per shard and model at most (the keys that learned least recently go).
    max_key_models: int = 100_000

    def __post_init__(self) -> None:
        if not self.run_id:
            raise ValueError(f"run_id must be a non-empty string, got {self.run_id!r}")
        if not self.models:
            raise ValueError("models must name at least one model spec")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models must be distinct, got {self.models!r}")
        for name in self.models:
            get_spec(name)
        for name in self.drift_detectors:
            make_detector(name)  # fails early, naming the known detectors
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every!r}")
        if self.window_us <= 0:
            raise ValueError(f"window_us must be > 0, got {self.window_us!r}")
        if self.label_ttl_us is not None and self.label_ttl_us <= 0:
            raise ValueError(f"label_ttl_us must be > 0 or None, got {self.label_ttl_us!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold!r}")
        if self.max_key_models < 1:
            raise ValueError(f"max_key_models must be >= 1, got {self.max_key_models!r}")


class _Slot:
    """One model on this shard."""

    __slots__ = ("name", "role", "estimator", "n_learned", "version", "checkpointed_at", "metrics", "detectors",
                 "acted_at")

    def __init__(self, name: str, role: str, estimator: Any, metrics: WindowedPrequential,
                 detectors: list[ErrorDriftDetector]) -> None:
        self.detectors = detectors
        self.name = name
        self.role = role
        self.estimator = estimator
        self.n_learned = 0
        self.version = ""
        self.checkpointed_at = -1
        self.metrics = metrics
        self.acted_at = 0  # n_learned at the last drift action (a new model gets action_window learns first)


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
                self._build(name, i),
                WindowedPrequential(window_us=config.window_us, grace_us=config.grace_us,
                                    threshold=config.threshold),
                [make_detector(d) for d in config.drift_detectors],
            )
            for i, name in enumerate(config.models)
        ]
        # event_id -> (features, event_time_us, key, scores, versions)
        self.pending: dict[str, tuple] = {}
        self.labelled = RecentIds(config.remember_labelled)
        self.expired = RecentIds(config.remember_labelled)  # ids given up on
        self._arrivals: deque[tuple[int, str]] = deque()  # (event_time_us, event_id) of pending events
        self._clock_us = -(2**62)  # latest event time seen
        self.last_seq = -1
        self.n_events = 0
        self.n_labels = 0
        self.last_labelled: str | None = None  # event id of the last label learned
        self.started = False
        self.monitor = StreamMonitor(config.monitor, run_id=config.run_id, shard=shard, seed=config.seed)
        # Recent labelled events (features, label, key), to retrain from when a drift action says so.
        self.recent: deque[tuple[dict, bool, str]] | None = (
            deque(maxlen=config.monitor.action_window) if config.monitor.drift_action == "retrain" else None)

    def _build(self, name: str, index: int) -> Any:
        """A fresh estimator for the model ``name`` at position ``index`` of the run's models."""
        estimator = get_spec(name).build(seed=self.config.seed + index)
        if self.config.per_key:
            return PerKeyModel(estimator, max_keys=self.config.max_key_models)
        return estimator

    def _description(self, name: str) -> str:
        description = get_spec(name).description
        return f"one model per key: {description}" if self.config.per_key else description

    # -- checkpoints ---------------------------------------------------------------
    def _checkpoint(self, slot: _Slot, seq: int, last_event_id: str | None, rows: list, suffix: str = "") -> None:
        data = pickle.dumps(slot.estimator, protocol=5)
        cid = f"{slot.name}:s{self.shard}:{slot.n_learned}{suffix}"
        slot.version = cid
        slot.checkpointed_at = slot.n_learned
        rows.append((
            self.config.run_id, self.shard, seq, cid, slot.name, self._description(slot.name),
            slot.n_learned, last_event_id, model_digest(data), river.__version__,
            platform.python_version(), RIVERLAKE_VERSION, data, datetime.now(UTC),
        ))

    @property
    def champion(self) -> str:
        return next(s.name for s in self.slots if s.role == CHAMPION)

    def set_champion(self, name: str) -> bool:
        """Serve ``name`` from the next event on; returns whether the champion changed."""
        if name not in {s.name for s in self.slots}:
            log.warning("shard %d: promotion of %r ignored: this run has %s", self.shard, name,
                        [s.name for s in self.slots])
            return False
        if name == self.champion:
            return False
        for slot in self.slots:
            slot.role = CHAMPION if slot.name == name else CHALLENGER
        log.info("shard %d: %r is champion from seq %d on", self.shard, name, self.last_seq + 1)
        return True

    # -- the step ------------------------------------------------------------------
    def process(self, batch: Batch) -> Output:
        """Run a validated batch; returns the rows to write, as one Arrow table per table."""
        cfg = self.config
        run_id, shard = cfg.run_id, self.shard
        metrics: list[tuple] = []
        checkpoints: list[tuple] = []
        drifts: list[tuple] = []
        actions: list[tuple] = []
        act = cfg.monitor.drift_action != "none"
        recent = self.recent
        threshold = cfg.threshold
        dead = [(run_id, shard, *d) for d in batch.dead]
        slots = self.slots
        if not self.started:
            first_seq = batch.items[0][0] if batch.items else (batch.dead[0][0] if batch.dead else 0)
            for slot in slots:
                self._checkpoint(slot, first_seq, None, checkpoints)
            self.started = True
        featurizer = self.featurizer
        transform, observe, learn_label = featurizer.transform_one, featurizer.learn_one, featurizer.learn_label
        pending = self.pending
        labelled = self.labelled
        every = cfg.checkpoint_every
        n_slots = len(slots)
        probas = [s.estimator.predict_proba_one for s in slots]
        learners = [s.estimator.learn_one for s in slots]
        first_order = [s.n_learned + 1 for s in slots]
        # Model versions change only at checkpoints: keep them as (row, version) runs.
        ev_runs = [[(0, s.version)] for s in slots]
        lb_runs = [[(0, s.version)] for s in slots]
        ev_items: list[tuple] = []
        ev_x: list[dict] = []
        ev_scores: list[list[float]] = [[] for _ in slots]
        lb_items: list[tuple] = []
        lb_t: list[int] = []
        lb_y: list[int] = []
        lb_scores: list[list[float]] = [[] for _ in slots]
        slot_range = range(n_slots)
        keyed = cfg.per_key
        arrivals = self._arrivals
        track_arrivals = cfg.label_ttl_us is not None
        clock = self._clock_us
        for item in batch.items:
            if item[1] == EVENT:
                _, _, event_id, t, key, payload = item
                if event_id in pending or event_id in labelled:
                    dead.append((run_id, shard, *dead_letter(
                        item, step="predict", reason="duplicate event_id", source=batch.source)))
                    continue
                try:
                    x = transform(payload, key=key, event_time_us=t)
                    scores = []
                    for i in slot_range:
                        p = probas[i](x, key) if keyed else probas[i](x)
                        scores.append(p.get(True, 0.0) if p else 0.5)
                except Exception as ex:  # noqa: BLE001 - no input may stop the dataflow
                    dead.append((run_id, shard, *dead_letter(
                        item, step="predict", reason=f"{type(ex).__name__}: {ex}", source=batch.source)))
                    continue
                observe(payload, key=key, event_time_us=t)
                for i in slot_range:
                    ev_scores[i].append(scores[i])
                ev_items.append(item)
                ev_x.append(x)
                pending[event_id] = (x, t, key, scores)
                if track_arrivals:
                    arrivals.append((t, event_id))
                if t > clock:
                    clock = t
            else:
                event_id = item[2]
                entry = pending.pop(event_id, None)
                if entry is None:
                    reason = ("label arrived twice" if event_id in labelled
                              else "label arrived after its event expired" if event_id in self.expired
                              else "label for an unknown event")
                    dead.append((run_id, shard, *dead_letter(
                        item, step="learn", reason=reason, source=batch.source)))
                    continue
                x, t, key, scores = entry
                y = item[3] == 1
                try:
                    if keyed:
                        for i in slot_range:
                            learners[i](x, y, key)
                    else:
                        for i in slot_range:
                            learners[i](x, y)
                except Exception as ex:  # noqa: BLE001 - no input may stop the dataflow
                    dead.append((run_id, shard, *dead_letter(
                        item, step="learn", reason=f"{type(ex).__name__}: {ex}", source=batch.source)))
                    continue
                learn_label(key=key, y=y)
                if recent is not None:
                    recent.append((x, y, key))
                alarmed: list[tuple[int, str]] = []
                row = len(lb_items)
                lb_items.append(item)
                lb_t.append(t)
                lb_y.append(y)
                for i in slot_range:
                    sc = scores[i]
                    lb_scores[i].append(sc)
                    dets = slots[i].detectors
                    if dets:
                        error = 0.0 if (sc >= threshold) == y else 1.0
                        for det in dets:
                            if det.update(error):
                                drifts.append((run_id, shard, item[0], det.name, "error", slots[i].name,
                                               slots[i].n_learned + 1, event_id, t))
                                if act:
                                    alarmed.append((i, det.name))
                slot = slots[0]
                slot.n_learned += 1
                for other in slots[1:]:
                    other.n_learned += 1
                if slot.n_learned % every == 0:
                    for i in slot_range:
                        self._checkpoint(slots[i], item[0], event_id, checkpoints)
                        ev_runs[i].append((len(ev_items), slots[i].version))
                        lb_runs[i].append((row + 1, slots[i].version))
                for i, detector in alarmed:
                    if self._act(slots[i], item[0], event_id, t, detector, checkpoints, actions):
                        probas[i], learners[i] = slots[i].estimator.predict_proba_one, slots[i].estimator.learn_one
                        ev_runs[i].append((len(ev_items), slots[i].version))
                        lb_runs[i].append((row + 1, slots[i].version))
                labelled.add(event_id)
        self._clock_us = clock
        if lb_items:
            self.last_labelled = lb_items[-1][2]
        expired = self._expire(batch.items[-1][0] if batch.items else self.last_seq)
        self.n_events += len(ev_items)
        self.n_labels += len(lb_items)
        if batch.items:
            self.last_seq = max(self.last_seq, batch.items[-1][0])
        if batch.dead:
            self.last_seq = max(self.last_seq, batch.dead[-1][0])
        if lb_items:
            # Prequential metrics for the whole batch at once (same result as label by label).
            times = np.fromiter(lb_t, np.int64, len(lb_t))
            label_times = np.fromiter((it[4] for it in lb_items), np.int64, len(lb_items))
            ys = np.fromiter(lb_y, bool, len(lb_y))
            for i, slot in enumerate(slots):
                scores_i = np.fromiter(lb_scores[i], np.float64, len(lb_scores[i]))
                for pos, row in slot.metrics.update_many(times, label_times, ys, scores_i):
                    metrics.append(_metric_row(run_id, shard, lb_items[pos][0], slot.name, row))
        champ = next(i for i, s in enumerate(slots) if s.role == CHAMPION)
        anomaly, tables = self.monitor.on_events(
            [it[0] for it in ev_items], [it[2] for it in ev_items], [it[3] for it in ev_items], ev_x,
            ev_scores[champ], champion=slots[champ].name)
        if lb_items:
            self.monitor.on_labels(lb_t, lb_y)
        monitored_drifts = tables.pop("drift_events", None)
        if ev_items:
            tables["predictions"] = self._predictions(ev_items, ev_x, ev_scores, ev_runs, anomaly)
        if lb_items:
            tables["learn_log"] = self._learn_log(lb_items, lb_t, lb_y, lb_scores, first_order, lb_runs)
        for name, rows in (("metrics", metrics), ("checkpoints", checkpoints), ("dead_letters", dead),
                           ("expired", expired), ("drift_events", drifts), ("drift_actions", actions)):
            if rows:
                tables[name] = rows_to_arrow(name, rows)
        if monitored_drifts is not None:
            tables["drift_events"] = (pa.concat_tables([tables["drift_events"], monitored_drifts])
                                      if "drift_events" in tables else monitored_drifts)
        return Output(shard, tables)

    def _act(self, slot: _Slot, seq: int, event_id: str, t: int, detector: str, checkpoints: list,
             actions: list) -> bool:
        """Carry out the configured drift action on ``slot`` after its detector alarmed; returns
        whether the model was replaced (not when it was replaced less than ``action_window`` learns ago)."""
        mon = self.config.monitor
        if slot.n_learned - slot.acted_at < mon.action_window:
            return False
        fresh = self._build(slot.name, self.slots.index(slot))
        trained_on = 0
        if mon.drift_action == "retrain" and self.recent:
            keyed = self.config.per_key
            for x, y, *key in self.recent:  # (x, y) in snapshots taken before per-key models
                if keyed:
                    fresh.learn_one(x, y, key[0])
                else:
                    fresh.learn_one(x, y)
            trained_on = len(self.recent)
        before = slot.n_learned
        slot.estimator = fresh
        slot.acted_at = slot.n_learned
        slot.detectors = [make_detector(d) for d in self.config.drift_detectors]
        self._checkpoint(slot, seq, event_id, checkpoints, suffix=f"-{mon.drift_action}")
        actions.append((self.config.run_id, self.shard, seq, slot.name, mon.drift_action, detector, "error",
                        event_id, t, before, trained_on, slot.version, datetime.now(UTC)))
        log.info("shard %d: %s alarmed on %s's errors after %d learns: %s (%d recent events)", self.shard,
                 detector, slot.name, before, mon.drift_action, trained_on)
        return True

    def _expire(self, seq: int) -> list[tuple]:
        """Stop waiting for labels of events older than the TTL; returns ``expired`` rows."""
        ttl = self.config.label_ttl_us
        arrivals = self._arrivals
        if ttl is None or not arrivals:
            return []
        cutoff = self._clock_us - ttl
        rows = []
        pending, expired = self.pending, self.expired
        while arrivals and arrivals[0][0] < cutoff:
            _, event_id = arrivals.popleft()
            entry = pending.pop(event_id, None)
            if entry is None:  # labelled meanwhile
                continue
            rows.append((self.config.run_id, self.shard, seq, event_id, entry[1], entry[2], self._clock_us))
            expired.add(event_id)
        if len(arrivals) > 2 * len(pending) + 10_000:
            # Labelled events linger here until the TTL (days of traffic): drop them, in order, so
            # memory and recovery snapshots follow the pending events (amortised O(1) per event).
            self._arrivals = deque(a for a in arrivals if a[1] in pending)
        return rows

    def _constant(self, value: Any, n: int, type_: pa.DataType) -> pa.Array:
        return pa.array([value] * n, type_)

    def _predictions(self, items, xs, scores, runs, anomaly: np.ndarray | None = None) -> pa.Table:
        n = len(items)
        shared = [
            pa.array([it[0] for it in items], pa.int64()),
            pa.array([it[2] for it in items], pa.string()),
            pa.array([it[3] for it in items], UTC_TS),
            pa.array([it[4] for it in items], pa.string()),
        ]
        features = features_array(xs)
        run_id = self._constant(self.config.run_id, n, pa.string())
        shard = self._constant(self.shard, n, pa.int32())
        anomaly_score = (pa.array(anomaly, pa.float64(), from_pandas=True) if anomaly is not None
                         else pa.nulls(n, pa.float64()))
        parts = []
        thr = self.config.threshold
        for i, slot in enumerate(self.slots):
            score = pa.array(scores[i], pa.float64())
            parts.append(pa.Table.from_arrays([
                run_id, shard, *shared, self._constant(slot.name, n, pa.string()),
                self._constant(slot.role, n, pa.string()), _expand_runs(runs[i], n), score,
                pc.cast(pc.greater_equal(score, thr), pa.int64()), features, anomaly_score,
            ], schema=PREDICTIONS))
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    def _learn_log(self, items, times, ys, scores, first_order, runs) -> pa.Table:
        n = len(items)
        shared = [
            pa.array([it[0] for it in items], pa.int64()),
            pa.array([it[2] for it in items], pa.string()),
            pa.array(times, UTC_TS),
            pa.array([it[4] for it in items], UTC_TS),
        ]
        run_id = self._constant(self.config.run_id, n, pa.string())
        shard = self._constant(self.shard, n, pa.int32())
        label = pa.array(ys, pa.bool_()).cast(pa.int64())
        parts = [
            pa.Table.from_arrays([
                run_id, shard, *shared, self._constant(slot.name, n, pa.string()), label,
                pa.array(scores[i], pa.float64()),
                pa.array(range(first_order[i], first_order[i] + n), pa.int64()),
                _expand_runs(runs[i], n),
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
                self._checkpoint(slot, seq, getattr(self, "last_labelled", None), checkpoints)
        tables = {name: rows_to_arrow(name, rows)
                  for name, rows in (("metrics", metrics), ("checkpoints", checkpoints)) if rows}
        tables.update(self.monitor.finish(seq))
        return Output(self.shard, tables)


def _metric_row(run_id: str, shard: int, seq: int, model: str, r: dict[str, Any]) -> tuple:
    return (
        run_id, shard, seq, model, r["window_start"], r["window_end"], r["n"], r["n_correct"],
        r["n_positive"], r["n_predicted_positive"], r["sum_log_loss"], r["accuracy"], r["log_loss"],
        r["roc_auc"], r["n_late_labels"], r["cum_n"], r["cum_accuracy"], r["cum_log_loss"],
    )


def _expand_runs(runs: list[tuple[int, str]], n: int) -> pa.Array:
    """A string column of length ``n`` from ``[(first_row, value), ...]`` runs."""
    values: list[str] = []
    for (row, value), nxt in zip(runs, [*runs[1:], (n, None)], strict=True):
        values.extend([value] * (nxt[0] - row))
    return pa.array(values, pa.string())
