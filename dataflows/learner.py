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
import os
import pickle
import platform
import sys
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, islice
from operator import itemgetter
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import river
from river.drift import ADWIN

from dataflows.columnar import Arena, Layout, log1p_counts, tokenize
from dataflows.columnar import available as columnar_available
from dataflows.discards import Discards
from dataflows.features import KeyedFeaturizer
from dataflows.guard import LearnUndo, score_problem, weights_check
from dataflows.items import EVENT, LABEL, Batch, Output
from dataflows.models import get_spec
from dataflows.perkey import PerKeyModel
from dataflows.recent import RecentIds
from dataflows.sparse import SparseLogisticRegression
from dataflows.validate import dead_letter
from lake import integrity
from lake import names as lake_names
from lake.arrow import features_array, rows_to_arrow
from lake.schemas import FEATURES, LEARN_LOG, PREDICTIONS, RUN_SUMMARIES, UTC_TS
from monitoring.columns import DenseFeatures
from monitoring.error_drift import ErrorDriftDetector, make_detector
from monitoring.prequential import WindowedPrequential
from monitoring.stream import MonitorConfig, StreamMonitor

log = logging.getLogger(__name__)

RIVERLAKE_VERSION = "0.1.0"
_NO_KEY = (0, 0, 0, 0, None)
_INT_OR_NONE = {int, type(None)}


def _is_not_none(value: Any) -> bool:
    return value is not None  # per-key history of a key the featurizer does not know
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
                 "acted_at", "fresh")

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
        # Nothing learned yet: the model's 0.5 would be a tie read as "positive"; the learner serves the
        # prior of the labels learned so far instead (see ShardLearner.prior).
        self.fresh = True


def model_digest(model_bytes: bytes) -> str:
    return hashlib.sha256(model_bytes).hexdigest()


