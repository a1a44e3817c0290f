"""The columnar step of :class:`dataflows.learner.ShardLearner` for tabular payloads.

Runs of the ``linear`` and ``naive-bayes`` specs on numbers, booleans, categories and nulls (no
hashed text fields, one model per shard) hand their batches of columns to
:class:`TabularColumns`, which runs them through the compiled :class:`~dataflows.tabular.TabularStep`
with the default monitoring on (prequential metrics, the error stream's detectors, window
statistics, anomaly scores, label expiry, checkpoints) and writes the item path's rows, bit for bit
(``tests/test_tabular_columnar.py``). A batch it cannot run the same way is declined (``None``,
nothing changed) and the learner takes it item by item, on the same River objects:
:meth:`TabularColumns.before_items` writes the step's array states into them first and
:meth:`TabularColumns.after_items` reads them back.
"""

from __future__ import annotations

import copy
from bisect import bisect_left
from sys import intern as _intern
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from dataflows import rows
from dataflows.items import LABEL, Batch, Output
from dataflows.rows import CHAMPION, dead_letter_row, drift_event_row
from dataflows.tabular import FeatureSpace as _Space
from dataflows.tabular import TabularStep, available, model_state
from dataflows.validate import dead_letter
from lake.schemas import FEATURES, UTC_TS
from monitoring.columns import DenseFeatures

_FIXED = ("event_id", "event_time", "key")


def fits(learner: Any) -> bool:
    """Whether ``learner``'s featurizer and models are ones the tabular step runs (fixed for a run)."""
    if learner.config.per_key or learner.featurizer.hash_fields:
        return False
    space = _Space()
    return all(model_state(s.estimator, space) is not None for s in learner.slots)


