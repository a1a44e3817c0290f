"""The item path of a multiclass or regression run (:mod:`lake.tasks`): predict, learn, score per task.

A binary run takes :meth:`dataflows.learner.ShardLearner._process` (and its columnar path), unchanged;
a run of another task takes :func:`process_task` on the same learner state (featurizer, pending
events, label expiry, checkpoints, the all-or-nothing learn step, drift actions, the monitor). What
differs per task lives in :mod:`monitoring.tasks` and :func:`lake.scoring.task_answer`:

- the prediction: the predicted value (regression) or class (multiclass, with every class's
  probability in ``predictions.probabilities``); ``score`` is the value or the class's probability;
- the label: :func:`monitoring.tasks.label_value` (a float, or the class as text); a label that is
  not one of the task's is dead-lettered (at ``validate``, :mod:`dataflows.validate`);
- the error stream the drift detectors watch: :func:`monitoring.tasks.error` (absolute error for
  regression, 0/1 for multiclass);
- the metrics: :class:`monitoring.prequential.TaskPrequential` rows in ``metrics``
  (``lake.schemas.task_schema``).

Cold start: a model that has learned nothing serves its own answer (a regressor 0.0 or what it
predicts untrained, a classifier ``""`` with no probabilities), not the binary path's label prior,
so ``lake reproduce`` rebuilds every prediction from the checkpoint alone. The featurizer's per-key
label history (:meth:`dataflows.features.KeyedFeaturizer.learn_label`) counts positives: it is fed
by binary runs only, and the key features of other tasks keep its cold-start values.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from dataflows import rows
from dataflows.actions import act
from dataflows.guard import score_problem
from dataflows.items import EVENT, Batch, Output
from dataflows.rows import dead_letter_row, drift_event_row
from dataflows.validate import dead_letter
from lake.arrow import features_array
from lake.schemas import PROBABILITIES, task_schema
from monitoring.tasks import Prediction, error, label_value, predict


def task_metrics(task: str, windows: list[dict[str, Any]]) -> pa.Table:
    """The ``metrics`` rows of a ``task`` run (:class:`~monitoring.prequential.TaskPrequential` windows with
    ``run_id``, ``shard``, ``seq`` and ``model``), in the task's schema."""
    schema = task_schema("metrics", task)
    return pa.Table.from_pylist(windows, schema=schema)