class ShardLearner:
    """State and logic of the predict/learn step for one shard."""

    # Batches of columns take the columnar path when the run allows it (RIVERLAKE_COLUMNAR=0: never;
    # the rows are the same either way, only the cost differs).
    columnar = os.environ.get("RIVERLAKE_COLUMNAR", "1") != "0"

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
        self._undo = LearnUndo()  # makes a label's learn step all or nothing across the models
        self._arrivals: deque[tuple[int, str]] = deque()  # (event_time_us, event_id) of pending events
        self._clock_us = -(2**62)  # latest event time seen
        self.last_seq = -1
        self.n_events = 0
        self.n_labels = 0
        self.n_positive = 0  # positives among the n_labels learned (the prior a fresh model serves)
        self.discards = Discards()  # what did not reach learning, said at the end (dataflows.discards)
        self.last_labelled: str | None = None  # event id of the last label learned
        self.started = False
        self.monitor = StreamMonitor(config.monitor, run_id=config.run_id, shard=shard, seed=config.seed)
        # Recent labelled events (features, label, key), to retrain from when a drift action says so.
        self.recent: deque[tuple[dict, bool, str]] | None = (
            deque(maxlen=config.monitor.action_window) if config.monitor.drift_action == "retrain" else None)
        # The columnar path (dataflows.columnar): feature rows of pending events it took in, and caches.
        self._arena = Arena(len(self.slots))
        self._col_layout: Layout | None = None  # the layout of the arena's rows
        self._init_caches()

    def _init_caches(self) -> None:
        self._layouts: dict[tuple, Layout | None] = {}
        self._names: pa.Array | None = None  # every feature id's name, for the predictions' feature maps
        self._tr: list[tuple[Any, int, np.ndarray] | None] = [None] * len(self.slots)
        self.columnar_batches = 0  # batches the columnar path took (the others went item by item)

    def __getstate__(self) -> dict[str, Any]:
        if self._arena.n > len(self.pending) + 1024:
            self._arena.compact(self.pending)  # snapshots carry the rows still waiting, no more
        state = self.__dict__.copy()
        for name in ("_layouts", "_names", "_tr", "columnar_batches", "_undo"):  # caches
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "discards" not in state:  # a snapshot from before the end-of-run summary and the cold-start prior
            self.discards = Discards()
            self.n_positive = 0
            for slot in self.slots:
                slot.fresh = slot.n_learned == 0
        if "_arena" not in state:  # a snapshot from before the columnar path
            self._arena = Arena(len(self.slots))
            self._col_layout = None
        self._undo = LearnUndo()
        self._init_caches()

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
    def _checkpoint(self, slot: _Slot, seq: int, last_event_id: str | None, rows: list, suffix: str = "") -> bytes:
        """Snapshot ``slot``'s model into a ``checkpoints`` row; returns the pickled bytes."""
        data = pickle.dumps(slot.estimator, protocol=5)
        cid = f"{slot.name}:s{self.shard}:{slot.n_learned}{suffix}"
        slot.version = cid
        slot.checkpointed_at = slot.n_learned
        rows.append((
            self.config.run_id, self.shard, seq, cid, slot.name, self._description(slot.name),
            slot.n_learned, last_event_id, model_digest(data), river.__version__,
            platform.python_version(), RIVERLAKE_VERSION, data, datetime.now(UTC),
            integrity.sign(data, purpose=integrity.checkpoint_purpose(self.config.run_id, cid)),
        ))
        return data

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
        out = self._process(batch)
        self.discards.tally(out.tables, n_models=len(self.slots))
        return out

    def prior(self) -> float:
        """What a model that has learned nothing serves: the share of positives among the labels learned
        so far on this shard, 0.0 (negative) when none."""
        return self.n_positive / self.n_labels if self.n_labels else 0.0

    def _process(self, batch: Batch) -> Output:
        if self.columnar and batch.columns is not None and not batch.materialized and self._columnar_ok():
            out = self._process_columnar(batch)
            if out is not None:
                return out
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
            self._undo.rebase([self._checkpoint(slot, first_seq, None, checkpoints) for slot in slots])
            self.started = True
        featurizer = self.featurizer
        transform, observe, learn_label = featurizer.transform_one, featurizer.learn_one, featurizer.learn_label
        pending = self.pending
        labelled = self.labelled
        every = cfg.checkpoint_every
        n_slots = len(slots)
        probas = [s.estimator.predict_proba_one for s in slots]
        learners = [s.estimator.learn_one for s in slots]
        names = [s.name for s in slots]
        undo = self._undo
        checks = _weight_checks(slots)
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
        fresh = [s.fresh for s in slots]
        cold = any(fresh) or keyed  # some model has learned nothing (per key: a key may have no model)
        n_lab, n_pos = self.n_labels, self.n_positive
        for item in batch.items:
            if item[1] == EVENT:
                _, _, event_id, t, key, payload = item
                if event_id in pending or event_id in labelled:
                    dead.append((run_id, shard, *dead_letter(
                        item, step="predict", reason="duplicate event_id", source=batch.source)))
                    continue
                try:
                    x = transform(payload, key=key, event_time_us=t)
                    if cold:
                        scores = self._cold_scores(x, key, probas, fresh, n_lab, n_pos)
                    else:
                        scores = []
                        for i in slot_range:
                            p = probas[i](x)
                            scores.append(p.get(True, 0.0) if p else 0.5)
                    problem = score_problem(scores, names)  # (features are bounded by validation)
                except Exception as ex:  # noqa: BLE001 - no input may stop the dataflow
                    problem = f"{type(ex).__name__}: {ex}"
                if problem is not None:
                    dead.append((run_id, shard, *dead_letter(item, step="predict", reason=problem,
                                                             source=batch.source)))
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
                if type(entry) is int:  # an event the columnar path took in
                    entry = self._arena_entry(entry)
                x, t, key, scores = entry
                y = item[3] == 1
                if undo.base is None:
                    undo.before_learn([s.estimator for s in slots])
                problem = None
                try:
                    if keyed:
                        for i in slot_range:
                            learners[i](x, y, key)
                    else:
                        for i in slot_range:
                            learners[i](x, y)
                    for i, check in checks:
                        if check(x, key):
                            problem = f"model {slots[i].name!r} would be left with non-finite weights"
                            break
                except Exception as ex:  # noqa: BLE001 - no input may stop the dataflow
                    problem = f"{type(ex).__name__}: {ex}"
                if problem is not None:
                    # All or nothing: every model back to its state before this step (dataflows.guard).
                    for slot, model in zip(slots, undo.restore(keyed=keyed), strict=True):
                        slot.estimator = model
                    probas = [s.estimator.predict_proba_one for s in slots]
                    learners = [s.estimator.learn_one for s in slots]
                    checks = _weight_checks(slots)
                    dead.append((run_id, shard, *dead_letter(
                        item, step="learn", reason=problem, source=batch.source)))
                    continue
                undo.learned(x, y, key)
                learn_label(key=key, y=y)
                n_lab += 1
                n_pos += y
                if cold and not keyed:
                    for i in slot_range:
                        fresh[i] = slots[i].fresh = False
                    cold = False
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
                    base = []
                    for i in slot_range:
                        base.append(self._checkpoint(slots[i], item[0], event_id, checkpoints))
                        ev_runs[i].append((len(ev_items), slots[i].version))
                        lb_runs[i].append((row + 1, slots[i].version))
                    undo.rebase(base)
                for i, detector in alarmed:
                    if self._act(slots[i], item[0], event_id, t, detector, checkpoints, actions):
                        probas[i], learners[i] = slots[i].estimator.predict_proba_one, slots[i].estimator.learn_one
                        fresh[i] = slots[i].fresh
                        cold = cold or fresh[i]
                        checks = _weight_checks(slots)
                        undo.rebase(None)
                        ev_runs[i].append((len(ev_items), slots[i].version))
                        lb_runs[i].append((row + 1, slots[i].version))
                labelled.add(event_id)
        self._clock_us = clock
        if lb_items:
            self.last_labelled = lb_items[-1][2]
        expired = self._expire(batch.items[-1][0] if batch.items else self.last_seq)
        self.n_events += len(ev_items)
        self.n_labels += len(lb_items)
        self.n_positive = n_pos
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

    def _cold_scores(self, x: dict, key: Any, probas: list, fresh: list[bool], n_lab: int, n_pos: int) -> list[float]:
        """Every model's score of one event when some model has learned nothing: such a model serves the
        prior of the labels learned so far (:meth:`prior`); a per-key model without a model for ``key``
        (never learned from, or forgotten) serves 0.0, the prior of the key's labels it holds (none)."""
        scores = []
        keyed = self.config.per_key
        for i, slot in enumerate(self.slots):
            p = probas[i](x, key) if keyed else probas[i](x)  # (asked all the same: its errors dead-letter the event)
            if keyed and not slot.estimator.has_model(key):
                scores.append(0.0)
            elif not keyed and fresh[i]:
                scores.append(n_pos / n_lab if n_lab else 0.0)
            else:
                scores.append(p.get(True, 0.0) if p else 0.5)
        return scores

    # -- the columnar path ------------------------------------------------------------
    def _columnar_ok(self) -> bool:
        """Whether this run's settings let batches take the columnar path (dataflows.columnar)."""
        cfg = self.config
        mon = cfg.monitor
        return (not cfg.per_key and mon.drift_action == "none" and mon.anomaly is None and not mon.watch
                and all(type(s.estimator) is SparseLogisticRegression for s in self.slots) and columnar_available())

    def _arena_entry(self, slot: int) -> tuple:
        """A pending entry ``(x, t, key, scores)`` from the arena (for the item-by-item path)."""
        arena = self._arena
        layout = self._col_layout
        fs, vs = arena.row(slot)
        x = {layout.name_of(f): v for f, v in zip(fs.tolist(), vs.tolist(), strict=True)}
        return x, int(arena.a_t[slot]), arena.keys[slot], arena.scores[slot].tolist()

    def _layout(self, cols: Any) -> Layout | None:
        ev = cols.events
        sig = tuple((c, str(ev.schema[c])) for c in cols.payload_columns)
        if sig not in self._layouts:
            self._layouts[sig] = Layout.of(self.featurizer, list(cols.payload_columns),
                                           {c: ev.schema[c] for c in cols.payload_columns})
        layout = self._layouts[sig]
        if layout is None:
            return None
        current = self._col_layout
        if current is not layout:
            if current is None or current.__dict__ != layout.__dict__:
                if current is not None and any(type(v) is int for v in self.pending.values()):
                    return None  # pending rows of another layout: keep to the item-by-item path
                self._names = None
                self._tr = [None] * len(self.slots)
            self._col_layout = current = layout  # (the same layout, unpickled: from now on one object)
        if self._names is None:
            self._names = current.names()
        return current

    def _translation(self, i: int, layout: Layout) -> np.ndarray:
        """Feature id -> position in model ``i``'s weights (-1: none yet), kept in step with the model."""
        est = self.slots[i].estimator
        cached = self._tr[i]
        if cached is not None and cached[0] is est and cached[1] == len(est.index):
            return cached[2]
        if cached is not None and cached[0] is est:
            tr, start = cached[2], cached[1]
        else:
            tr, start = np.full(layout.size, -1, np.int32), 0
        for name, pos in islice(est.index.items(), start, None):
            f = layout.index_of(name)
            if f is not None:
                tr[f] = pos
        self._tr[i] = (est, len(est.index), tr)
        return tr

    def _process_columnar(self, batch: Batch) -> Output | None:
        """:meth:`process` on a batch of columns, or ``None`` (nothing changed) when the batch needs
        the item-by-item path: the same rows, bit for bit (``tests/test_columnar.py``)."""
        cols = batch.columns
        layout = self._layout(cols)
        if layout is None:
            return None
        cfg = self.config
        ev, lb = cols.events, cols.labels
        n_ev, n_lb = ev.height, lb.height
        kinds = cols.kinds.copy()
        start = cols.start
        pending, labelled, expired = self.pending, self.labelled, self.expired
        if not kinds.size or n_lb > labelled.capacity:
            return None  # (labels of one batch would push each other out of `labelled`: item by item)
        ev_ids = ev.get_column("event_id").to_list()
        if (len(set(ev_ids)) != n_ev or not pending.keys().isdisjoint(ev_ids)
                or not labelled.isdisjoint(ev_ids)):
            return None  # duplicate events: dead letters, item by item
        ev_keys = ev.get_column("key").to_list()
        ev_t = ev.get_column("event_time").to_numpy().astype(np.int64, copy=False)
        payload = self._columnar_payload(layout, ev)
        if payload is None:
            return None
        tok_parts, dense = payload
        lb_ids = lb.get_column("event_id").to_list()
        ev_items = cols.event_items
        lb_items = cols.label_items
        resolved = self._resolve_labels(layout, ev_ids, lb_ids, ev_items, lb_items)
        if resolved is None:
            return None
        acc_j, acc_ref, dead_j, convert, done = resolved
        arena = self._arena
        # -- from here on, state changes --------------------------------------------------------
        self.columnar_batches += 1
        self._undo.rebase(None)  # the models learn here without the undo's log
        run_id, shard = cfg.run_id, self.shard
        checkpoints: list[tuple] = []
        slots = self.slots
        if not self.started:
            for slot in slots:
                self._checkpoint(slot, start, None, checkpoints)
            self.started = True
        dead = [(run_id, shard, *d) for d in batch.dead]
        if dead_j:
            lab, lab_t, lab_k = (lb.get_column(c).to_list() for c in ("label", "label_time", "key"))
            room = labelled.capacity - len(labelled)  # adds before `labelled` starts forgetting
            for j in dead_j:
                eid = lb_ids[j]
                item = (start + int(lb_items[j]), LABEL, eid, lab[j], lab_t[j], lab_k[j])
                known = eid in done or eid in labelled and (
                    bisect_left(acc_j, j) <= room or labelled.age(eid) >= bisect_left(acc_j, j) - room)
                reason = ("label arrived twice" if known
                          else "label arrived after its event expired" if eid in expired
                          else "label for an unknown event")
                dead.append((run_id, shard, *dead_letter(item, step="learn", reason=reason, source=batch.source)))
                kinds[lb_items[j]] = 2
        # Rows the item-by-item path left pending, into the arena (before this batch's rows).
        for pos, fs, (x, t, key, scores) in convert:
            acc_ref[pos] = arena.add_row(fs, list(x.values()), t, key, scores)
        base_slot = arena.n
        acc_slot = np.fromiter(acc_ref, np.int64, len(acc_ref))
        ours = acc_slot < 0
        acc_slot[ours] = base_slot - 1 - acc_slot[ours]
        n_acc = len(acc_j)
        lb_slot = acc_slot
        acc_idx = np.fromiter(acc_j, np.int64, n_acc)
        lb_y = lb.get_column("label").to_numpy()[acc_idx].astype(np.int64)
        # Item -> index among events / accepted labels.
        n_items = kinds.size
        ev_pos = np.zeros(n_items, np.int64)
        ev_pos[ev_items] = np.arange(n_ev)
        lb_item_acc = lb_items[acc_idx]  # positions of the accepted labels
        lb_pos = np.zeros(n_items, np.int64)
        lb_pos[lb_item_acc] = np.arange(n_acc)
        ev_slot = np.arange(base_slot, base_slot + n_ev, dtype=np.int64)
        b0, b1 = self._featurize_columnar(layout, kinds, ev_keys, ev_t, tok_parts, dense, ev_items, lb_item_acc,
                                          lb_slot, lb_y, ev_pos, lb_pos, ev_slot, base_slot)
        # Every model: predict and learn in item order, checkpointing where the item path would.
        every = cfg.checkpoint_every
        first_order = [s.n_learned + 1 for s in slots]
        n0 = slots[0].n_learned
        cuts = [L for L in range(n_acc) if (n0 + L + 1) % every == 0]
        ev_scores = np.zeros((len(slots), n_ev), np.float64)
        ev_runs = [[(0, s.version)] for s in slots]
        lb_runs = [[(0, s.version)] for s in slots]
        seg_start = 0
        for cut in [*cuts, None]:
            seg_stop = n_items if cut is None else int(lb_item_acc[cut]) + 1
            for i, slot in enumerate(slots):
                self._run_linear(i, layout, kinds, seg_start, seg_stop, ev_pos, lb_pos, ev_slot, lb_slot, lb_y,
                                 ev_scores[i])
                slot.n_learned = first_order[i] - 1 + (n_acc if cut is None else cut + 1)
            if cut is not None:
                n_ev_before = int(np.searchsorted(ev_items, seg_stop))
                eid = lb_ids[acc_j[cut]]
                for i in range(len(slots)):
                    self._checkpoint(slots[i], start + int(lb_item_acc[cut]), eid, checkpoints)
                    ev_runs[i].append((n_ev_before, slots[i].version))
                    lb_runs[i].append((cut + 1, slots[i].version))
            seg_start = seg_stop
        if any(s.fresh for s in slots):  # models that had learned nothing serve the prior until their first label
            before = int(np.searchsorted(ev_items, lb_item_acc[0])) if n_acc else n_ev
            for i, slot in enumerate(slots):
                if slot.fresh:
                    ev_scores[i, :before] = self.prior()
                    slot.fresh = not n_acc
        arena.scores[base_slot: base_slot + n_ev] = ev_scores.T
        # Bookkeeping the item path does per item.
        acc_ids = [lb_ids[j] for j in acc_j]
        pending.update(zip(ev_ids, range(base_slot, base_slot + n_ev), strict=True))
        deque(map(pending.pop, acc_ids), maxlen=0)
        labelled.update(acc_ids)
        if cfg.label_ttl_us is not None:
            self._arrivals.extend(zip(ev_t.tolist(), ev_ids, strict=True))
        if n_ev:
            self._clock_us = max(self._clock_us, int(ev_t.max()))
        lb_scores = arena.scores[lb_slot].T if n_acc else np.zeros((len(slots), 0))
        lb_t = arena.a_t[lb_slot]
        ys = lb_y.astype(bool)
        alarms: list[tuple] = []  # (label, model, detector, row): sorted, the rows come in the item path's order
        threshold = cfg.threshold
        if n_acc:
            self.last_labelled = acc_ids[-1]
            for i, slot in enumerate(slots):
                if not slot.detectors:
                    continue
                errors = ((lb_scores[i] >= threshold) != ys).astype(np.float64).tolist()
                for d, det in enumerate(slot.detectors):
                    for L in _alarms(det._detector, errors):
                        j = acc_j[L]
                        alarms.append((L, i, d, (run_id, shard, start + int(lb_items[j]), det.name, "error",
                                                 slot.name, first_order[i] + L, lb_ids[j], int(lb_t[L]))))
        drifts = [a[3] for a in sorted(alarms, key=lambda a: a[:3])]
        last_seq = start + n_items - 1
        expired_rows = self._expire(last_seq)
        self.n_events += n_ev
        self.n_labels += n_acc
        self.n_positive += int(lb_y.sum())
        self.last_seq = max(self.last_seq, last_seq)
        if batch.dead:
            self.last_seq = max(self.last_seq, batch.dead[-1][0])
        tables: dict[str, pa.Table] = {}
        metrics: list[tuple] = []
        if n_acc:
            label_times = lb.get_column("label_time").to_numpy()[acc_idx].astype(np.int64)
            seqs_lb = (lb_item_acc + start).tolist()
            for i, slot in enumerate(slots):
                for pos, row in slot.metrics.update_many(lb_t, label_times, ys, lb_scores[i]):
                    metrics.append(_metric_row(run_id, shard, seqs_lb[pos], slot.name, row))
        champ = next(i for i, s in enumerate(slots) if s.role == CHAMPION)
        ev_seqs = (ev_items + start).tolist()
        if n_ev:
            rows = np.repeat(np.arange(n_ev), arena.a_len[base_slot: base_slot + n_ev])
            fs = arena.p_f[b0:b1]
            named = fs >= layout.base
            mat = np.full((n_ev, len(layout.named)), np.nan)
            mat[rows[named], fs[named] - layout.base] = arena.p_v[b0:b1][named]
            xs = DenseFeatures(layout.named, mat)
        else:
            xs = DenseFeatures(layout.named, np.zeros((0, len(layout.named))))
        _, mon_tables = self.monitor.on_events(ev_seqs, ev_ids, ev_t.tolist(), xs, ev_scores[champ].tolist(),
                                               champion=slots[champ].name)
        tables.update(mon_tables)
        if n_acc:
            self.monitor.on_labels(lb_t, ys)
        monitored_drifts = tables.pop("drift_events", None)
        if n_ev:
            offsets = np.empty(n_ev + 1, np.int32)
            offsets[:-1] = arena.a_off[base_slot: base_slot + n_ev] - b0
            offsets[-1] = b1 - b0
            names = self._names
            features = pa.MapArray.from_arrays(pa.array(offsets), names.take(pa.array(arena.p_f[b0:b1])),
                                               pa.array(arena.p_v[b0:b1]), type=FEATURES)
            shared = [pa.array(ev_seqs, pa.int64()), ev.get_column("event_id").to_arrow().cast(pa.string()),
                      pa.array(ev_t, pa.int64()).cast(UTC_TS), ev.get_column("key").to_arrow().cast(pa.string())]
            tables["predictions"] = self._predictions_table(shared, features, ev_scores, ev_runs, None)
        if n_acc:
            shared = [pa.array(seqs_lb, pa.int64()), pa.array(acc_ids, pa.string()),
                      pa.array(lb_t, pa.int64()).cast(UTC_TS), pa.array(label_times, pa.int64()).cast(UTC_TS)]
            tables["learn_log"] = self._learn_log_table(shared, pa.array(lb_y, pa.int64()), lb_scores,
                                                        first_order, lb_runs)
        for name, rows_ in (("metrics", metrics), ("checkpoints", checkpoints), ("dead_letters", dead),
                            ("expired", expired_rows), ("drift_events", drifts)):
            if rows_:
                tables[name] = rows_to_arrow(name, rows_)
        if monitored_drifts is not None:
            tables["drift_events"] = (pa.concat_tables([tables["drift_events"], monitored_drifts])
                                      if "drift_events" in tables else monitored_drifts)
        if arena.n > 3 * len(pending) + 32_768:
            arena.compact(pending)
        return Output(shard, tables)

    def _columnar_payload(self, layout: Layout, ev: pl.DataFrame) -> tuple[list[tuple], np.ndarray] | None:
        """The events' hashed tokens (per hashed field) and named payload features (a matrix), or
        ``None`` when the item path must decide (a character whose lowercase is ASCII; missing
        numbers while window statistics still discover names)."""
        n_ev = ev.height
        tok_parts = [tokenize(ev.get_column(f).to_arrow(), layout.n_buckets) for f in layout.hash_fields]
        if any(part[4].any() for part in tok_parts):
            return None  # Python's str.lower decides those
        dense = np.empty((n_ev, layout.n_dense), np.float64)
        for kind, j, col in layout.entries:
            if kind == 0:
                continue
            name = layout.named[j]
            if name == col + "_len" and col in layout.hash_fields:
                chars = tok_parts[layout.hash_fields.index(col)][2]
                dense[:, j] = log1p_counts(chars)
            elif name == col + "_tokens" and col in layout.hash_fields:
                part = tok_parts[layout.hash_fields.index(col)]
                dense[:, j] = log1p_counts(np.where(part[2] >= 0, part[3], -1))
            else:
                dense[:, j] = lake_names.plain(ev.get_column(col)).cast(pl.Float64).fill_null(np.nan).to_numpy()
        if self.monitor.windows is not None and layout.n_dense and np.isnan(dense).any():
            return None  # the window statistics discover names item by item
        return tok_parts, dense

    def _resolve_labels(self, layout: Layout, ev_ids: list[str], lb_ids: list[str], ev_items: np.ndarray,
                        lb_items: np.ndarray) -> tuple | None:
        """Which pending event (or event of this batch) each label is for, in order, changing nothing:
        ``(accepted label indices, their arena slots or -1 - event index, dead label indices, pending
        entries of the item path to convert, ids labelled)``; ``None`` when the item path must decide
        (a label ahead of its own event; a pending entry with features this layout does not make)."""
        pending = self.pending
        n_ev, n_lb = len(ev_ids), len(lb_ids)
        local = dict(zip(ev_ids, range(-1, -n_ev - 1, -1), strict=True))  # event of this batch: -1 - index
        done: set[str] = set()
        acc_j: list[int] = []  # accepted labels (index in the batch's labels)
        acc_ref: list[int] = []  # their arena slot, or -1 - index of an event of this batch
        dead_j: list[int] = []
        convert: list[tuple[int, list[int], tuple]] = []  # (position in acc, feature ids, item-path entry)
        pget, lget = pending.get, local.get
        refs = list(map(pget, lb_ids))
        if set(map(type, refs)) <= _INT_OR_NONE and len(set(lb_ids)) == n_lb:
            # The common case: every label once, for an event the columnar path took in.
            for j in [j for j, r in enumerate(refs) if r is None]:
                e = lget(lb_ids[j])
                if e is None:
                    dead_j.append(j)
                elif ev_items[-1 - e] > lb_items[j]:
                    return None  # a label ahead of its own event in the batch
                else:
                    refs[j] = e
            if dead_j:
                gone = set(dead_j)
                acc_j = [j for j in range(n_lb) if j not in gone]
                acc_ref = [refs[j] for j in acc_j]
            else:
                acc_j, acc_ref = list(range(n_lb)), refs
        else:
            for j, eid in enumerate(lb_ids):
                ref = pget(eid)
                if ref is None:
                    ref = lget(eid)
                    if ref is None or eid in done:
                        dead_j.append(j)
                        continue
                    if ev_items[-1 - ref] > lb_items[j]:
                        return None  # a label ahead of its own event in the batch
                elif eid in done:
                    dead_j.append(j)
                    continue
                elif type(ref) is not int:
                    fs = [layout.index_of(k) for k in ref[0]]
                    if None in fs:
                        return None  # features this layout does not make: item by item
                    convert.append((len(acc_j), fs, ref))
                    ref = 0
                done.add(eid)
                acc_j.append(j)
                acc_ref.append(ref)
        return acc_j, acc_ref, dead_j, convert, done

    def _featurize_columnar(self, layout: Layout, kinds: np.ndarray, ev_keys: list[str], ev_t: np.ndarray,
                            tok_parts: list[tuple], dense: np.ndarray, ev_items: np.ndarray, lb_item_acc: np.ndarray,
                            lb_slot: np.ndarray, lb_y: np.ndarray, ev_pos: np.ndarray, lb_pos: np.ndarray,
                            ev_slot: np.ndarray, base_slot: int) -> tuple[int, int]:
        """Every event's feature row into the arena and the featurizer's history updated, in item order,
        forgetting keys where the item path would; returns the pool range of the batch's rows."""
        featurizer = self.featurizer
        keys_state = featurizer._keys
        arena = self._arena
        n_ev, n_acc, n_items = len(ev_keys), lb_slot.size, kinds.size
        n_hash = len(layout.hash_fields)
        # Keys: local ids, state gathered from the featurizer.
        arena.reserve(n_ev, 0)
        arena.keys.extend(ev_keys)
        lb_keys = (list(itemgetter(*lb_slot.tolist())(arena.keys)) if n_acc > 1
                   else [arena.keys[int(lb_slot[0])]] if n_acc else [])
        uniq = list(dict.fromkeys(chain(ev_keys, lb_keys)))
        kid = {k: i for i, k in enumerate(uniq)}
        nk = len(uniq)
        ev_kid = np.fromiter(map(kid.__getitem__, ev_keys), np.int64, n_ev)
        lb_kid = np.fromiter(map(kid.__getitem__, lb_keys), np.int64, n_acc)
        glob = np.array([featurizer._n_labels, featurizer._n_positive], np.int64)
        # Token CSR of every hashed field, as feature ids.
        tok_off = np.zeros((max(n_hash, 1), n_ev + 1), np.int64)
        tok_f = [np.zeros(0, np.int64)]
        offset = 0
        for j, part in enumerate(tok_parts):
            tok_off[j] = part[0] + offset
            tok_f.append(part[1] + j * layout.n_buckets)
            offset += part[1].size
        tok_f_all = np.concatenate(tok_f)
        layout_kind = np.array([k for k, _, _ in layout.entries], np.int64)
        layout_j = np.array([j for _, j, _ in layout.entries], np.int64)
        dense_f = np.arange(layout.base, layout.base + layout.n_dense, dtype=np.int64)
        per_event = layout.n_dense + (4 if layout.time_features else 0) + (4 if layout.key_features else 0)
        arena.reserve(n_ev, int(tok_f_all.size) + n_ev * per_event)
        b0 = arena.top
        # Items in order, with their key ids: where a new key would make the featurizer forget keys.
        at = np.concatenate([ev_items, lb_item_acc])
        order = np.argsort(at, kind="stable")
        at, key_at, by_event = at[order], np.concatenate([ev_kid, lb_kid])[order], order < n_ev
        from dataflows import _kernels

        seg_a = 0
        while True:
            # Key history of the batch's keys, gathered into arrays ...
            states = list(map(keys_state.get, uniq))
            k_present = np.fromiter(map(_is_not_none, states), np.bool_, nk)
            cols_k = list(zip(*[_NO_KEY if st is None else st for st in states], strict=True)) if nk else [()] * 5
            k_n, k_last, k_nlab, k_npos = (np.array(c, np.int64) for c in cols_k[:4])
            k_rec = np.array(cols_k[4], np.float64)  # None -> NaN
            k_hasrec = ~np.isnan(k_rec)
            k_rec[~k_hasrec] = 0.0
            k_first = np.full(nk, -1, np.int64)
            was_present = k_present.copy()
            prune_at = (_prune_point(at, key_at, by_event, k_present, seg_a, len(keys_state), featurizer.max_keys)
                        if layout.key_features else None)
            seg_b = n_items if prune_at is None else prune_at + 1
            # ... the segment up to the event after which the item path would forget keys ...
            arena.top = _kernels._featurize(
                kinds, seg_a, seg_b, ev_pos, lb_pos, tok_off, tok_f_all, dense, dense_f, layout_kind, layout_j,
                ev_t, ev_kid, ev_slot, lb_kid, lb_y,
                k_n, k_last, k_nlab, k_npos, k_rec, k_hasrec, k_present, k_first, glob,
                layout.time_features, layout.time_at, layout.key_features, layout.key_at,
                featurizer.smoothing, featurizer.recent_alpha, featurizer.shared_prior,
                arena.a_off, arena.a_len, arena.p_f, arena.p_v, arena.top)
            # ... and the history back into the featurizer (new keys in the order they appeared).
            featurizer._n_labels, featurizer._n_positive = int(glob[0]), int(glob[1])
            if layout.key_features:
                recs = [r if h else None for r, h in zip(k_rec.tolist(), k_hasrec.tolist(), strict=True)]
                rows_k = list(zip(k_n.tolist(), k_last.tolist(), k_nlab.tolist(), k_npos.tolist(), recs,
                                  strict=True))
                for st, row in zip(states, rows_k, strict=True):
                    if st is not None:
                        st[:] = row
                fresh_mask = k_present & ~was_present
                for i in np.flatnonzero(fresh_mask)[np.argsort(k_first[fresh_mask], kind="stable")].tolist():
                    keys_state[uniq[i]] = list(rows_k[i])
            if prune_at is None:
                break
            featurizer._prune()  # what the item path's learn_one does at that event
            seg_a = seg_b
        b1 = arena.top
        arena.a_t[base_slot: base_slot + n_ev] = ev_t
        arena.n += n_ev
        return b0, b1

    def _run_linear(self, i: int, layout: Layout, kinds, start: int, stop: int, ev_pos, lb_pos, ev_slot, lb_slot,
                    lb_y, scores: np.ndarray) -> None:
        est = self.slots[i].estimator
        arena = self._arena
        tr = self._translation(i, layout)
        n_w = len(est.values)
        extra = int(arena.a_len[lb_slot].sum()) if lb_slot.size else 0
        w = np.frombuffer(est.values, np.float64)
        w_new = np.empty(extra, np.float64)
        new_f = np.empty(extra, np.int64)
        n_new = np.zeros(1, np.int64)
        state = np.array([est.intercept], np.float64)
        from dataflows import _kernels

        _kernels._linear(kinds, start, stop, ev_pos, lb_pos, ev_slot, lb_slot, lb_y, arena.a_off, arena.a_len,
                       arena.p_f, arena.p_v, tr, w, w_new, n_w, new_f, n_new, state, est.lr, est.intercept_lr,
                       est.clip, scores)
        del w
        est.intercept = float(state[0])
        k = int(n_new[0])
        if k:
            est.values.frombytes(w_new[:k].tobytes())
            est.index.update(zip(self._names.take(pa.array(new_f[:k])).to_pylist(), range(n_w, n_w + k), strict=True))
        index = est.index
        self._tr[i] = (est, len(index), tr)

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
        slot.fresh = trained_on == 0
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
            if type(entry) is int:
                t, key = int(self._arena.a_t[entry]), self._arena.keys[entry]
            else:
                t, key = entry[1], entry[2]
            rows.append((self.config.run_id, self.shard, seq, event_id, t, key, self._clock_us))
            expired.add(event_id)
        if len(arrivals) > 2 * len(pending) + 10_000:
            # Labelled events linger here until the TTL (days of traffic): drop them, in order, so
            # memory and recovery snapshots follow the pending events (amortised O(1) per event).
            self._arrivals = deque(a for a in arrivals if a[1] in pending)
        return rows

    def _constant(self, value: Any, n: int, type_: pa.DataType) -> pa.Array:
        return pa.repeat(pa.scalar(value, type_), n)

    def _predictions(self, items, xs, scores, runs, anomaly: np.ndarray | None = None) -> pa.Table:
        shared = [
            pa.array([it[0] for it in items], pa.int64()),
            pa.array([it[2] for it in items], pa.string()),
            pa.array([it[3] for it in items], UTC_TS),
            pa.array([it[4] for it in items], pa.string()),
        ]
        return self._predictions_table(shared, features_array(xs), scores, runs, anomaly)

    def _predictions_table(self, shared: list[pa.Array], features: pa.Array, scores, runs,
                           anomaly: np.ndarray | None) -> pa.Table:
        n = len(features)
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
        shared = [
            pa.array([it[0] for it in items], pa.int64()),
            pa.array([it[2] for it in items], pa.string()),
            pa.array(times, UTC_TS),
            pa.array([it[4] for it in items], UTC_TS),
        ]
        return self._learn_log_table(shared, pa.array(ys, pa.bool_()).cast(pa.int64()), scores, first_order, runs)

    def _learn_log_table(self, shared: list[pa.Array], label: pa.Array, scores, first_order, runs) -> pa.Table:
        n = len(label)
        run_id = self._constant(self.config.run_id, n, pa.string())
        shard = self._constant(self.shard, n, pa.int32())
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
        self.discards.tally(tables, n_models=len(self.slots))
        row = self.discards.row(run_id=self.config.run_id, shard=self.shard, seq=seq,
                                label_ttl_us=self.config.label_ttl_us)
        tables["run_summaries"] = pa.Table.from_pylist([row], schema=RUN_SUMMARIES)
        print(row["summary"], file=sys.stderr, flush=True)
        if row["warning"] is not None:
            print(f"warning: {row['warning']}", file=sys.stderr, flush=True)
        return Output(self.shard, tables)