class TabularColumns:
    """The learner's tabular step: a :class:`~dataflows.tabular.TabularStep` sharing the learner's
    featurizer, models and pending events, and the rows the learner writes for a batch."""

    def __init__(self, learner: Any) -> None:
        self.step = TabularStep(learner.featurizer, [s.estimator for s in learner.slots])
        self.step.pending = learner.pending
        self.batches = 0  # batches this step took (a counter, not state)
        self._ahead = False  # the array states hold learning the River objects do not have yet
        self._stale = False  # the River objects hold learning the array states do not have yet

    def __getstate__(self) -> dict[str, Any]:
        # The step without the learner's pending events (the learner's snapshot carries them packed, and
        # adopt_pending hands them back).
        step = copy.copy(self.step)
        step.pending = {}
        return {"step": step, "ahead": self._ahead, "stale": self._stale}

    def adopt_pending(self, pending: dict[str, Any]) -> None:
        """After a snapshot was restored: the step works on the learner's pending events (one dict)."""
        self.step.pending = pending

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        self._ahead, self._stale = state["ahead"], state["stale"]
        self.batches = 0

    # -- the learner's interface (as dataflows.learner_columnar.ColumnarStep) -----------------------
    @staticmethod
    def suits(learner: Any) -> bool:
        """Whether ``learner``'s settings let batches take this path at all (and the compiled loops load:
        numba is imported at the first batch, not when the learner is built)."""
        mon = learner.config.monitor
        return mon.drift_action == "none" and not mon.watch and available()

    def entry(self, slot: int) -> tuple:
        """A pending entry ``(x, t, key, scores)`` from the arena (for the item-by-item path)."""
        arena = self.step.arena
        names = self.step.space.names
        fs, vs = arena.row(slot)
        # One-hot names as the item path's featurizer makes them, interned (the models keep the key objects
        # they first learned: checkpoints pickle them byte for byte).
        x = {(_intern(n) if "=" in (n := names[f]) else n): v for f, v in zip(fs.tolist(), vs.tolist(), strict=True)}
        return x, int(arena.a_t[slot]), arena.keys[slot], arena.scores[slot].tolist()

    def time_and_key(self, slot: int) -> tuple[int, str]:
        """The event time and key of the event waiting in ``slot``."""
        return int(self.step.arena.a_t[slot]), self.step.arena.keys[slot]

    def compact(self, pending: dict[str, Any], *, slack: int) -> None:
        """Drop the arena rows of events no longer pending when more than ``slack`` of them piled up."""
        if self.step.arena.n > len(pending) + slack:
            self.step.arena.compact(pending)

    def before_items(self, learner: Any) -> None:
        """Before the River objects are read (the item path, a snapshot, the end of the stream)."""
        if self._ahead:
            self.step.sync_models()
            self._ahead = False

    def after_items(self, learner: Any) -> None:
        """After the item path changed the River objects (or replaced them, undoing a learn step): the
        array states are read again before the next batch this step takes."""
        self._stale = True

    # -- a batch ------------------------------------------------------------------------------
    def process(self, learner: Any, batch: Batch) -> Output | None:
        """``learner``'s step on a batch of columns, or ``None`` (nothing changed) when the batch needs
        the item-by-item path."""
        cols = batch.columns
        cfg = learner.config
        ev, lb = cols.events, cols.labels
        n_ev, n_lb = ev.height, lb.height
        labelled = learner.labelled
        if not cols.kinds.size or n_lb > labelled.capacity:
            return None  # (labels of one batch would push each other out of `labelled`: item by item)
        ev_ids = ev.get_column("event_id").to_list()
        if not labelled.isdisjoint(ev_ids):
            return None  # an event already learned from: a dead letter, item by item
        step = self.step
        step.pending = learner.pending
        if self._stale:
            step.reload_models([s.estimator for s in learner.slots])
            self._stale = False
        start = cols.start
        lb_items = cols.label_items
        ev_items = cols.event_items
        slots = learner.slots
        every = cfg.checkpoint_every
        n0 = slots[0].n_learned
        first_order = [s.n_learned + 1 for s in slots]
        ev_runs = [[(0, s.version)] for s in slots]
        lb_runs = [[(0, s.version)] for s in slots]
        checkpoints: list[tuple] = []
        run_id, shard = cfg.run_id, learner.shard
        lb_ids = lb.get_column("event_id").to_list()
        started = learner.started

        def on_checkpoint(k: int, j: int, featurizer_bytes: bytes | None = None) -> None:
            seq = start + int(lb_items[j])
            n_before = int(np.searchsorted(ev_items, lb_items[j] + 1))
            for i, slot in enumerate(slots):
                slot.n_learned = first_order[i] - 1 + k
                learner.checkpoint(slot, seq, lb_ids[j], checkpoints, featurizer_bytes=featurizer_bytes)
                ev_runs[i].append((n_before, slot.version))
                lb_runs[i].append((k, slot.version))

        if not started:  # (the fresh models' first checkpoints; rows dropped if the batch is declined)
            for slot in slots:
                learner.checkpoint(slot, start, None, checkpoints)
            ev_runs = [[(0, s.version)] for s in slots]
            lb_runs = [[(0, s.version)] for s in slots]
        first_cut = every - n0 % every
        # The layout named by the payload's own column names: the strings the item path's features
        # are keyed by (a checkpoint pickles shared strings once: the same bytes on both paths).
        schema = ev.schema
        step.layout({c: schema[c] for c in cols.payload_columns})
        order = [*_FIXED, *cols.payload_columns]  # (by name, no patterns; a live batch's frame is in this order)
        events = ev if ev.columns == order else pl.DataFrame([ev.get_column(c) for c in order])
        result = step.process(kinds=cols.kinds, events=events, labels=lb,
                              checkpoint_after=range(first_cut, n_lb + 1, every), on_checkpoint=on_checkpoint,
                              fresh_prior=[learner.prior() if s.fresh else None for s in slots],
                              rewind=learner.featurizer_in_checkpoints)
        if result is None:
            if not started:
                for slot in slots:
                    slot.version, slot.checkpointed_at = "", -1
            return None
        # -- from here on, the batch is taken ---------------------------------------------------
        self.batches += 1
        self._ahead = True
        learner.started = True
        learner.undo.rebase(None)  # the models learned here without the undo's log
        acc = result.accepted
        n_acc = int(acc.size)
        for i, slot in enumerate(slots):
            slot.n_learned = first_order[i] - 1 + n_acc
            if slot.fresh and n_acc:
                slot.fresh = False
        acc_ids = [lb_ids[j] for j in acc.tolist()]
        dead = [dead_letter_row(run_id, shard, d) for d in batch.dead]
        if result.dead:
            dead.extend(self._dead_labels(learner, batch, result.dead, acc.tolist(), acc_ids, lb_ids))
        labelled.update(acc_ids)
        ev_t = ev.get_column("event_time").to_numpy().astype(np.int64, copy=False)
        expiry = learner.expiry
        if cfg.label_ttl_us is not None:
            expiry.arrivals.extend(zip(ev_t.tolist(), ev_ids, strict=True))
        if n_ev:
            expiry.clock_us = max(expiry.clock_us, int(ev_t.max()))
        lb_y = (lb.get_column("label").to_numpy()[acc] == 1) if n_acc else np.zeros(0, np.bool_)
        lb_t = result.label_event_times
        lb_scores = result.label_scores
        lb_item_acc = lb_items[acc]
        seqs_lb = (lb_item_acc + start).tolist()
        threshold = cfg.threshold
        alarms: list[tuple] = []  # (label, model, detector, row): sorted, the rows come in the item path's order
        for i, slot in enumerate(slots):
            if not slot.detectors or not n_acc:
                continue
            errors = ((lb_scores[i] >= threshold) != lb_y).astype(np.float64).tolist()
            for d, det in enumerate(slot.detectors):
                for L in det.update_many(errors):
                    alarms.append((L, i, d, drift_event_row(
                        run_id, shard, seqs_lb[L], detector=det.label, model=slot.name,
                        position=first_order[i] + L, event_id=acc_ids[L], event_time=int(lb_t[L]))))
        drifts = [a[3] for a in sorted(alarms, key=lambda a: a[:3])]
        last_seq = start + int(cols.kinds.size) - 1
        expired_rows = learner.expire(last_seq)
        learner.n_events += n_ev
        learner.n_labels += n_acc
        learner.n_positive += int(lb_y.sum())
        learner.last_seq = max(learner.last_seq, last_seq)
        if batch.dead:
            learner.last_seq = max(learner.last_seq, batch.dead[-1][0])
        if n_acc:
            learner.last_labelled = acc_ids[-1]
        metrics: list[tuple] = []
        if n_acc:
            label_times = lb.get_column("label_time").to_numpy()[acc].astype(np.int64)
            metrics = rows.window_rows(run_id, shard, slots, seqs_lb, lb_t, label_times, lb_y, lb_scores)
        champ = next(i for i, s in enumerate(slots) if s.role == CHAMPION)
        ev_seqs = (ev_items + start).tolist()
        scores = result.scores
        anomaly, tables = learner.monitor.on_events(ev_seqs, ev_ids, ev_t.tolist(), self._dense(result, n_ev),
                                                    scores[champ].tolist(), champion=slots[champ].name)
        if n_acc:
            learner.monitor.on_labels(lb_t, lb_y)
        monitored_drifts = tables.pop("drift_events", None)
        if n_ev:
            features = pa.MapArray.from_arrays(pa.array(result.offsets.astype(np.int32)),
                                               step.names().take(pa.array(result.ids)), pa.array(result.values),
                                               type=FEATURES)
            tables["predictions"] = learner.prediction_rows(
                seq=pa.array(ev_seqs, pa.int64()), event_id=ev.get_column("event_id").to_arrow().cast(pa.string()),
                event_time=pa.array(ev_t, pa.int64()).cast(UTC_TS),
                key=ev.get_column("key").to_arrow().cast(pa.string()), features=features, scores=scores,
                runs=ev_runs, anomaly=anomaly)
        if n_acc:
            tables["learn_log"] = learner.learn_rows(
                seq=pa.array(seqs_lb, pa.int64()),
                event_id=pa.array(acc_ids, pa.string()), event_time=pa.array(lb_t, pa.int64()).cast(UTC_TS),
                label_time=pa.array(label_times, pa.int64()).cast(UTC_TS), label=pa.array(lb_y.astype(np.int64)),
                scores=lb_scores, first_order=first_order, runs=lb_runs)
        rows.add_tables(tables, {"metrics": metrics, "checkpoints": checkpoints, "dead_letters": dead,
                                 "expired": expired_rows, "drift_events": drifts}, monitored_drifts)
        return Output(shard, tables)

    def _dead_labels(self, learner: Any, batch: Batch, dead_j: list[int], acc_j: list[int], acc_ids: list[str],
                     lb_ids: list[str]) -> list[tuple]:
        """Dead-letter rows of the labels the step did not learn, with the item path's reasons."""
        cols = batch.columns
        lb = cols.labels
        labelled = learner.labelled
        lab, lab_t, lab_k = (lb.get_column(c).to_list() for c in ("label", "label_time", "key"))
        room = labelled.capacity - len(labelled)  # adds before `labelled` starts forgetting
        done = set(acc_ids)
        out = []
        for j in dead_j:
            eid = lb_ids[j]
            item = (cols.start + int(cols.label_items[j]), LABEL, eid, lab[j], lab_t[j], lab_k[j])
            before = bisect_left(acc_j, j)  # labels learned before this one in the batch
            known = eid in done or eid in labelled and (before <= room or labelled.age(eid) >= before - room)
            reason = ("label arrived twice" if known
                      else "label arrived after its event expired" if eid in learner.expired
                      else "label for an unknown event")
            out.append(dead_letter_row(learner.config.run_id, learner.shard, dead_letter(
                item, step="learn", reason=reason, source=batch.source)))
        return out

    def _dense(self, result: Any, n_ev: int) -> DenseFeatures:
        """The events' numeric features (one-hot indicators left out, as the monitors skip them) as a
        matrix, columns in order of first appearance: what the monitors read from the item path's dicts."""
        ids = result.ids
        is_num = self.step.space.is_num
        names = self.step.space.names
        lengths = np.diff(result.offsets)
        width = int(lengths[0]) if n_ev else 0
        if n_ev and (lengths == width).all():  # (numbers only, no nulls: every row the same features)
            grid = ids.reshape(n_ev, width)
            if (grid == grid[0]).all():
                keep = is_num[grid[0]]
                return DenseFeatures([names[f] for f in grid[0][keep].tolist()],
                                     result.values.reshape(n_ev, width)[:, keep])
        num = is_num[ids]
        row_of = np.repeat(np.arange(n_ev), lengths)[num]
        nid = ids[num]
        # Each id's first position without sorting the ids (unbuffered minimum: ~25x less than np.unique),
        # then the ids present, ordered by it.
        first = np.full(len(self.step.space), nid.size, np.int64)
        np.minimum.at(first, nid, np.arange(nid.size))
        uniq = np.flatnonzero(first < nid.size)
        uniq = uniq[np.argsort(first[uniq], kind="stable")]
        col = np.empty(len(self.step.space), np.int64)
        col[uniq] = np.arange(uniq.size)
        mat = np.full((n_ev, uniq.size), np.nan)
        mat[row_of, col[nid]] = result.values[num]
        return DenseFeatures([names[f] for f in uniq.tolist()], mat)