def process_task(learner: Any, batch: Batch) -> Output:
    """Run a validated batch of a multiclass or regression run on ``learner``
    (a :class:`~dataflows.learner.ShardLearner`); returns the rows to write, in the task's schemas."""
    cfg = learner.config
    task, run_id, shard = cfg.task, cfg.run_id, learner.shard
    slots = learner.slots
    n_models = len(slots)
    checkpoints: list[tuple] = []
    drifts: list[tuple] = []
    actions: list[tuple] = []
    dead = [dead_letter_row(run_id, shard, d) for d in batch.dead]
    learner.start(batch, checkpoints)
    featurizer, pending, labelled, undo = learner.featurizer, learner.pending, learner.labelled, learner.undo
    keyed, acting, recent = cfg.per_key, cfg.monitor.drift_action != "none", learner.recent
    names = [s.name for s in slots]
    first_order = [s.n_learned + 1 for s in slots]
    ev_runs = [[(0, s.version)] for s in slots]
    lb_runs = [[(0, s.version)] for s in slots]
    ev_items: list[tuple] = []
    ev_x: list[dict] = []
    ev_preds: list[list[Prediction]] = [[] for _ in slots]
    lb_items: list[tuple] = []
    lb_t: list[int] = []
    lb_y: list[Any] = []
    lb_preds: list[list[Prediction]] = [[] for _ in slots]
    expiry = learner.expiry
    track_arrivals = cfg.label_ttl_us is not None
    for item in batch.items:
        if item[1] == EVENT:
            _, _, event_id, t, key, payload = item
            if event_id in pending or event_id in labelled:
                dead.append(dead_letter_row(run_id, shard, dead_letter(
                    item, step="predict", reason="duplicate event_id", source=batch.source)))
                continue
            try:
                x = featurizer.transform_one(payload, key=key, event_time_us=t)
                preds = [predict(task, s.estimator, x, key=key) for s in slots]
                problem = score_problem([p.score for p in preds], names)
            except Exception as ex:  # noqa: BLE001 - no input may stop the dataflow
                problem = f"{type(ex).__name__}: {ex}"
            if problem is not None:
                dead.append(dead_letter_row(run_id, shard, dead_letter(item, step="predict", reason=problem,
                                                                       source=batch.source)))
                continue
            featurizer.learn_one(payload, key=key, event_time_us=t)
            for i in range(n_models):
                ev_preds[i].append(preds[i])
            ev_items.append(item)
            ev_x.append(x)
            pending[event_id] = (x, t, key, preds)
            if track_arrivals:
                expiry.arrivals.append((t, event_id))
            expiry.clock_us = max(expiry.clock_us, t)
            continue
        event_id = item[2]
        entry = pending.pop(event_id, None)
        if entry is None:
            reason = ("label arrived twice" if event_id in labelled
                      else "label arrived after its event expired" if event_id in learner.expired
                      else "label for an unknown event")
            dead.append(dead_letter_row(run_id, shard, dead_letter(item, step="learn", reason=reason,
                                                                   source=batch.source)))
            continue
        x, t, key, preds = entry
        problem = None
        try:
            y = label_value(task, item[3])  # (validation let only the task's labels through)
            if undo.base is None:
                undo.before_learn([s.estimator for s in slots])
            for slot in slots:
                if keyed:
                    slot.estimator.learn_one(x, y, key)
                else:
                    slot.estimator.learn_one(x, y)
        except Exception as ex:  # noqa: BLE001 - no input may stop the dataflow
            problem = f"{type(ex).__name__}: {ex}"
        if problem is not None:
            if undo.base is not None:  # all or nothing: every model back to its state before this step
                for slot, model in zip(slots, undo.restore(keyed=keyed), strict=True):
                    slot.estimator = model
            dead.append(dead_letter_row(run_id, shard, dead_letter(item, step="learn", reason=problem,
                                                                   source=batch.source)))
            continue
        undo.learned(x, y, key)
        learner.n_labels += 1
        if recent is not None:
            recent.append((x, y, key))
        row = len(lb_items)
        lb_items.append(item)
        lb_t.append(t)
        lb_y.append(y)
        alarmed: list[tuple[int, str]] = []
        for i, slot in enumerate(slots):
            lb_preds[i].append(preds[i])
            slot.fresh = False
            if slot.detectors:
                err = error(task, preds[i], y)
                for det in slot.detectors:
                    if det.update(err):
                        drifts.append(drift_event_row(run_id, shard, item[0], detector=det.label, model=slot.name,
                                                      position=slot.n_learned + 1, event_id=event_id,
                                                      event_time=t))
                        if acting:
                            alarmed.append((i, det.label))
            slot.n_learned += 1
        if slots[0].n_learned % cfg.checkpoint_every == 0:
            base = []
            for i, slot in enumerate(slots):
                base.append(learner.checkpoint(slot, item[0], event_id, checkpoints))
                ev_runs[i].append((len(ev_items), slot.version))
                lb_runs[i].append((row + 1, slot.version))
            undo.rebase(base)
        for i, detector in alarmed:
            if act(learner, slots[i], seq=item[0], event_id=event_id, t=t, detector=detector,
                   checkpoints=checkpoints, actions=actions):
                undo.rebase(None)
                ev_runs[i].append((len(ev_items), slots[i].version))
                lb_runs[i].append((row + 1, slots[i].version))
        labelled.add(event_id)
    if lb_items:
        learner.last_labelled = lb_items[-1][2]
    expired = learner.expire(batch.items[-1][0] if batch.items else learner.last_seq)
    learner.n_events += len(ev_items)
    if batch.items:
        learner.last_seq = max(learner.last_seq, batch.items[-1][0])
    if batch.dead:
        learner.last_seq = max(learner.last_seq, batch.dead[-1][0])
    metrics = _window_rows(learner, lb_items, lb_t, lb_y, lb_preds)
    champ = next(i for i, s in enumerate(slots) if s.role == rows.CHAMPION)
    anomaly, tables = learner.monitor.on_events(
        [it[0] for it in ev_items], [it[2] for it in ev_items], [it[3] for it in ev_items], ev_x,
        [p.score for p in ev_preds[champ]], champion=slots[champ].name)
    monitored_drifts = tables.pop("drift_events", None)
    if ev_items:
        tables["predictions"] = _predictions(learner, ev_items, ev_x, ev_preds, ev_runs, anomaly)
    if lb_items:
        tables["learn_log"] = _learn_log(learner, lb_items, lb_t, lb_y, lb_preds, first_order, lb_runs)
    if metrics:
        tables["metrics"] = task_metrics(task, metrics)
    rows.add_tables(tables, {"checkpoints": checkpoints, "dead_letters": dead, "expired": expired,
                             "drift_events": drifts, "drift_actions": actions}, monitored_drifts)
    return Output(shard, tables)