def _prune_point(at: np.ndarray, key_at: np.ndarray, by_event: np.ndarray, present: np.ndarray, start: int,
                 n_keys: int, max_keys: int) -> int | None:
    """The position of the first item from ``start`` on after which the featurizer forgets keys: an
    event whose key is new when the featurizer already holds ``max_keys`` keys (labels add keys
    without forgetting). ``at``: item positions in order; ``key_at``: their key ids; ``present``:
    which key ids the featurizer holds now."""
    room = max_keys - n_keys
    sel = at >= start
    keys = key_at[sel]
    new = ~present[keys]
    if int(new.sum()) <= room:  # (an upper bound of the keys the segment adds)
        return None
    positions, events = at[sel][new], by_event[sel][new]
    _, first = np.unique(keys[new], return_index=True)
    first.sort()  # each new key's first item, in order
    count = np.arange(1, first.size + 1)
    over = np.flatnonzero((count > room) & events[first])
    return int(positions[first[over[0]]]) if over.size else None


def _weight_checks(slots: list[_Slot]) -> list[tuple[int, Any]]:
    """``(index, check)`` of the models whose weights a learn step must leave finite (dataflows.guard)."""
    return [(i, check) for i, check in enumerate(weights_check(s.estimator) for s in slots) if check is not None]


def _alarms(det: Any, errors: list[float]) -> list[int]:
    """Feed ``errors`` to a River drift detector; the positions where it alarmed."""
    out = []
    if type(det) is ADWIN:  # its update() without the method call: reset after an alarm, then the helper
        for pos, err in enumerate(errors):
            if det._drift_detected:
                det._reset()
            det._drift_detected = alarm = det._helper.update(err)
            if alarm:
                out.append(pos)
        return out
    update = det.update
    for pos, err in enumerate(errors):
        update(err)
        if det.drift_detected:
            out.append(pos)
    return out


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


def seal_learner(learner: ShardLearner | None, config: RunConfig) -> tuple[str, bytes]:
    """A learner as recovery state: its pickle and that pickle's HMAC (:func:`lake.integrity.seal`)."""
    return integrity.seal(pickle.dumps(learner, protocol=5), purpose=integrity.RECOVERY_PURPOSE)


def resume_learner(sealed: Any, config: RunConfig) -> ShardLearner | None:
    """The learner of a :func:`seal_learner` snapshot, unpickled only once its HMAC checked out."""
    if sealed is None:
        return None
    return integrity.unseal(sealed, purpose=integrity.RECOVERY_PURPOSE,
                            what=f"recovery state of run {config.run_id!r}")
