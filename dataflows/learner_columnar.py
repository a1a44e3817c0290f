"""The columnar step of :class:`dataflows.learner.ShardLearner`: a batch of columns in one go.

The learner hands a batch to :meth:`ColumnarStep.process`, which either runs it (the same
rows as the item-by-item path, bit for bit: ``tests/test_columnar.py``) or declines it,
changing nothing, and the learner takes that batch item by item. Rows of events waiting
for their label stay in the step's :class:`~dataflows.columnar.Arena`; the item path reads
them through :meth:`ColumnarStep.entry` and :meth:`ColumnarStep.time_and_key`.

The step reads and advances the learner's public state (pending events, models, featurizer,
counters) and writes its rows through :mod:`dataflows.rows`, as the item path does.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from itertools import chain, islice
from operator import itemgetter
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from dataflows import rows
from dataflows.checkpoints import FeaturizerRewind, item_steps
from dataflows.columnar import Arena, Layout, log1p_counts, prune_point, resolve_labels, tokenize
from dataflows.columnar import available as columnar_available
from dataflows.items import LABEL, Batch, Output
from dataflows.rows import CHAMPION, dead_letter_row, drift_event_row
from dataflows.sparse import SparseLogisticRegression
from dataflows.validate import dead_letter
from lake import names as lake_names
from lake.schemas import FEATURES, UTC_TS
from monitoring.columns import DenseFeatures

_NO_KEY = (0, 0, 0, 0, None)


def _is_not_none(value: Any) -> bool:
    return value is not None  # per-key history of a key the featurizer does not know


class ColumnarStep:
    """The columnar path's state (the arena of waiting rows and its layout) and its caches."""

    def __init__(self, n_models: int, arena: Arena | None = None, layout: Layout | None = None) -> None:
        self.arena = Arena(n_models) if arena is None else arena
        self.layout = layout  # the layout of the arena's rows
        self._init_caches(n_models)

    def _init_caches(self, n_models: int) -> None:
        self._layouts: dict[tuple, Layout | None] = {}
        self._names: pa.Array | None = None  # every feature id's name, for the predictions' feature maps
        self._tr: list[tuple[Any, int, np.ndarray] | None] = [None] * n_models
        self.batches = 0  # batches this step took (a counter, not state)

    def __getstate__(self) -> dict[str, Any]:
        return {"arena": self.arena, "layout": self.layout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.arena, self.layout = state["arena"], state["layout"]
        self._init_caches(self.arena.n_models)

    def adopt_pending(self, pending: dict[str, Any]) -> None:
        """After a snapshot was restored: this step keeps no reference to the learner's pending events."""

    @staticmethod
    def suits(learner: Any) -> bool:
        """Whether ``learner``'s settings and models let batches take this path at all."""
        cfg = learner.config
        mon = cfg.monitor
        return (not cfg.per_key and mon.drift_action == "none" and mon.anomaly is None and not mon.watch
                and all(type(s.estimator) is SparseLogisticRegression for s in learner.slots) and columnar_available())

    def entry(self, slot: int) -> tuple:
        """A pending entry ``(x, t, key, scores)`` from the arena (for the item-by-item path)."""
        arena = self.arena
        layout = self.layout
        fs, vs = arena.row(slot)
        x = {layout.name_of(f): v for f, v in zip(fs.tolist(), vs.tolist(), strict=True)}
        return x, int(arena.a_t[slot]), arena.keys[slot], arena.scores[slot].tolist()

    def before_items(self, learner: Any) -> None:
        """Before the item path runs a batch: nothing to do (this step learns on the River objects)."""

    def after_items(self, learner: Any) -> None:
        """After the item path ran a batch: nothing to do."""

    def time_and_key(self, slot: int) -> tuple[int, str]:
        """The event time and key of the event waiting in ``slot``."""
        return int(self.arena.a_t[slot]), self.arena.keys[slot]

    def compact(self, pending: dict[str, Any], *, slack: int) -> None:
        """Drop the arena rows of events no longer pending when more than ``slack`` of them piled up."""
        if self.arena.n > len(pending) + slack:
            self.arena.compact(pending)

    def _layout(self, learner: Any, cols: Any) -> Layout | None:
        ev = cols.events
        sig = tuple((c, str(ev.schema[c])) for c in cols.payload_columns)
        if sig not in self._layouts:
            self._layouts[sig] = Layout.of(learner.featurizer, list(cols.payload_columns),
                                           {c: ev.schema[c] for c in cols.payload_columns})
        layout = self._layouts[sig]
        if layout is None:
            return None
        current = self.layout
        if current is not layout:
            if current is None or current.__dict__ != layout.__dict__:
                if current is not None and any(type(v) is int for v in learner.pending.values()):
                    return None  # pending rows of another layout: keep to the item-by-item path
                self._names = None
                self._tr = [None] * len(learner.slots)
            self.layout = current = layout  # (the same layout, unpickled: from now on one object)
        if self._names is None:
            self._names = current.names()
        return current

    def _translation(self, est: Any, i: int, layout: Layout) -> np.ndarray:
        """Feature id -> position in model ``i``'s weights (-1: none yet), kept in step with the model."""
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

    def process(self, learner: Any, batch: Batch) -> Output | None:
        """``learner``'s step on a batch of columns, or ``None`` (nothing changed) when the batch needs
        the item-by-item path: the same rows, bit for bit (``tests/test_columnar.py``)."""
        cols = batch.columns
        layout = self._layout(learner, cols)
        if layout is None:
            return None
        cfg = learner.config
        ev, lb = cols.events, cols.labels
        n_ev, n_lb = ev.height, lb.height
        kinds = cols.kinds.copy()
        start = cols.start
        pending, labelled, expired = learner.pending, learner.labelled, learner.expired
        if not kinds.size or n_lb > labelled.capacity:
            return None  # (labels of one batch would push each other out of `labelled`: item by item)
        ev_ids = ev.get_column("event_id").to_list()
        if (len(set(ev_ids)) != n_ev or not pending.keys().isdisjoint(ev_ids)
                or not labelled.isdisjoint(ev_ids)):
            return None  # duplicate events: dead letters, item by item
        ev_keys = ev.get_column("key").to_list()
        ev_t = ev.get_column("event_time").to_numpy().astype(np.int64, copy=False)
        payload = self._payload(learner, layout, ev)
        if payload is None:
            return None
        tok_parts, dense = payload
        lb_ids = lb.get_column("event_id").to_list()
        ev_items = cols.event_items
        lb_items = cols.label_items
        resolved = resolve_labels(learner.pending, layout, ev_ids, lb_ids, ev_items, lb_items)
        if resolved is None:
            return None
        acc_j, acc_ref, dead_j, convert, done = resolved
        arena = self.arena
        # -- from here on, state changes --------------------------------------------------------
        self.batches += 1
        learner.undo.rebase(None)  # the models learn here without the undo's log
        run_id, shard = cfg.run_id, learner.shard
        checkpoints: list[tuple] = []
        slots = learner.slots
        if not learner.started:
            for slot in slots:
                learner.checkpoint(slot, start, None, checkpoints)
            learner.started = True
        dead = [dead_letter_row(run_id, shard, d) for d in batch.dead]
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
                dead.append(dead_letter_row(run_id, shard, dead_letter(item, step="learn", reason=reason,
                                                                        source=batch.source)))
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
        every = cfg.checkpoint_every
        # The featurizer moves past the batch's checkpoints here: keep what it takes to rewind it to them.
        rewind = (FeaturizerRewind(learner.featurizer, chain(ev_keys, (arena.keys[k] for k in lb_slot.tolist()
                                                                        if k < base_slot)))
                  if learner.featurizer_in_checkpoints and slots[0].n_learned % every + n_acc >= every else None)
        b0, b1 = self._featurize(learner, layout, kinds, ev_keys, ev_t, tok_parts, dense, ev_items, lb_item_acc,
                                          lb_slot, lb_y, ev_pos, lb_pos, ev_slot, base_slot)
        # Every model: predict and learn in item order, checkpointing where the item path would.
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
                self._run_linear(learner, i, layout, kinds, seg_start, seg_stop, ev_pos, lb_pos, ev_slot, lb_slot, lb_y,
                                 ev_scores[i])
                slot.n_learned = first_order[i] - 1 + (n_acc if cut is None else cut + 1)
            if cut is not None:
                n_ev_before = int(np.searchsorted(ev_items, seg_stop))
                eid = lb_ids[acc_j[cut]]
                lb_keys = [arena.keys[k] for k in lb_slot.tolist()]
                state = None if rewind is None else rewind.at(
                    item_steps(kinds[:seg_stop], ev_pos, ev_keys, ev_t, lb_pos, lb_keys, lb_y),
                    item_steps(kinds, ev_pos, ev_keys, ev_t, lb_pos, lb_keys, lb_y))
                for i in range(len(slots)):
                    learner.checkpoint(slots[i], start + int(lb_item_acc[cut]), eid, checkpoints,
                                       featurizer_bytes=state)
                    ev_runs[i].append((n_ev_before, slots[i].version))
                    lb_runs[i].append((cut + 1, slots[i].version))
            seg_start = seg_stop
        if any(s.fresh for s in slots):  # models that had learned nothing serve the prior until their first label
            before = int(np.searchsorted(ev_items, lb_item_acc[0])) if n_acc else n_ev
            for i, slot in enumerate(slots):
                if slot.fresh:
                    ev_scores[i, :before] = learner.prior()
                    slot.fresh = not n_acc
        arena.scores[base_slot: base_slot + n_ev] = ev_scores.T
        # Bookkeeping the item path does per item.
        acc_ids = [lb_ids[j] for j in acc_j]
        pending.update(zip(ev_ids, range(base_slot, base_slot + n_ev), strict=True))
        deque(map(pending.pop, acc_ids), maxlen=0)
        labelled.update(acc_ids)
        if cfg.label_ttl_us is not None:
            learner.expiry.arrivals.extend(zip(ev_t.tolist(), ev_ids, strict=True))
        if n_ev:
            learner.expiry.clock_us = max(learner.expiry.clock_us, int(ev_t.max()))
        lb_scores = arena.scores[lb_slot].T if n_acc else np.zeros((len(slots), 0))
        lb_t = arena.a_t[lb_slot]
        ys = lb_y.astype(bool)
        alarms: list[tuple] = []  # (label, model, detector, row): sorted, the rows come in the item path's order
        threshold = cfg.threshold
        if n_acc:
            learner.last_labelled = acc_ids[-1]
            for i, slot in enumerate(slots):
                if not slot.detectors:
                    continue
                errors = ((lb_scores[i] >= threshold) != ys).astype(np.float64).tolist()
                for d, det in enumerate(slot.detectors):
                    for L in det.update_many(errors):
                        j = acc_j[L]
                        alarms.append((L, i, d, drift_event_row(
                            run_id, shard, start + int(lb_items[j]), detector=det.label, model=slot.name,
                            position=first_order[i] + L, event_id=lb_ids[j], event_time=int(lb_t[L]))))
        drifts = [a[3] for a in sorted(alarms, key=lambda a: a[:3])]
        last_seq = start + n_items - 1
        expired_rows = learner.expire(last_seq)
        learner.n_events += n_ev
        learner.n_labels += n_acc
        learner.n_positive += int(lb_y.sum())
        learner.last_seq = max(learner.last_seq, last_seq)
        if batch.dead:
            learner.last_seq = max(learner.last_seq, batch.dead[-1][0])
        tables: dict[str, pa.Table] = {}
        metrics: list[tuple] = []
        if n_acc:
            label_times = lb.get_column("label_time").to_numpy()[acc_idx].astype(np.int64)
            seqs_lb = (lb_item_acc + start).tolist()
            metrics = rows.window_rows(run_id, shard, slots, seqs_lb, lb_t, label_times, ys, lb_scores)
        champ = next(i for i, s in enumerate(slots) if s.role == CHAMPION)
        ev_seqs = (ev_items + start).tolist()
        if n_ev:
            at_row = np.repeat(np.arange(n_ev), arena.a_len[base_slot: base_slot + n_ev])
            fs = arena.p_f[b0:b1]
            named = fs >= layout.base
            mat = np.full((n_ev, len(layout.named)), np.nan)
            mat[at_row[named], fs[named] - layout.base] = arena.p_v[b0:b1][named]
            xs = DenseFeatures(layout.named, mat)
        else:
            xs = DenseFeatures(layout.named, np.zeros((0, len(layout.named))))
        _, mon_tables = learner.monitor.on_events(ev_seqs, ev_ids, ev_t.tolist(), xs, ev_scores[champ].tolist(),
                                               champion=slots[champ].name)
        tables.update(mon_tables)
        if n_acc:
            learner.monitor.on_labels(lb_t, ys)
        monitored_drifts = tables.pop("drift_events", None)
        if n_ev:
            offsets = np.empty(n_ev + 1, np.int32)
            offsets[:-1] = arena.a_off[base_slot: base_slot + n_ev] - b0
            offsets[-1] = b1 - b0
            names = self._names
            features = pa.MapArray.from_arrays(pa.array(offsets), names.take(pa.array(arena.p_f[b0:b1])),
                                               pa.array(arena.p_v[b0:b1]), type=FEATURES)
            tables["predictions"] = learner.prediction_rows(
                seq=pa.array(ev_seqs, pa.int64()), event_id=ev.get_column("event_id").to_arrow().cast(pa.string()),
                event_time=pa.array(ev_t, pa.int64()).cast(UTC_TS),
                key=ev.get_column("key").to_arrow().cast(pa.string()), features=features, scores=ev_scores,
                runs=ev_runs, anomaly=None)
        if n_acc:
            tables["learn_log"] = learner.learn_rows(
                seq=pa.array(seqs_lb, pa.int64()),
                event_id=pa.array(acc_ids, pa.string()), event_time=pa.array(lb_t, pa.int64()).cast(UTC_TS),
                label_time=pa.array(label_times, pa.int64()).cast(UTC_TS), label=pa.array(lb_y, pa.int64()),
                scores=lb_scores, first_order=first_order, runs=lb_runs)
        rows.add_tables(tables, {"metrics": metrics, "checkpoints": checkpoints, "dead_letters": dead,
                                 "expired": expired_rows, "drift_events": drifts}, monitored_drifts)
        if arena.n > 3 * len(pending) + 32_768:
            arena.compact(pending)
        return Output(shard, tables)

    def _payload(self, learner: Any, layout: Layout, ev: pl.DataFrame) -> tuple[list[tuple], np.ndarray] | None:
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
        if learner.monitor.windows is not None and layout.n_dense and np.isnan(dense).any():
            return None  # the window statistics discover names item by item
        return tok_parts, dense

    def _featurize(self, learner: Any, layout: Layout, kinds: np.ndarray, ev_keys: list[str], ev_t: np.ndarray,
                   tok_parts: list[tuple], dense: np.ndarray, ev_items: np.ndarray, lb_item_acc: np.ndarray,
                   lb_slot: np.ndarray, lb_y: np.ndarray, ev_pos: np.ndarray, lb_pos: np.ndarray,
                   ev_slot: np.ndarray, base_slot: int) -> tuple[int, int]:
        """Every event's feature row into the arena and the featurizer's history updated, in item order,
        forgetting keys where the item path would; returns the pool range of the batch's rows."""
        featurizer = learner.featurizer
        arena = self.arena
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
        glob = np.array(featurizer.label_totals, np.int64)
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
            states = featurizer.key_states(uniq)
            k_present = np.fromiter(map(_is_not_none, states), np.bool_, nk)
            cols_k = list(zip(*[_NO_KEY if st is None else st for st in states], strict=True)) if nk else [()] * 5
            k_n, k_last, k_nlab, k_npos = (np.array(c, np.int64) for c in cols_k[:4])
            k_rec = np.array(cols_k[4], np.float64)  # None -> NaN
            k_hasrec = ~np.isnan(k_rec)
            k_rec[~k_hasrec] = 0.0
            k_first = np.full(nk, -1, np.int64)
            was_present = k_present.copy()
            prune_at = (prune_point(at, key_at, by_event, k_present, seg_a, featurizer.n_keys, featurizer.max_keys)
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
            featurizer.set_label_totals(int(glob[0]), int(glob[1]))
            if layout.key_features:
                recs = [r if h else None for r, h in zip(k_rec.tolist(), k_hasrec.tolist(), strict=True)]
                rows_k = list(zip(k_n.tolist(), k_last.tolist(), k_nlab.tolist(), k_npos.tolist(), recs,
                                  strict=True))
                known = [i for i, st in enumerate(states) if st is not None]
                featurizer.set_key_states([uniq[i] for i in known], [rows_k[i] for i in known])
                fresh_mask = k_present & ~was_present
                fresh = np.flatnonzero(fresh_mask)[np.argsort(k_first[fresh_mask], kind="stable")].tolist()
                featurizer.set_key_states([uniq[i] for i in fresh], [rows_k[i] for i in fresh])
            if prune_at is None:
                break
            featurizer.prune()  # what the item path's learn_one does at that event
            seg_a = seg_b
        b1 = arena.top
        arena.a_t[base_slot: base_slot + n_ev] = ev_t
        arena.n += n_ev
        return b0, b1

    def _run_linear(self, learner: Any, i: int, layout: Layout, kinds, start: int, stop: int, ev_pos, lb_pos,
                    ev_slot, lb_slot, lb_y, scores: np.ndarray) -> None:
        est = learner.slots[i].estimator
        arena = self.arena
        tr = self._translation(est, i, layout)
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