def _window_rows(learner: Any, lb_items: list[tuple], lb_t: list[int], lb_y: list[Any],
                 lb_preds: list[list[Prediction]]) -> list[dict[str, Any]]:
    """Every model's prequential windows that the batch's labels closed, as ``metrics`` rows."""
    if not lb_items:
        return []
    import numpy as np

    cfg = learner.config
    event_times = np.fromiter(lb_t, np.int64, len(lb_t))
    label_times = np.fromiter((it[4] for it in lb_items), np.int64, len(lb_items))
    out = []
    for slot, preds in zip(learner.slots, lb_preds, strict=True):
        probabilities = ([(p.probabilities or {}).get(y, 0.0) for p, y in zip(preds, lb_y, strict=True)]
                         if cfg.task == "multiclass" else None)
        for pos, window in slot.metrics.update_many(event_times, label_times, lb_y, [p.prediction for p in preds],
                                                    probabilities):
            out.append({"run_id": cfg.run_id, "shard": learner.shard, "seq": lb_items[pos][0],
                        "model": slot.name, **window})
    return out


def _run_columns(learner: Any, n: int) -> dict[str, pa.Array]:
    return {"run_id": pa.repeat(pa.scalar(learner.config.run_id), n),
            "shard": pa.repeat(pa.scalar(learner.shard, pa.int32()), n)}


def _prediction_column(task: str, preds: list[Prediction]) -> pa.Array:
    return pa.array([p.prediction for p in preds], pa.string() if task == "multiclass" else pa.float64())


def _predictions(learner: Any, items: list[tuple], xs: list[dict], preds: list[list[Prediction]],
                 runs: list[list[tuple[int, str]]], anomaly: Any) -> pa.Table:
    """``predictions`` rows of a task run: every event once per model, in the task's schema."""
    cfg = learner.config
    schema = task_schema("predictions", cfg.task)
    n = len(items)
    shared = {**_run_columns(learner, n), **rows.event_columns(items), "features": features_array(xs),
              "anomaly_score": (pa.array(anomaly, pa.float64(), from_pandas=True) if anomaly is not None
                                else pa.nulls(n, pa.float64()))}
    parts = []
    for i, slot in enumerate(learner.slots):
        columns = {**shared, "model": pa.repeat(pa.scalar(slot.name), n),
                   "role": pa.repeat(pa.scalar(slot.role), n), "model_version": rows.expand_runs(runs[i], n),
                   "score": pa.array([p.score for p in preds[i]], pa.float64()),
                   "prediction": _prediction_column(cfg.task, preds[i])}
        if cfg.task == "multiclass":
            columns["probabilities"] = pa.array([p.probabilities for p in preds[i]], PROBABILITIES)
        parts.append(pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema))
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


def _learn_log(learner: Any, items: list[tuple], event_times: list[int], ys: list[Any],
               preds: list[list[Prediction]], first_order: list[int], runs: list[list[tuple[int, str]]]) -> pa.Table:
    """``learn_log`` rows of a task run: every label learned once per model, the label in the task's type."""
    cfg = learner.config
    schema = task_schema("learn_log", cfg.task)
    label = pa.array(ys, schema.field("label").type)
    n = len(items)
    shared = {**_run_columns(learner, n), **rows.label_columns(items, event_times), "label": label}
    parts = []
    for i, slot in enumerate(learner.slots):
        columns = {**shared, "model": pa.repeat(pa.scalar(slot.name), n),
                   "score": pa.array([p.score for p in preds[i]], pa.float64()),
                   "learn_order": pa.array(range(first_order[i], first_order[i] + n), pa.int64()),
                   "model_version": rows.expand_runs(runs[i], n)}
        parts.append(pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema))
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


