"""The lake rows of the predict/learn step, built by field name in one place for both of its paths.

A row is given by keyword (``row("expired", run_id=..., seq=..., ...)``) and put in its
table's schema order here, so no caller lines values up with a schema by position; a field
missing or unknown fails naming the table and the field. The ``predictions`` and
``learn_log`` tables, one Arrow column per field, are built by :func:`predictions` and
:func:`learn_log` from what the item path and the columnar path both hand over.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lake.arrow import rows_to_arrow, schema_of
from lake.schemas import LEARN_LOG, PREDICTIONS, UTC_TS

CHAMPION = "champion"  # the ``role`` of the model whose predictions are served
CHALLENGER = "challenger"

# The tables of rows the step collects, in the order a batch's output lists them.
ROW_TABLES = ("metrics", "checkpoints", "dead_letters", "expired", "drift_events", "drift_actions")


@cache
def _fields(table: str) -> tuple[str, ...]:
    return tuple(schema_of(table).names)


def row(table: str, **fields: Any) -> tuple:
    """One row of ``table`` from its fields by name (in the schema's order, for :func:`rows_to_arrow`)."""
    names = _fields(table)
    if len(fields) == len(names):  # (then every name present means no field unknown)
        try:
            return tuple(map(fields.__getitem__, names))
        except KeyError:
            pass
    missing, unknown = sorted(set(names) - fields.keys()), sorted(fields.keys() - set(names))
    raise ValueError(f"table {table!r}: row fields missing {missing}, unknown {unknown}")


def dead_letter_row(run_id: str, shard: int, dead: tuple) -> tuple:
    """A ``dead_letters`` row from :func:`dataflows.validate.dead_letter`'s ``(seq, step, reason, source,
    event_id, raw)``."""
    seq, step, reason, source, event_id, raw = dead
    return row("dead_letters", run_id=run_id, shard=shard, seq=seq, step=step, reason=reason, source=source,
               event_id=event_id, raw=raw)


def metric_row(run_id: str, shard: int, seq: int, model: str, window: dict[str, Any]) -> tuple:
    """A ``metrics`` row from a window of :class:`monitoring.prequential.WindowedPrequential`."""
    return row("metrics", run_id=run_id, shard=shard, seq=seq, model=model, **window)


def window_rows(run_id: str, shard: int, slots: list[Any], seqs: list[int], event_times: np.ndarray,
                label_times: np.ndarray, ys: np.ndarray, scores: Any) -> list[tuple]:
    """Score a batch's labels (in arrival order) in every model's prequential windows, all at once (the
    same as label by label); the ``metrics`` rows of the windows that closed, at their label's ``seq``."""
    out = []
    for i, slot in enumerate(slots):
        for pos, window in slot.metrics.update_many(event_times, label_times, ys, scores[i]):
            out.append(metric_row(run_id, shard, seqs[pos], slot.name, window))
    return out


def drift_event_row(run_id: str, shard: int, seq: int, *, detector: str, model: str, position: int,
                    event_id: str, event_time: int) -> tuple:
    """A ``drift_events`` row of an alarm on a model's 0/1 error stream."""
    return row("drift_events", run_id=run_id, shard=shard, seq=seq, detector=detector, signal="error", model=model,
               position=position, event_id=event_id, event_time=event_time)


def tables_of(rows: dict[str, list[tuple]]) -> dict[str, pa.Table]:
    """Arrow tables of the non-empty row lists, in :data:`ROW_TABLES` order."""
    return {name: rows_to_arrow(name, rows[name]) for name in ROW_TABLES if rows.get(name)}


def add_tables(tables: dict[str, pa.Table], rows: dict[str, list[tuple]], monitored_drifts: pa.Table | None) -> None:
    """Add the step's row tables to ``tables``, the monitor's ``drift_events`` after the step's own."""
    tables.update(tables_of(rows))
    if monitored_drifts is not None:
        tables["drift_events"] = (pa.concat_tables([tables["drift_events"], monitored_drifts])
                                  if "drift_events" in tables else monitored_drifts)


def _constant(value: Any, n: int, type_: pa.DataType) -> pa.Array:
    return pa.repeat(pa.scalar(value, type_), n)


def expand_runs(runs: list[tuple[int, str]], n: int) -> pa.Array:
    """A string column of length ``n`` from ``[(first_row, value), ...]`` runs."""
    if len(runs) == 1:
        return _constant(runs[0][1], n, pa.string())
    counts = np.diff([*(first for first, _ in runs), n])
    return pa.array([value for _, value in runs], pa.string()).take(np.repeat(np.arange(len(runs)), counts))


def event_columns(items: list[tuple]) -> dict[str, pa.Array]:
    """``seq``, ``event_id``, ``event_time`` and ``key`` columns of event items (:mod:`dataflows.items`)."""
    return {"seq": pa.array([it[0] for it in items], pa.int64()),
            "event_id": pa.array([it[2] for it in items], pa.string()),
            "event_time": pa.array([it[3] for it in items], UTC_TS),
            "key": pa.array([it[4] for it in items], pa.string())}


def label_columns(items: list[tuple], event_times: list[int]) -> dict[str, pa.Array]:
    """``seq``, ``event_id``, ``event_time`` and ``label_time`` columns of label items and their events' times."""
    return {"seq": pa.array([it[0] for it in items], pa.int64()),
            "event_id": pa.array([it[2] for it in items], pa.string()),
            "event_time": pa.array(event_times, UTC_TS),
            "label_time": pa.array([it[4] for it in items], UTC_TS)}


def _columns(schema: pa.Schema, **columns: pa.Array) -> pa.Table:
    if columns.keys() != set(schema.names):
        raise ValueError(f"columns {sorted(columns)} do not match the schema's {schema.names}")
    return pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema)


