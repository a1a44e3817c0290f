"""The lake rows of the predict/learn step, built by field name in one place for both of its paths.

A row is given by keyword (``row("expired", run_id=..., seq=..., ...)``) and put in its
table's schema order here, so no caller lines values up with a schema by position; a field
missing or unknown fails naming the table and the field. The ``predictions`` and
``learn_log`` rows of a step are handed over as :class:`StepRows` (:func:`predictions`,
:func:`learn_log`): the step's own lists and arrays, turned into Arrow only when asked, and
many steps' at once by :func:`concat` when the lake sink commits them. Building a table of one
row costs about as much as building one of a thousand, so a step of one event (a served
request, a live batch of a few messages) no longer pays for its own Arrow table.
"""

from __future__ import annotations

from functools import cache
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lake.arrow import LazyTable, PendingRows, features_array, rows_to_arrow, schema_of
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


Column = Any
"""One column of a step's rows: a Python list, a numpy array or an Arrow array (features: a list of
feature dicts or a map array)."""

class StepRows(LazyTable):
    """The ``predictions`` or ``learn_log`` rows of one step, kept as the step handed them over.

    Every event (label) once per model, the models in slot order, as the Arrow table would hold
    them. ``num_rows`` and ``max_seq`` are known at once; :meth:`pylist` reads a column as Python
    values without Arrow; :meth:`arrow` builds the table (once), and any other attribute is the
    built table's (``rows.arrow().column(...)``, ``to_pylist()``), so a reader may treat it as one.
    :func:`concat` builds the rows of many steps in one go, equal to concatenating their tables.
    """

    __slots__ = ("run_id", "shard", "models", "threshold", "columns", "runs", "first_order", "n")

    def __init__(self, table: str, *, run_id: str, shard: int, models: list[tuple[str, str]], threshold: float | None,
                 columns: dict[str, Column], runs: list[list[tuple[int, str]]], first_order: list[int] | None,
                 scores: Any) -> None:
        self.table = table
        self.run_id, self.shard, self.models, self.threshold = run_id, shard, models, threshold
        self.n = n = len(columns["seq"])
        for i in range(len(models)):
            if len(scores[i]) != n:
                raise ValueError(f"table {table!r}: model {models[i][0]!r} has {len(scores[i])} scores for {n} rows")
        self.columns = {**columns, "score": scores}
        self.runs, self.first_order = runs, first_order
        self.num_rows = n * len(models)
        seq = columns["seq"]
        self.max_seq = -1 if not n else (pc.max(seq).as_py() if isinstance(seq, pa.Array) else int(max(seq)))
        self._arrow: pa.Table | None = None

    def _build(self) -> pa.Table:
        return _build([self])

    def pylist(self, name: str) -> list[Any]:
        """Column ``name`` as Python values, in the table's row order (model by model)."""
        if name in self.columns and name != "score":
            col = self.columns[name]
            values = col.to_pylist() if isinstance(col, pa.Array) else list(col)
            return values * len(self.models)
        if name in ("model", "role") and self.table == "predictions":
            return [m[0 if name == "model" else 1] for m in self.models for _ in range(self.n)]
        if name == "model":
            return [m for m in self.models for _ in range(self.n)]
        if name == "score":
            return [float(s) for scores in self.columns["score"] for s in scores]
        if name == "prediction" and self.table == "predictions":
            threshold = self.threshold
            return [int(s >= threshold) for scores in self.columns["score"] for s in scores]
        if name == "model_version":
            n, out = self.n, []
            for runs in self.runs:
                for (at, version), (end, _) in zip(runs, [*runs[1:], (n, None)], strict=True):
                    out.extend([version] * (max(min(end, n), at) - at))
            return out
        return self.arrow().column(name).to_pylist()

    def __getstate__(self) -> tuple:
        return (self.table, self.run_id, self.shard, self.models, self.threshold, self.columns, self.runs,
                self.first_order, self.n, self.num_rows, self.max_seq)

    def __setstate__(self, state: tuple) -> None:
        (self.table, self.run_id, self.shard, self.models, self.threshold, self.columns, self.runs,
         self.first_order, self.n, self.num_rows, self.max_seq) = state
        self._arrow = None

    def __repr__(self) -> str:
        return f"StepRows({self.table!r}, rows={self.num_rows}, models={len(self.models)})"


def predictions(*, run_id: str, shard: int, models: list[tuple[str, str]], threshold: float, seq: Column,
                event_id: Column, event_time: Column, key: Column, features: Column, scores: Any,
                runs: list[list[tuple[int, str]]], anomaly: np.ndarray | None) -> StepRows:
    """``predictions`` rows: every event once per model (``models``: ``(name, role)`` in slot order;
    ``event_time`` in microseconds or as timestamps; ``anomaly``: ``None`` when off)."""
    return StepRows("predictions", run_id=run_id, shard=shard, models=list(models), threshold=threshold,
                    columns={"seq": seq, "event_id": event_id, "event_time": event_time, "key": key,
                             "features": features, "anomaly_score": anomaly},
                    runs=runs, first_order=None, scores=scores)


def learn_log(*, run_id: str, shard: int, models: list[str], seq: Column, event_id: Column, event_time: Column,
              label_time: Column, label: Column, scores: Any, first_order: list[int],
              runs: list[list[tuple[int, str]]]) -> StepRows:
    """``learn_log`` rows: every label learned once per model, numbered from ``first_order``."""
    return StepRows("learn_log", run_id=run_id, shard=shard, models=list(models), threshold=None,
                    columns={"seq": seq, "event_id": event_id, "event_time": event_time, "label_time": label_time,
                             "label": label},
                    runs=runs, first_order=list(first_order), scores=scores)


