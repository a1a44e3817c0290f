"""The learning task of a lake: ``binary``, ``multiclass`` or ``regression``.

One lake holds one task. It is inferred at ingest from the label column (or
given with ``--task``), printed with its reason, and recorded with the lake so
every later command reads the same answer with :func:`read_task`:

- ``binary``: labels are 0/1 (``Int64``); today's lakes, unchanged. The task is
  read from the labels' type; nothing more is written.
- ``multiclass``: labels are the classes as given, as text (``"3"``, ``"late"``).
- ``regression``: labels are numbers (``Float64``).

Multiclass and regression lakes also get one row in the ``lake_meta`` table
(``key="task"``). It is written before the first labels, idempotently, and a
Delta table keeps it through compaction and vacuum. Labels of another task are
refused with one line, whether they come from an inference or from ``--task``.

>>> col = pl.Series("y", [0.5, 1.25, 3.0, 2.5, 7.75, 1.0])
>>> infer_task(col, name="y")
Task(name='regression', reason="column 'y' holds numbers with fractions (6 distinct values)")
>>> infer_task(pl.Series("y", ["cat", "dog", "cow"]), name="y").name
'multiclass'
>>> infer_task(pl.Series("y", [0, 1, 1]), name="y").name
'binary'
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import polars as pl
import pyarrow as pa

from lake.errors import IngestError, WriterFencedError

TaskName = Literal["binary", "multiclass", "regression"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")

MAX_CLASSES = 20
"""Most distinct whole numbers a label column may hold and still be read as classes."""
MIN_PER_CLASS = 5
"""Whole-number labels are classes only when each value appears this often on average."""

META_TABLE = "lake_meta"
_WRITER = "lake_meta/task"


class TaskMismatchError(IngestError):
    """Labels of one task offered to a lake that holds another."""


@dataclass(frozen=True)
class Task:
    """A learning task and why it was chosen.

    >>> Task("ranking")
    Traceback (most recent call last):
    ...
    ValueError: task must be one of binary, multiclass, regression, got 'ranking'
    >>> Task("regression").label_type, Task("multiclass").prediction_type
    (DataType(double), DataType(string))
    """

    name: TaskName
    reason: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.name not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.name!r}")

    @property
    def label_type(self) -> pa.DataType:
        """Arrow type of ``labels.label`` and ``learn_log.label``."""
        return {"binary": pa.int64(), "multiclass": pa.string(), "regression": pa.float64()}[self.name]

    @property
    def prediction_type(self) -> pa.DataType:
        """Arrow type of ``predictions.prediction``: 0/1, the class, or the value."""
        return self.label_type

    @property
    def primary_metric(self) -> str:
        """Metric a champion is chosen on (lower is better for all three)."""
        return {"binary": "log_loss", "multiclass": "log_loss", "regression": "mae"}[self.name]

    def __str__(self) -> str:
        return f"task {self.name}" + (f" ({self.reason})" if self.reason else "")


def parse_task(name: str | Task | None) -> Task | None:
    """``name`` as a :class:`Task` (``None`` stays ``None``); one-line error for unknown names."""
    if name is None or isinstance(name, Task):
        return name
    if name not in TASKS:
        raise IngestError(f"--task must be one of {', '.join(TASKS)}, got {name!r}")
    return Task(name, reason="given")


# --------------------------------------------------------------------------- inference


def infer_task(col: pl.Series, *, name: str) -> Task | None:
    """The task a label column asks for, with the reason; ``None`` when it holds no label.

    Booleans and the numbers 0/1 are binary; two strings are binary (``positive``
    names the one meaning 1); more strings are multiclass. Numbers with fractions, or
    with more than :data:`MAX_CLASSES` values, are regression; a run of 3 to
    :data:`MAX_CLASSES` consecutive whole numbers, each seen :data:`MIN_PER_CLASS`
    times on average, is multiclass. Other whole numbers (a 0/1 column with a few
    wrong values, or two codes) stay binary as before tasks existed: values other
    than 0/1 are bad rows, and ``--task`` keeps them as labels.
    """
    values = col.drop_nulls()
    if values.len() == 0:
        return None
    dtype = values.dtype
    if dtype == pl.Boolean:
        return Task("binary", reason=f"column {name!r} holds booleans")
    if dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum):
        distinct = values.cast(pl.String).n_unique()
        if distinct <= 2:
            return Task("binary", reason=f"column {name!r} holds {distinct} distinct strings")
        return Task("multiclass", reason=f"column {name!r} holds {distinct} distinct strings")
    if not dtype.is_numeric():
        return None  # the ingest names the type it cannot read
    numbers = values.cast(pl.Float64)
    distinct = numbers.n_unique()
    if numbers.is_in([0.0, 1.0]).all():
        return Task("binary", reason=f"column {name!r} holds only 0 and 1")
    finite = numbers.filter(numbers.is_finite())
    if finite.len() and (finite != finite.floor()).any():
        return Task("regression", reason=f"column {name!r} holds numbers with fractions ({distinct} distinct values)")
    if distinct > MAX_CLASSES:
        return Task("regression", reason=f"column {name!r} holds numbers with {distinct} distinct values")
    whole = finite.unique()
    contiguous = whole.len() == distinct and distinct and whole.max() - whole.min() + 1 == distinct
    if distinct >= 3 and contiguous and distinct * MIN_PER_CLASS <= numbers.len():
        return Task("multiclass", reason=f"column {name!r} holds the {distinct} whole numbers "
                    f"{int(whole.min())} to {int(whole.max())}")
    return Task("binary", reason=f"column {name!r} holds {distinct} whole numbers, too few or too scattered "
                "for classes: read as 0/1 labels (--task multiclass or regression keeps the others)")


# --------------------------------------------------------------------------- labels per task


def task_labels(task: Task, col: pl.Series, *, name: str) -> tuple[pl.Series, pl.Series, str]:
    """Labels of a multiclass or regression task, the mask of bad ones and what is wrong with them.

    Regression labels are finite numbers (``Float64``; numbers written as text are
    read); multiclass labels are the classes as text (whole floats as integers, ``3.0``
    is ``"3"``). Binary labels are read by the ingest itself, as before tasks existed.

    >>> values, bad, why = task_labels(Task("regression"), pl.Series(["1.5", "x", None]), name="y")
    >>> values.to_list(), bad.to_list()
    ([1.5, None, None], [False, True, False])
    >>> task_labels(Task("multiclass"), pl.Series([3.0, 1.0]), name="y")[0].to_list()
    ['3', '1']
    """
    given = col.is_not_null()
    if task.name == "regression":
        if col.dtype == pl.Boolean:
            numbers = col.cast(pl.Float64)
        elif col.dtype == pl.String or isinstance(col.dtype, pl.Categorical | pl.Enum):
            numbers = col.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        elif col.dtype.is_numeric():
            numbers = col.cast(pl.Float64)
        else:
            raise IngestError(f"label column {name!r} has type {col.dtype}; a regression needs numbers")
        bad = given & ~numbers.is_finite().fill_null(False)
        values = pl.DataFrame({"v": numbers, "b": bad}).select(
            pl.when(~pl.col("b")).then(pl.col("v"))).to_series()
        return values.alias(col.name), bad, f"labels in column {name!r} must be finite numbers (regression)"
    if task.name == "multiclass":
        if col.dtype.is_float():
            whole = col.is_finite() & (col == col.floor())
            text = pl.DataFrame({"v": col, "w": whole}).select(
                pl.when(pl.col("w")).then(pl.col("v").cast(pl.Int64).cast(pl.String))
                .otherwise(pl.col("v").cast(pl.String))).to_series()
            bad = given & ~col.is_finite().fill_null(False)
            text = pl.DataFrame({"v": text, "b": bad}).select(pl.when(~pl.col("b")).then(pl.col("v"))).to_series()
            return text.alias(col.name), bad, f"labels in column {name!r} must be finite (multiclass)"
        if col.dtype == pl.Boolean or col.dtype.is_integer() or col.dtype == pl.String or isinstance(
                col.dtype, pl.Categorical | pl.Enum):
            text = col.cast(pl.String)
            bad = given & (text.str.strip_chars() == "").fill_null(False)
            text = pl.DataFrame({"v": text, "b": bad}).select(pl.when(~pl.col("b")).then(pl.col("v"))).to_series()
            return text.alias(col.name), bad, f"labels in column {name!r} must not be empty (multiclass)"
        raise IngestError(f"label column {name!r} has type {col.dtype}; a multiclass task needs classes")
    raise ValueError(f"binary labels are read by lake.ingest, not task_labels ({name!r})")


# --------------------------------------------------------------------------- the lake's task


def read_task(lake: str | os.PathLike[str]) -> Task | None:
    """The lake's recorded task; ``None`` for a lake without labels yet.

    ``lake_meta`` answers first; a lake without it (every lake made before tasks
    existed) is read from the type of ``labels.label`` (``Int64``: binary).
    """
    from lake.table import exists, read_table

    if exists(lake, META_TABLE):
        rows = read_table(lake, META_TABLE).filter(pl.col("key") == "task").sort("recorded_at")
        if rows.height:
            return Task(rows.get_column("value")[0], reason="recorded with the lake")
    if exists(lake, "labels"):
        from lake.table import table_uri

        label = pl.scan_delta(table_uri(lake, "labels")).collect_schema().get("label")
        found = {pl.Int64: "binary", pl.String: "multiclass", pl.Float64: "regression"}.get(label)
        if found is not None:
            return Task(found, reason="the type of the lake's labels")
    return None


def resolve_task(lake: str | os.PathLike[str], col: pl.Series, *, name: str,
                 requested: str | Task | None = None) -> Task | None:
    """The task to ingest labels ``col`` as: ``requested``, else the lake's, else inferred.

    Refuses (:class:`TaskMismatchError`, one line) labels of another task than the
    lake's: a ``requested`` task that differs from the recorded one, or, without one,
    labels that cannot be the lake's task (strings for a regression lake, numbers with
    many values for a multiclass one, anything but two values for a binary one).
    """
    wanted = parse_task(requested)
    recorded = read_task(lake)
    inferred = infer_task(col, name=name)
    where = os.fspath(lake)
    if recorded is not None and wanted is not None and wanted.name != recorded.name:
        raise TaskMismatchError(
            f"the lake {where} holds a {recorded.name} task; cannot ingest labels as {wanted.name} "
            "(one task per lake: use another lake)")
    if wanted is not None:
        return wanted
    if recorded is None:
        return inferred
    numeric = col.dtype.is_numeric() or col.dtype == pl.Boolean
    if inferred is None or _fits(inferred.name, recorded.name, numeric=numeric):
        return recorded
    raise TaskMismatchError(
        f"the lake {where} holds a {recorded.name} task, but labels in column {name!r} look like "
        f"{inferred.name} ({inferred.reason}); one task per lake: use another lake, or --task {recorded.name}")


def _fits(inferred: str, recorded: str, *, numeric: bool) -> bool:
    """Whether labels inferred as ``inferred`` can be labels of a ``recorded`` lake
    (two classes are some of a multiclass lake's; whole numbers are values of a regression)."""
    if inferred == recorded or (inferred, recorded) == ("binary", "multiclass"):
        return True
    return recorded == "regression" and numeric


def record_task(lake: str | os.PathLike[str], task: Task) -> None:
    """Record ``task`` with the lake (before its first labels); refuses a lake that holds another.

    Binary lakes are recorded by their labels' type alone, as before tasks existed.
    Idempotent, and safe against a second ingest recording at the same time: the
    row is written once under one writer id, then read back.
    """
    from lake.table import TableWriter

    recorded = read_task(lake)
    if recorded is None and task.name != "binary":
        row = pl.DataFrame({"key": ["task"], "value": [task.name],
                            "recorded_at": [datetime.now(UTC)]},
                           schema={"key": pl.String, "value": pl.String, "recorded_at": pl.Datetime("us", "UTC")})
        with contextlib.suppress(WriterFencedError):  # another ingest recorded a task first: read below
            TableWriter(lake, META_TABLE, writer_id=_WRITER).append(row, position=1)
        recorded = read_task(lake)
    if recorded is not None and recorded.name != task.name:
        raise TaskMismatchError(
            f"the lake {os.fspath(lake)} holds a {recorded.name} task; cannot write {task.name} labels "
            "(one task per lake: use another lake)")