def predictions(*, run_id: str, shard: int, models: list[tuple[str, str]], threshold: float, seq: pa.Array,
                event_id: pa.Array, event_time: pa.Array, key: pa.Array, features: pa.Array, scores: Any,
                runs: list[list[tuple[int, str]]], anomaly: np.ndarray | None) -> pa.Table:
    """``predictions`` rows: every event once per model (``models``: ``(name, role)`` in slot order)."""
    n = len(features)
    shared = {"run_id": _constant(run_id, n, pa.string()), "shard": _constant(shard, n, pa.int32()), "seq": seq,
              "event_id": event_id, "event_time": event_time, "key": key, "features": features,
              "anomaly_score": (pa.array(anomaly, pa.float64(), from_pandas=True) if anomaly is not None
                                else pa.nulls(n, pa.float64()))}
    parts = []
    for i, (name, role) in enumerate(models):
        score = pa.array(scores[i], pa.float64())
        parts.append(_columns(
            PREDICTIONS, **shared, model=_constant(name, n, pa.string()), role=_constant(role, n, pa.string()),
            model_version=expand_runs(runs[i], n), score=score,
            prediction=pc.cast(pc.greater_equal(score, threshold), pa.int64())))
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


def learn_log(*, run_id: str, shard: int, models: list[str], seq: pa.Array, event_id: pa.Array,
              event_time: pa.Array, label_time: pa.Array, label: pa.Array, scores: Any, first_order: list[int],
              runs: list[list[tuple[int, str]]]) -> pa.Table:
    """``learn_log`` rows: every label learned once per model, numbered from ``first_order``."""
    n = len(label)
    shared = {"run_id": _constant(run_id, n, pa.string()), "shard": _constant(shard, n, pa.int32()), "seq": seq,
              "event_id": event_id, "event_time": event_time, "label_time": label_time, "label": label}
    parts = [
        _columns(LEARN_LOG, **shared, model=_constant(name, n, pa.string()), score=pa.array(scores[i], pa.float64()),
                 learn_order=pa.array(range(first_order[i], first_order[i] + n), pa.int64()),
                 model_version=expand_runs(runs[i], n))
        for i, name in enumerate(models)
    ]
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts)