Lazy = StepRows | PendingRows
"""A step's rows not yet Arrow (:class:`StepRows`, or tuples of a table: :class:`lake.arrow.PendingRows`)."""


def pylist(data: pa.Table | Lazy, name: str) -> list[Any]:
    """Column ``name`` of a step's table as Python values (without building Arrow for rows not yet Arrow)."""
    return data.pylist(name) if isinstance(data, StepRows | PendingRows) else data.column(name).to_pylist()


def max_seq(data: pa.Table | Lazy) -> int:
    """The highest ``seq`` of a step's non-empty table."""
    return data.max_seq if isinstance(data, StepRows | PendingRows) else pc.max(data.column("seq")).as_py()


def _group(part: pa.Table | Lazy) -> tuple | None:
    """What parts built together share (``None``: an Arrow table, or rows already built)."""
    if isinstance(part, StepRows) and not part.built:
        return StepRows, part.table, part.run_id, part.shard, part.threshold
    if isinstance(part, PendingRows) and not part.built:
        return PendingRows, part.table
    return None


def concat(parts: list[pa.Table | Lazy]) -> pa.Table:
    """One Arrow table of ``parts`` (of one table), in order, equal to concatenating each part's table:
    runs of rows not yet Arrow (of one run and shard) are built together, once."""
    tables: list[pa.Table] = []
    group: list[Lazy] = []
    key = None
    for part in [*parts, None]:
        k = None if part is None else _group(part)
        if group and (k is None or k != key):
            tables.append(_build(group) if key[0] is StepRows else PendingRows.build_many(group))
            group = []
        if k is not None:
            group.append(part)
            key = k
        elif part is not None:
            tables.append(part if isinstance(part, pa.Table) else part.arrow())
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def _chunks(pieces: list[Column], type_: pa.DataType, *, nan_is_null: bool = False) -> pa.Array:
    """One Arrow array of ``pieces`` in order; each run of Python lists and numpy arrays becomes one array."""
    out: list[pa.Array] = []
    acc: list[Any] = []

    def spill() -> None:
        if acc:
            if all(isinstance(a, np.ndarray) for a in acc):
                out.append(pa.array(acc[0] if len(acc) == 1 else np.concatenate(acc), type_, from_pandas=nan_is_null))
                acc.clear()
                return
            values = list(chain.from_iterable(acc))
            if pa.types.is_map(type_):
                out.append(features_array(values, type_))
            elif pa.types.is_integer(type_) and values and type(values[0]) is bool:  # (0/1 labels as bools)
                out.append(pa.array(np.fromiter(values, np.int64, len(values)), type_))
            else:
                out.append(pa.array(values, type_, from_pandas=nan_is_null))
            acc.clear()

    for piece in pieces:
        if isinstance(piece, pa.ChunkedArray):
            piece = piece.combine_chunks()
        if isinstance(piece, pa.Array):
            spill()
            out.append(piece if piece.type == type_ else piece.cast(type_))
        else:
            acc.append(piece)
    spill()
    if not out:
        return pa.array([], type_)
    return out[0] if len(out) == 1 else pa.concat_arrays(out)


def _strings(values: list[str], counts: list[int], n: int) -> pa.Array:
    """A string column of ``n`` rows: ``values[i]`` repeated ``counts[i]`` times."""
    if len(set(values)) == 1:
        return _constant(values[0], n, pa.string())
    return pa.array(values, pa.string()).take(np.repeat(np.arange(len(values)), counts))


def _build(parts: list[StepRows]) -> pa.Table:
    """The Arrow table of ``parts`` (one table, run and shard) in order, each part model by model."""
    first = parts[0]
    predictions_ = first.table == "predictions"
    schema = PREDICTIONS if predictions_ else LEARN_LOG
    event_cols = [name for name in first.columns if name != "score"]
    pieces: dict[str, list[Column]] = {name: [] for name in event_cols}
    models: list[str] = []  # one per block of rows (a part's rows of one model)
    roles: list[str] = []
    counts: list[int] = []
    scores: list[Column] = []
    orders: list[np.ndarray] = []
    version_runs: list[tuple[int, str]] = []
    row = 0
    for part in parts:
        n, columns = part.n, part.columns
        for i, model in enumerate(part.models):
            for name in event_cols:
                col = columns[name]
                pieces[name].append([None] * n if col is None else col)  # (anomaly scores off)
            if predictions_:
                models.append(model[0])
                roles.append(model[1])
            else:
                models.append(model)
                orders.append(np.arange(part.first_order[i], part.first_order[i] + n, dtype=np.int64))
            counts.append(n)
            scores.append(columns["score"][i])
            version_runs.extend((row + at, version) for at, version in part.runs[i])
            row += n
    total = row
    cols = {name: _chunks(pieces[name], schema.field(name).type, nan_is_null=name == "anomaly_score")
            for name in event_cols}
    score = _chunks(scores, pa.float64())
    cols.update(run_id=_constant(first.run_id, total, pa.string()), shard=_constant(first.shard, total, pa.int32()),
                model=_strings(models, counts, total), score=score,
                model_version=expand_runs(_merged(version_runs), total))
    if predictions_:
        cols.update(role=_strings(roles, counts, total),
                    prediction=pc.cast(pc.greater_equal(score, first.threshold), pa.int64()))
    else:
        cols["learn_order"] = pa.array(np.concatenate(orders), pa.int64())
    return _columns(schema, **cols)


def _merged(runs: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """``runs`` without the ones that repeat the value before them (rows with no run of their own stay
    with the run before)."""
    out: list[tuple[int, str]] = []
    for at, value in runs:
        if out and out[-1][0] == at:
            out[-1] = (at, value)
        elif not out or out[-1][1] != value:
            out.append((at, value))
    return out
