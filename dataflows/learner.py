"""The predict/learn step of one shard, free of Bytewax so it is tested on its own.

For each event: featurize (per-key state), let every model predict, keep the
features until the label comes. For each label: join it with the stored
features, score the stored predictions (prequential metrics), let every model
learn, and checkpoint a model every ``checkpoint_every`` learns. Everything it
decides comes out as rows for the lake, tagged with the item's ``seq``.

This module holds the learner's state and the item-by-item path. Its parts:
:mod:`dataflows.learner_columnar` (the columnar step, which may decline a batch),
:mod:`dataflows.rows` (every table row, by field name), :mod:`dataflows.checkpoints`,
:mod:`dataflows.expiry` (labels given up on) and :mod:`dataflows.actions` (drift actions).

Size: the item path is one loop over a batch's items, read top to bottom; cut, its state changes
would sit in several files.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from dataflows import rows
from dataflows.actions import act
from dataflows.checkpoints import (
    RIVERLAKE_VERSION,
    featurizer_state,
    model_digest,
    resume_learner,
    seal_learner,
    take_checkpoint,
)
from dataflows.discards import Discards
from dataflows.expiry import LabelExpiry
from dataflows.features import KeyedFeaturizer
from dataflows.guard import LearnUndo, score_problem, weights_check
from dataflows.items import EVENT, Batch, Output
from dataflows.learner_columnar import ColumnarStep
from dataflows.learner_tabular import TabularColumns, fits
from dataflows.learner_task import process_task, task_metrics
from dataflows.models import get_spec
from dataflows.pending_pack import PackedPending, PendingPacker
from dataflows.perkey import PerKeyModel
from dataflows.recent import RecentIds
from dataflows.rows import CHALLENGER, CHAMPION, dead_letter_row, drift_event_row, metric_row
from dataflows.validate import dead_letter
from lake.schemas import RUN_SUMMARIES
from monitoring.error_drift import ErrorDriftDetector, make_detector
from monitoring.prequential import TaskPrequential, WindowedPrequential
from monitoring.stream import MonitorConfig, StreamMonitor

log = logging.getLogger(__name__)

__all__ = ["CHALLENGER", "CHAMPION", "RIVERLAKE_VERSION", "RunConfig", "ShardLearner", "model_digest",
           "resume_learner", "seal_learner"]


@dataclass(frozen=True)
class RunConfig:
    """Settings of one run of the predict/learn step. Part of the run's identity."""

    run_id: str
    # binary, multiclass or regression (lake.tasks): the lake's, read at start (dataflows.settings).
    task: str = "binary"
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
            get_spec(name, task=self.task)
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


class ShardLearner:
    """State and logic of the predict/learn step for one shard."""

    # Batches of columns take the columnar path when the run allows it (RIVERLAKE_COLUMNAR=0: never;
    # the rows are the same either way, only the cost differs).
    columnar = os.environ.get("RIVERLAKE_COLUMNAR", "1") != "0"
    # Checkpoints keep the featurizer state (False where the featurizer holds only part of it: a feature store).
    featurizer_in_checkpoints = True

    def __init__(self, config: RunConfig, *, shard: int) -> None:
        self.config = config
        self.shard = shard
        self.featurizer = KeyedFeaturizer(**config.featurizer)
        self.slots = [
            _Slot(
                name,
                CHAMPION if i == 0 else CHALLENGER,
                self.build_model(name, i),
                (WindowedPrequential(window_us=config.window_us, grace_us=config.grace_us,
                                     threshold=config.threshold) if config.task == "binary" else
                 TaskPrequential(task=config.task, window_us=config.window_us, grace_us=config.grace_us)),
                [make_detector(d) for d in config.drift_detectors],
            )
            for i, name in enumerate(config.models)
        ]
        # event_id -> (features, event_time_us, key, scores), or the arena slot of the columnar step
        self.pending: dict[str, tuple | int] = {}
        self.labelled = RecentIds(config.remember_labelled)
        self.expired = RecentIds(config.remember_labelled)  # ids given up on
        self.undo = LearnUndo()  # makes a label's learn step all or nothing across the models
        self.expiry = LabelExpiry()  # pending events by event time, and the latest event time seen
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
        # The columnar path: feature rows of pending events it took in, and caches (dataflows.learner_tabular
        # for tabular payloads on the linear and naive-bayes specs, dataflows.learner_columnar otherwise).
        self.columnar_step = TabularColumns(self) if fits(self) else ColumnarStep(len(self.slots))

    @property
    def columnar_batches(self) -> int:
        """Batches the columnar path took since this learner was built or restored (the others went item
        by item)."""
        return self.columnar_step.batches

    def __getstate__(self) -> dict[str, Any]:
        self.columnar_step.before_items(self)  # the River objects hold everything learned
        self.columnar_step.compact(self.pending, slack=1024)  # snapshots carry the rows still waiting, no more
        self.expiry.compact(self.pending)  # ... and the arrivals of the events still waiting
        state = self.__dict__.copy()
        packer = state.pop("_pending_packer", None)  # (what earlier snapshots pickled: not state)
        if packer is None:
            packer = self._pending_packer = PendingPacker()
        state["pending"] = packer.pack(self.pending)  # only the entries new since the last snapshot pickled
        state.pop("undo", None)  # rebuilt: a snapshot is taken between batches
        state.pop("_featurizer_memo", None)  # the last checkpoint's featurizer bytes: no state
        state.pop("_checks", None)  # (rebuilt at the next step)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Snapshots from before the learner's parts were modules of their own:
        if "_arrivals" in state:
            state["expiry"] = LabelExpiry(state.pop("_arrivals"), state.pop("_clock_us"))
        if "_arena" in state:
            state["columnar_step"] = ColumnarStep(len(state["slots"]), state.pop("_arena"), state.pop("_col_layout"))
        elif "columnar_step" not in state:  # ... and from before the columnar path
            state["columnar_step"] = ColumnarStep(len(state["slots"]))
        if isinstance(state.get("pending"), PackedPending):
            state["pending"] = state["pending"].unpack()
        self.__dict__.update(state)
        self.columnar_step.adopt_pending(self.pending)
        if "discards" not in state:  # a snapshot from before the end-of-run summary and the cold-start prior
            self.discards = Discards()
            self.n_positive = 0
            for slot in self.slots:
                slot.fresh = slot.n_learned == 0
        self.undo = LearnUndo()

    def build_model(self, name: str, index: int) -> Any:
        """A fresh estimator for the model ``name`` at position ``index`` of the run's models."""
        estimator = get_spec(name, task=self.config.task).build(seed=self.config.seed + index)
        if self.config.per_key:
            return PerKeyModel(estimator, max_keys=self.config.max_key_models)
        return estimator

    def _description(self, name: str) -> str:
        description = get_spec(name, task=self.config.task).description
        return f"one model per key: {description}" if self.config.per_key else description

    def checkpoint(self, slot: _Slot, seq: int, last_event_id: str | None, rows: list, suffix: str = "",
                   featurizer_bytes: bytes | None = None) -> bytes:
        """Snapshot ``slot``'s model into a ``checkpoints`` row appended to ``rows``; returns the pickled bytes.
        A trained model's row keeps the featurizer state it predicts with: the featurizer's now, or
        ``featurizer_bytes`` where a columnar step has moved the featurizer past the checkpoint's item."""
        if featurizer_bytes is None and slot.n_learned and self.featurizer_in_checkpoints:  # (untrained: no version)
            memo = self.__dict__.get("_featurizer_memo")  # the models checkpointed at one item share it
            if memo is None or memo[0] != seq:
                memo = self._featurizer_memo = (seq, featurizer_state(self.featurizer))
            featurizer_bytes = memo[1]
        return take_checkpoint(slot, run_id=self.config.run_id, shard=self.shard, seq=seq,
                               last_event_id=last_event_id, spec=self._description(slot.name), rows=rows,
                               suffix=suffix, featurizer_bytes=featurizer_bytes)

    def expire(self, seq: int) -> list[tuple]:
        """Stop waiting for labels of events older than the TTL; returns ``expired`` rows."""
        return self.expiry.expire(ttl_us=self.config.label_ttl_us, pending=self.pending, expired=self.expired,
                                  seq=seq, run_id=self.config.run_id, shard=self.shard,
                                  time_and_key=self.columnar_step.time_and_key)

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

    def _process_columnar(self, batch: Batch) -> Output | None:
        """The columnar step on ``batch``, or ``None`` (nothing changed) where it declines the batch."""
        return self.columnar_step.process(self, batch)

    def _process(self, batch: Batch) -> Output:
        if self.config.task != "binary":
            return process_task(self, batch)
        step = self.columnar_step
        if self.columnar and batch.columns is not None and not batch.materialized and step.suits(self):
            out = self._process_columnar(batch)
            if out is not None:
                return out
        step.before_items(self)
        out = self._process_items(batch)
        step.after_items(self)
        return out

    def start(self, batch: Batch, checkpoints: list[tuple]) -> None:
        """Once per shard, at its first batch: every model's first checkpoint (rows into ``checkpoints``),
        at the batch's first position, and the undo log based on them."""
        if not self.started:
            first_seq = batch.items[0][0] if batch.items else (batch.dead[0][0] if batch.dead else 0)
            self.undo.rebase([self.checkpoint(slot, first_seq, None, checkpoints) for slot in self.slots])
            self.started = True

    def _process_items(self, batch: Batch) -> Output:
        cfg = self.config
        run_id, shard = cfg.run_id, self.shard
        metrics: list[tuple] = []
        checkpoints: list[tuple] = []
        drifts: list[tuple] = []
        actions: list[tuple] = []
        acting = cfg.monitor.drift_action != "none"
        recent = self.recent
        threshold = cfg.threshold
        dead = [dead_letter_row(run_id, shard, d) for d in batch.dead]
        slots = self.slots
        self.start(batch, checkpoints)
        featurizer = self.featurizer
        transform, observe, learn_label = featurizer.transform_one, featurizer.learn_one, featurizer.learn_label
        pending = self.pending
        labelled = self.labelled
        every = cfg.checkpoint_every
        probas = [s.estimator.predict_proba_one for s in slots]
        learners = [s.estimator.learn_one for s in slots]
        names = [s.name for s in slots]
        undo = self.undo
        checks = self._weight_checks()
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
        slot_range = range(len(slots))
        keyed = cfg.per_key
        expiry = self.expiry
        arrivals = expiry.arrivals
        track_arrivals = cfg.label_ttl_us is not None
        clock = expiry.clock_us
        fresh = [s.fresh for s in slots]
        cold = any(fresh) or keyed  # some model has learned nothing (per key: a key may have no model)
        n_lab, n_pos = self.n_labels, self.n_positive
        for item in batch.items:
            if item[1] == EVENT:
                _, _, event_id, t, key, payload = item
                if event_id in pending or event_id in labelled:
                    dead.append(dead_letter_row(run_id, shard, dead_letter(
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
                    dead.append(dead_letter_row(run_id, shard, dead_letter(item, step="predict", reason=problem,
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
                    dead.append(dead_letter_row(run_id, shard, dead_letter(
                        item, step="learn", reason=reason, source=batch.source)))
                    continue
                if type(entry) is int:  # an event the columnar path took in
                    entry = self.columnar_step.entry(entry)
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
                    dead.append(dead_letter_row(run_id, shard, dead_letter(
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
                                drifts.append(drift_event_row(
                                    run_id, shard, item[0], detector=det.label, model=slots[i].name,
                                    position=slots[i].n_learned + 1, event_id=event_id, event_time=t))
                                if acting:
                                    alarmed.append((i, det.label))
                slot = slots[0]
                slot.n_learned += 1
                for other in slots[1:]:
                    other.n_learned += 1
                if slot.n_learned % every == 0:
                    base = []
                    for i in slot_range:
                        base.append(self.checkpoint(slots[i], item[0], event_id, checkpoints))
                        ev_runs[i].append((len(ev_items), slots[i].version))
                        lb_runs[i].append((row + 1, slots[i].version))
                    undo.rebase(base)
                for i, detector in alarmed:
                    if act(self, slots[i], seq=item[0], event_id=event_id, t=t, detector=detector,
                           checkpoints=checkpoints, actions=actions):
                        probas[i], learners[i] = slots[i].estimator.predict_proba_one, slots[i].estimator.learn_one
                        fresh[i] = slots[i].fresh
                        cold = cold or fresh[i]
                        checks = _weight_checks(slots)
                        undo.rebase(None)
                        ev_runs[i].append((len(ev_items), slots[i].version))
                        lb_runs[i].append((row + 1, slots[i].version))
                labelled.add(event_id)
        expiry.clock_us = clock
        if lb_items:
            self.last_labelled = lb_items[-1][2]
        expired = self.expire(batch.items[-1][0] if batch.items else self.last_seq)
        self.n_events += len(ev_items)
        self.n_labels += len(lb_items)
        self.n_positive = n_pos
        if batch.items:
            self.last_seq = max(self.last_seq, batch.items[-1][0])
        if batch.dead:
            self.last_seq = max(self.last_seq, batch.dead[-1][0])
        if lb_items:
            metrics = rows.window_rows(
                run_id, shard, slots, [it[0] for it in lb_items], np.fromiter(lb_t, np.int64, len(lb_t)),
                np.fromiter((it[4] for it in lb_items), np.int64, len(lb_items)), np.fromiter(lb_y, bool, len(lb_y)),
                [np.fromiter(sc, np.float64, len(sc)) for sc in lb_scores])
        champ = next(i for i, s in enumerate(slots) if s.role == CHAMPION)
        anomaly, tables = self.monitor.on_events(
            [it[0] for it in ev_items], [it[2] for it in ev_items], [it[3] for it in ev_items], ev_x,
            ev_scores[champ], champion=slots[champ].name)
        if lb_items:
            self.monitor.on_labels(lb_t, lb_y)
        monitored_drifts = tables.pop("drift_events", None)
        # The rows stay Python lists until the lake sink commits them, many steps at once (rows.StepRows).
        if ev_items:
            tables["predictions"] = self.prediction_rows(
                seq=[it[0] for it in ev_items], event_id=[it[2] for it in ev_items],
                event_time=[it[3] for it in ev_items], key=[it[4] for it in ev_items], features=ev_x,
                scores=ev_scores, runs=ev_runs, anomaly=anomaly)
        if lb_items:
            tables["learn_log"] = self.learn_rows(
                seq=[it[0] for it in lb_items], event_id=[it[2] for it in lb_items], event_time=lb_t,
                label_time=[it[4] for it in lb_items], label=lb_y, scores=lb_scores, first_order=first_order,
                runs=lb_runs)
        rows.add_tables(tables, {"metrics": metrics, "checkpoints": checkpoints, "dead_letters": dead,
                                 "expired": expired, "drift_events": drifts, "drift_actions": actions},
                        monitored_drifts)
        return Output(shard, tables)

    def prediction_rows(self, *, seq: rows.Column, event_id: rows.Column, event_time: rows.Column,
                        key: rows.Column, features: rows.Column, scores: Any, runs: list[list[tuple[int, str]]],
                        anomaly: np.ndarray | None) -> rows.StepRows:
        """A step's ``predictions`` rows (:func:`dataflows.rows.predictions`) with this shard's run, models
        and threshold; the item, columnar and tabular paths all hand theirs over here."""
        return rows.predictions(run_id=self.config.run_id, shard=self.shard,
                                models=[(s.name, s.role) for s in self.slots], threshold=self.config.threshold,
                                seq=seq, event_id=event_id, event_time=event_time, key=key, features=features,
                                scores=scores, runs=runs, anomaly=anomaly)

    def learn_rows(self, *, seq: rows.Column, event_id: rows.Column, event_time: rows.Column,
                   label_time: rows.Column, label: rows.Column, scores: Any, first_order: list[int],
                   runs: list[list[tuple[int, str]]]) -> rows.StepRows:
        """A step's ``learn_log`` rows (:func:`dataflows.rows.learn_log`) with this shard's run and models."""
        return rows.learn_log(run_id=self.config.run_id, shard=self.shard, models=[s.name for s in self.slots],
                              seq=seq, event_id=event_id, event_time=event_time, label_time=label_time, label=label,
                              scores=scores, first_order=first_order, runs=runs)

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


    def finish(self) -> Output:
        """End of stream: close every metrics window and checkpoint every model."""
        seq = self.last_seq + 1
        self.columnar_step.before_items(self)
        metrics: list[tuple] = []
        checkpoints: list[tuple] = []
        binary = self.config.task == "binary"
        for slot in self.slots:
            for window in slot.metrics.flush():
                metrics.append(metric_row(self.config.run_id, self.shard, seq, slot.name, window) if binary
                               else {"run_id": self.config.run_id, "shard": self.shard, "seq": seq,
                                     "model": slot.name, **window})
            if self.started and slot.checkpointed_at != slot.n_learned:
                self.checkpoint(slot, seq, getattr(self, "last_labelled", None), checkpoints)
        tables = rows.tables_of({"metrics": metrics if binary else [], "checkpoints": checkpoints})
        if not binary and metrics:
            tables = {"metrics": task_metrics(self.config.task, metrics), **tables}
        tables.update(self.monitor.finish(seq))
        self.discards.tally(tables, n_models=len(self.slots))
        row = self.discards.row(run_id=self.config.run_id, shard=self.shard, seq=seq,
                                label_ttl_us=self.config.label_ttl_us)
        tables["run_summaries"] = pa.Table.from_pylist([row], schema=RUN_SUMMARIES)
        print(row["summary"], file=sys.stderr, flush=True)
        if row["warning"] is not None:
            print(f"warning: {row['warning']}", file=sys.stderr, flush=True)
        return Output(self.shard, tables)


    def _weight_checks(self) -> list[tuple[int, Any]]:
        """:func:`_weight_checks` of the slots, kept while their models stay the same objects (building one
        reads a linear model's weights, a copy: too dear for every step of a few events)."""
        models = [s.estimator for s in self.slots]
        cached = self.__dict__.get("_checks")
        if cached is None or len(cached[0]) != len(models) or any(
                a is not b for a, b in zip(cached[0], models, strict=True)):
            cached = self._checks = (models, _weight_checks(self.slots))
        return cached[1]


def _weight_checks(slots: list[_Slot]) -> list[tuple[int, Any]]:
    """``(index, check)`` of the models whose weights a learn step must leave finite (dataflows.guard)."""
    return [(i, check) for i, check in enumerate(weights_check(s.estimator) for s in slots) if check is not None]
