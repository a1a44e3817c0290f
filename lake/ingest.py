"""Ingest a user file, a frame or a scenario into the lake's ``events`` and ``labels``.

Size: over 1,000 lines while another change edits it; it is split next (reading inputs,
checking them, writing events and labels) once that change has landed.

Every input goes through one validated path: the whole input is checked first
(columns, ids, times, labels, numbers, sizes, ids already in the lake) and only
then written, in chunks of :data:`CHUNK_ROWS` rows. Each chunk is an idempotent
append tagged ``(writer_id, position)`` where ``writer_id`` is the source name plus
a hash of the normalised content, so running the same ingest again writes
nothing, and an interrupted one completes on the next run.

One pass finds every bad row, of every kind (:data:`KINDS`). By default
(``on_error="refuse"``) an input with bad rows is refused as a whole: nothing is
written and the error has one line per kind of problem, with its count, the first
row numbers (0-based, header not counted) and their ids. With
``on_error="dead-letter"`` the good rows are ingested and each bad row goes to the
``dead_letters`` table (step ``ingest``, the reasons, the row as JSON): events plus
dead letters make the rows of the input.

Times (event and label times) may be timezone-aware datetimes (converted to
UTC), naive datetimes (**taken as UTC**), dates (midnight UTC), ISO 8601 strings
(naive ones taken as UTC) or numbers of seconds since the Unix epoch, in the
years 1900 to 2199 (others are bad rows, as the dataflow would refuse them).

Numbers are never changed silently: a fraction (or NaN/inf) for a column the lake
holds as integers is a bad row, not truncated; text in a column of numbers is a bad
row, unless the column is named in ``text_cols``; a CSV column of numbers written
with ``NaN``/``inf`` text is stored as floats, with a note in the report.
Column names are taken literally, whatever they look like (``^x$``, ``*``).

>>> import tempfile, polars as pl
>>> lake = tempfile.mkdtemp()
>>> frame = pl.DataFrame({"id": [1, 2], "ts": ["2024-01-01T00:00:00Z", "2024-01-01 01:00"],
...                       "churned": ["yes", "no"], "plan": ["pro", "free"]})
>>> report = ingest_frame(lake, frame, source="doc", id_col="id", time_col="ts",
...                       label_col="churned", positive="yes", label_delay=3600)
>>> report.n_events, report.n_labels, report.already_ingested
(2, 2, False)
>>> ingest_frame(lake, frame, source="doc", id_col="id", time_col="ts",
...              label_col="churned", positive="yes", label_delay=3600).already_ingested
True
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import math
import os
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import polars as pl

from lake.errors import IngestError, LakeError
from lake.limits import MAX_ID_LENGTH, MAX_TIME_US, MIN_TIME_US
from lake.names import plain
from lake.schemas import EVENTS, task_schema
from lake.table import TableWriter, exists, read_table, table_uri, table_version
from lake.tasks import Task, record_task, resolve_task, task_labels

CHUNK_ROWS = 250_000
"""Rows per idempotent append. Part of the writer id: changing it starts a new ingest."""

Progress = Callable[[int, int], Any]
"""``progress(done_rows, total_rows)``, called after each chunk (all tables counted)."""

OnError = Literal["refuse", "dead-letter"]
ON_ERROR: tuple[str, ...] = ("refuse", "dead-letter")
"""What to do with bad rows: refuse the whole input (the default), or dead-letter them."""

KINDS = ("empty id", "duplicate id", "oversize", "time", "key", "label", "number")
"""Kinds of bad rows, in the order the error lists them."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_MIN_S, _MAX_S = MIN_TIME_US // 1_000_000, MAX_TIME_US // 1_000_000
_YEARS = "in years 1900-2199"
_UTC_US = pl.Datetime("us", "UTC")
_RESERVED = frozenset(EVENTS.names)
_CSV_NULLS = ["", "NA"]
_RAW_LIMIT = 65_536  # characters of a dead letter's raw row


@dataclass(frozen=True)
class IngestLimits:
    """Sizes of single values an ingest accepts; a row over them is a bad row (kind ``oversize``).

    >>> IngestLimits(max_field_bytes=0)
    Traceback (most recent call last):
    ...
    ValueError: max_field_bytes must be an integer >= 1, got 0
    """

    max_id_chars: int = MAX_ID_LENGTH
    """Characters in an event id or an entity key (the dataflow refuses longer ids)."""
    max_field_bytes: int = 65_536
    """UTF-8 bytes in one text value of a payload column."""

    def __post_init__(self) -> None:
        for name in ("max_id_chars", "max_field_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class IngestReport:
    """What an ingest wrote (or found already written)."""

    source: str
    lake: str
    n_events: int
    n_labels: int
    events_version: int | None
    labels_version: int | None
    already_ingested: bool
    writer_id: str
    seconds: float
    n_dead_letters: int = 0
    """Input rows written to ``dead_letters`` instead (``on_error="dead-letter"``)."""
    dead_letter_kinds: Mapping[str, int] = field(default_factory=dict)
    """Dead-lettered rows by kind of problem (a row may have several)."""
    notes: tuple[str, ...] = ()
    """What the ingest decided about values on its own (e.g. ``NaN`` text read as floats)."""
    task: Task | None = None
    """The lake's task (:mod:`lake.tasks`) and why; ``None`` when the input has no labels."""

    def __str__(self) -> str:
        versions = f"events v{self.events_version}, labels v{self.labels_version}"
        counts = f"{self.n_events:,} events, {self.n_labels:,} labels"
        if self.n_dead_letters:
            kinds = ", ".join(f"{n:,} {k}" for k, n in self.dead_letter_kinds.items())
            counts += f", {self.n_dead_letters:,} rows dead-lettered ({kinds})"
        if self.already_ingested:
            line = (
                f"{self.source}: already ingested in {self.lake} ({counts}; {versions}); "
                "nothing written"
            )
        else:
            took = f"{self.seconds:.1f} s"
            line = f"{self.source}: ingested {counts} into {self.lake} ({versions}) in {took}"
        told = [f"{self.task}"] if self.task is not None else []
        return "\n".join([line, *told, *(f"note: {n}" for n in self.notes)])


# --------------------------------------------------------------------------- public API


def ingest_frame(
    lake: str | os.PathLike[str],
    frame: pl.DataFrame,
    *,
    source: str,
    id_col: str,
    time_col: str,
    label_col: str,
    key_col: str | None = None,
    label_time_col: str | None = None,
    label_delay: float | None = None,
    positive: str | None = None,
    on_error: OnError = "refuse",
    limits: IngestLimits | None = None,
    progress: Progress | None = None,
    task: str | None = None,
) -> IngestReport:
    """Validate ``frame`` and append it to ``events`` and ``labels`` (idempotently).

    ``events`` gets ``event_id`` (string; integer ids as decimal strings),
    ``event_time`` (UTC), ``key`` (``key_col`` as string, ``"all"`` without one),
    ``offset`` (input order, after the lake's current maximum) and every other
    column unchanged as payload. ``labels`` gets one row per non-null label:
    ``label`` is 0/1 from booleans, 0/1 numbers or two strings (``positive`` names
    the one meaning 1); ``label_time`` is ``label_time_col``, else ``event_time +
    label_delay`` seconds, else ``event_time``.

    ``task`` (``binary``, ``multiclass``, ``regression``) overrides the task inferred from
    the labels (:func:`lake.tasks.infer_task`); multiclass labels are stored as text,
    regression labels as floats. Labels of another task than the lake's are refused.

    Raises :class:`IngestError` (naming columns and 0-based row numbers) before
    anything is written when the input cannot be ingested as it is; with
    ``on_error="dead-letter"`` bad rows go to ``dead_letters`` and the rest is written.
    """
    return _ingest(
        lake,
        frame,
        source=source,
        progress=progress,
        fingerprint="",
        started=time.perf_counter(),
        on_error=on_error,
        id_col=id_col,
        time_col=time_col,
        label_col=label_col,
        key_col=key_col,
        label_time_col=label_time_col,
        label_delay=label_delay,
        positive=positive,
        limits=limits,
        task=task,
    )


def ingest_file(
    lake: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    id_col: str,
    time_col: str,
    label_col: str,
    key_col: str | None = None,
    label_time_col: str | None = None,
    label_delay: float | None = None,
    positive: str | None = None,
    on_error: OnError = "refuse",
    limits: IngestLimits | None = None,
    text_cols: Sequence[str] = (),
    progress: Progress | None = None,
    max_bytes: int | None = None,
    allowed_roots: list[str | os.PathLike[str]] | None = None,
    task: str | None = None,
) -> IngestReport:
    """Read a ``.csv`` or ``.parquet`` file and ingest it like :func:`ingest_frame`.

    CSV: ids, keys and ``text_cols`` are read as text, so they stay exact (``"007"``);
    empty fields and ``NA`` are missing values; other types are inferred from the
    whole file. A text column whose values are numbers but for ``NaN``/``inf``
    spellings is stored as floats (with a note); one whose values are mostly numbers
    makes its other values bad rows (kind ``number``), unless it is in ``text_cols``.
    The source name is the file name.

    ``max_bytes`` refuses larger files, ``allowed_roots`` files outside those
    folders (after resolving links and ``..``); both raise :class:`IngestError`
    before anything is read. The file checked is the file read: it is opened once,
    through its resolved path, and the open file is checked again.
    """
    started = time.perf_counter()
    p = Path(path)
    if isinstance(text_cols, str):
        raise IngestError(f"text_cols must be a list of column names, got {text_cols!r}")
    with open_input(p, max_bytes=max_bytes, allowed_roots=allowed_roots) as fh:
        frame = read_input(
            fh, name=p.name, keep_text=[c for c in (id_col, key_col, *text_cols) if c]
        )
    return _ingest(
        lake,
        frame,
        source=p.name,
        progress=progress,
        fingerprint="",
        started=started,
        on_error=on_error,
        numbers_from_text=p.suffix.lower() == ".csv",
        text_cols=tuple(text_cols),
        id_col=id_col,
        time_col=time_col,
        label_col=label_col,
        key_col=key_col,
        label_time_col=label_time_col,
        label_delay=label_delay,
        positive=positive,
        limits=limits,
        task=task,
    )


def check_file_limits(path: Path, *, max_bytes: int | None = None,
                      allowed_roots: list[str | os.PathLike[str]] | None = None) -> Path:
    """The resolved ``path``; refuses one outside ``allowed_roots`` or larger than ``max_bytes``."""
    resolved = Path(path).resolve()
    _check_inside(path, resolved, allowed_roots)
    if not resolved.exists():
        raise IngestError(f"no such file: {path}")
    if not resolved.is_file():
        raise IngestError(f"{path} is not a file")
    _check_size(path, resolved.stat().st_size, max_bytes)
    return resolved


def open_input(path: Path, *, max_bytes: int | None = None,
               allowed_roots: list[str | os.PathLike[str]] | None = None) -> IO[bytes]:
    """``path`` opened for reading, after :func:`check_file_limits`; the open file is checked too.

    The file is opened through its resolved path without following a link in its last
    part, and what was opened must be the regular file that was checked, inside
    ``allowed_roots``: a link or folder swapped in between cannot redirect the read.
    """
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise IngestError(
            f"unsupported file type {suffix or '(none)'!r} of {str(path)!r}; use .csv or .parquet"
        )
    resolved = check_file_limits(path, max_bytes=max_bytes, allowed_roots=allowed_roots)
    checked = resolved.stat()
    try:
        fd = os.open(resolved, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as ex:
        raise IngestError(f"cannot open {str(path)!r}: {ex.strerror}") from ex
    fh = os.fdopen(fd, "rb")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (checked.st_dev, checked.st_ino):
            raise IngestError(f"{path} changed while it was being opened; nothing read")
        proc = Path(f"/proc/self/fd/{fd}")
        if proc.exists():
            _check_inside(path, Path(os.readlink(proc)), allowed_roots)
        _check_size(path, st.st_size, max_bytes)
    except BaseException:
        fh.close()
        raise
    return fh


def _check_inside(path: Path, resolved: Path, allowed_roots: list[str | os.PathLike[str]] | None) -> None:
    if allowed_roots:
        roots = [Path(r).resolve() for r in allowed_roots]
        if not any(resolved == r or r in resolved.parents for r in roots):
            raise IngestError(f"{path} is outside the folders ingest may read: {', '.join(map(str, roots))}")


def _check_size(path: Path, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise IngestError(f"{path} is {size:,} bytes, over the ingest limit of {max_bytes:,} bytes")


def ingest_scenario(
    lake: str | os.PathLike[str],
    name: str,
    *,
    progress: Progress | None = None,
    task: str | None = None,
    **params: Any,
) -> IngestReport:
    """Generate scenario ``name`` (see :data:`lake.scenarios.SCENARIOS`) and ingest it.

    ``params`` go to the scenario (e.g. ``limit=2000``); unknown ones raise
    :class:`IngestError` listing the accepted ones. ``task`` goes to scenarios that
    take one (``flights``) and is the ingest's task (see :func:`ingest_frame`).
    """
    from lake.scenarios import SCENARIOS

    started = time.perf_counter()
    try:
        make = SCENARIOS[name]
    except KeyError:
        raise IngestError(
            f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}"
        ) from None
    accepted = [p for p in inspect.signature(make).parameters]
    if task is not None and "task" in accepted:
        params["task"] = task
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise IngestError(f"scenario {name!r} takes no parameter(s) {unknown}; it takes {accepted}")
    try:
        frames = make(**params)
    except ValueError as ex:
        raise IngestError(f"scenario {name!r}: {ex}") from ex
    extra = {} if frames.drifts is None else {"scenario_drifts": frames.drifts}
    merged = frames.events.join(frames.labels, on="event_id", how="left", maintain_order="left")
    if merged.height != frames.events.height or frames.labels.height > merged["label"].count():
        raise LakeError(
            f"scenario {name!r} produced labels that do not match its events one to one"
        )
    return _ingest(
        lake,
        merged,
        source=name,
        progress=progress,
        extra=extra,
        started=started,
        fingerprint=repr(sorted(params.items())),
        on_error="refuse",
        id_col="event_id",
        time_col="event_time",
        label_col="label",
        key_col="key",
        label_time_col="label_time",
        label_delay=None,
        positive=None,
        task=task if task is not None or frames.task is None else Task(frames.task, reason=f"scenario {name!r}"),
    )


def read_input(source: Path | IO[bytes], *, name: str | None = None,
               keep_text: list[str] | None = None) -> pl.DataFrame:
    """Read a ``.csv`` or ``.parquet`` file (a path, or an open file with its ``name``);
    CSV columns in ``keep_text`` are read as strings."""
    if isinstance(source, Path):
        with open_input(source) as fh:
            return read_input(fh, name=source.name, keep_text=keep_text)
    label = name or getattr(source, "name", "input")
    suffix = Path(str(label)).suffix.lower()
    try:
        data = source.read()
        if suffix != ".csv":
            return pl.read_parquet(io.BytesIO(data))
        header = pl.read_csv(io.BytesIO(data), n_rows=0).columns
        text = {c: pl.String for c in keep_text or [] if c in header}
        return pl.read_csv(
            io.BytesIO(data), schema_overrides=text, infer_schema_length=None, null_values=_CSV_NULLS
        )
    except (pl.exceptions.PolarsError, OSError, ValueError) as ex:
        first = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
        raise IngestError(f"cannot read {str(label)!r}: {first}") from ex


# --------------------------------------------------------------------------- validation


class _Checks:
    """Bad rows found so far, by problem: ``add`` records a problem where ``bad`` is true."""

    def __init__(self, n_rows: int) -> None:
        self.n_rows = n_rows
        self.problems: list[tuple[str, str, np.ndarray, bool]] = []  # kind, message, rows, show ids
        self.ids: list[str | None] | None = None

    def add(self, kind: str, message: str, bad: pl.Series, *, rows: np.ndarray | None = None,
            show_ids: bool = True) -> None:
        """``bad`` is a mask over the input rows, or over ``rows`` (input row numbers) when given."""
        hit = bad.fill_null(False).to_numpy()
        if not hit.any():
            return
        where = np.flatnonzero(hit)
        self.problems.append((kind, message, where if rows is None else rows[where], show_ids))

    def bad_mask(self) -> np.ndarray:
        mask = np.zeros(self.n_rows, dtype=bool)
        for _, _, rows, _ in self.problems:
            mask[rows] = True
        return mask

    def reasons(self) -> dict[int, list[str]]:
        """Each bad row's reasons, ``"kind: message"``."""
        out: dict[int, list[str]] = {}
        for kind, message, rows, _ in self._ordered():
            for r in rows.tolist():
                out.setdefault(r, []).append(f"{kind}: {message}")
        return out

    def kinds(self) -> dict[str, int]:
        """Bad rows by kind."""
        by: dict[str, set[int]] = {}
        for kind, _, rows, _ in self._ordered():
            by.setdefault(kind, set()).update(rows.tolist())
        return {k: len(v) for k, v in by.items()}

    def _ordered(self) -> list[tuple[str, str, np.ndarray, bool]]:
        return sorted(self.problems, key=lambda p: KINDS.index(p[0]))

    def error(self, *, header: str) -> IngestError | None:
        """One :class:`IngestError` naming every problem, or ``None`` when there is none."""
        errors = []
        for kind, message, rows, show_ids in self._ordered():
            rows = np.sort(rows)
            shown = rows[: IngestError.SHOWN_ROWS].tolist()
            ids = [self.ids[r] for r in shown] if show_ids and self.ids is not None else None
            errors.append((kind, IngestError(message, rows=shown, n_rows=rows.size, ids=ids)))
        if not errors:
            return None
        if len(errors) == 1:
            return errors[0][1]
        n_bad = int(self.bad_mask().sum())
        lines = [f"{n_bad:,} of {self.n_rows:,} rows cannot be ingested; {header}:"]
        counts = self.kinds()
        for kind in counts:  # one line per kind
            same = "; ".join(str(err) for k, err in errors if k == kind)
            lines.append(f"  {kind} ({counts[kind]:,}): {same}")
        every = sorted({r for _, err in errors for r in err.rows})
        return IngestError("\n".join(lines), rows=every, n_rows=n_bad,
                           problems=[err for _, err in errors])


@dataclass
class _Prepared:
    """An input, validated on its own: its good rows as ``events``/``labels`` and what was wrong."""

    frame: pl.DataFrame
    events: pl.DataFrame  # good rows, without offset
    labels: pl.DataFrame
    rows: np.ndarray  # input row of each events row
    label_rows: np.ndarray  # input row of each labels row
    checks: _Checks
    notes: list[str]


def _ingest(
    lake: str | os.PathLike[str],
    frame: pl.DataFrame,
    *,
    source: str,
    progress: Progress | None,
    fingerprint: str,
    started: float,
    on_error: OnError,
    extra: Mapping[str, pl.DataFrame] | None = None,
    **columns: Any,
) -> IngestReport:
    if not source:
        raise IngestError(f"source must be a non-empty name, got {source!r}")
    if on_error not in ON_ERROR:
        raise IngestError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    if columns.get("numbers_from_text") and exists(lake, "events"):  # what the lake holds as text stays text
        schema = pl.scan_delta(table_uri(lake, "events")).collect_schema()
        text = [c for c, t in schema.items() if t == pl.String and c in frame.columns and c not in _RESERVED]
        columns["text_cols"] = (*columns.get("text_cols", ()), *text)
    columns["task"] = _task(lake, frame, columns)
    prep = _prepare(frame, **columns)
    return _write(lake, prep, extra=dict(extra or {}), source=source, fingerprint=fingerprint,
                  on_error=on_error, progress=progress, started=started, task=columns["task"])


def _task(lake: str | os.PathLike[str], frame: pl.DataFrame, columns: dict[str, Any]) -> Task | None:
    """The task the labels are ingested as (:func:`lake.tasks.resolve_task`); ``positive`` means binary."""
    label_col, requested = columns.get("label_col"), columns.get("task")
    if not isinstance(label_col, str) or label_col not in frame.columns:
        return None  # _prepare names the problem
    if requested is None and columns.get("positive") is not None:
        requested = Task("binary", reason="--positive given")
    return resolve_task(lake, plain(frame.get_column(label_col)), name=label_col, requested=requested)


def prepare(
    frame: pl.DataFrame,
    *,
    id_col: str,
    time_col: str,
    label_col: str,
    key_col: str | None = None,
    label_time_col: str | None = None,
    label_delay: float | None = None,
    positive: str | None = None,
    limits: IngestLimits | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The ``events`` (without ``offset``) and ``labels`` frames of a validated input.

    Checks only the input itself (every bad row, in one :class:`IngestError`);
    :func:`ingest_frame` also checks it against the lake.
    """
    prep = _prepare(frame, id_col=id_col, time_col=time_col, label_col=label_col, key_col=key_col,
                    label_time_col=label_time_col, label_delay=label_delay, positive=positive,
                    limits=limits)
    error = prep.checks.error(header="nothing written")
    if error is not None:
        raise error
    return prep.events, prep.labels


def _prepare(
    frame: pl.DataFrame,
    *,
    id_col: str,
    time_col: str,
    label_col: str,
    key_col: str | None = None,
    label_time_col: str | None = None,
    label_delay: float | None = None,
    positive: str | None = None,
    limits: IngestLimits | None = None,
    numbers_from_text: bool = False,
    text_cols: tuple[str, ...] = (),
    task: Task | None = None,
) -> _Prepared:
    limits = limits or IngestLimits()
    if not isinstance(limits, IngestLimits):
        raise IngestError(f"limits must be an IngestLimits, got {limits!r}")
    roles = {
        "id_col": id_col,
        "time_col": time_col,
        "label_col": label_col,
        "key_col": key_col,
        "label_time_col": label_time_col,
    }
    given = {role: col for role, col in roles.items() if col is not None}
    for role, col in given.items():
        if not isinstance(col, str) or not col:
            raise IngestError(f"{role} must be a column name, got {col!r}")
        if col not in frame.columns:
            raise IngestError(f"column {col!r} ({role}) not found; the input has {frame.columns}")
    if len(set(given.values())) != len(given):
        raise IngestError(f"id, time, label, key and label-time columns must differ, got {given}")
    missing_text = [c for c in text_cols if c not in frame.columns]
    if missing_text:
        raise IngestError(f"text column(s) {missing_text} not found; the input has {frame.columns}")
    if label_time_col is not None and label_delay is not None:
        raise IngestError("give label_time_col or label_delay, not both")
    if label_delay is not None and not (
        isinstance(label_delay, int | float) and math.isfinite(label_delay) and label_delay >= 0
    ):
        raise IngestError(
            f"label_delay must be a finite number of seconds >= 0, got {label_delay!r}"
        )
    if frame.height == 0:
        raise IngestError("the input has no rows")
    payload = [c for c in frame.columns if c not in given.values()]
    clash = [c for c in payload if c in _RESERVED]
    if clash:
        raise IngestError(
            f"payload column(s) {clash} would overwrite the lake's own columns; rename them"
        )

    checks = _Checks(frame.height)
    column = {c: plain(frame.get_column(c)) for c in frame.columns}  # neutral names: safe in any method
    event_id = _event_ids(column[id_col], name=id_col, checks=checks, limits=limits)
    checks.ids = event_id.to_list()
    event_time = _times(column[time_col], name=time_col, what="event time", checks=checks)
    if key_col is None:
        key = pl.Series(["all"] * frame.height, dtype=pl.String)
    else:
        key = _keys(column[key_col], name=key_col, checks=checks, limits=limits)
    if task is None or task.name == "binary":
        label = _labels(column[label_col], name=label_col, positive=positive, checks=checks)
    else:
        label, bad_label, why = task_labels(task, column[label_col], name=label_col)
        checks.add("label", why, bad_label)
    labelled = label.is_not_null()
    if label_time_col is not None:
        raw = column[label_time_col]
        checks.add("time", f"labels without a label time in column {label_time_col!r}",
                   labelled & raw.is_null())
        label_time = _times(raw, name=label_time_col, what="label time", checks=checks, only=labelled)
    else:
        delay = timedelta(microseconds=round((label_delay or 0) * 1_000_000))
        label_time = event_time + delay
    checks.add("time", "label_time is before event_time", labelled & (label_time < event_time))

    notes: list[str] = []
    values = [
        _payload_column(column[c], name=c, checks=checks, limits=limits, notes=notes,
                        numbers_from_text=numbers_from_text and c not in text_cols)
        for c in payload
    ]
    good = pl.Series(~checks.bad_mask())
    events = pl.DataFrame([event_id.alias("event_id"), event_time.alias("event_time"), key.alias("key")])
    events = events.hstack([v.alias(c) for c, v in zip(payload, values, strict=True)])
    rows = np.arange(frame.height)
    with_label = good & labelled
    labels = pl.DataFrame(
        [event_id.alias("event_id"), label.alias("label"), label_time.alias("label_time")]
    ).filter(with_label)
    return _Prepared(frame=frame, events=events.filter(good), labels=labels, rows=rows[good.to_numpy()],
                     label_rows=rows[with_label.to_numpy()], checks=checks, notes=notes)


def _event_ids(col: pl.Series, *, name: str, checks: _Checks, limits: IngestLimits) -> pl.Series:
    if col.dtype.is_float():
        raise IngestError(
            f"id column {name!r} holds floats ({col.dtype}); ids must be strings or integers"
        )
    ids = _as_text(col, name=name, what="id")
    missing = ids.is_null()
    empty = ids.str.strip_chars() == ""
    long = ids.str.len_chars() > limits.max_id_chars
    either = missing | empty.fill_null(False)
    what = "missing" if not empty.any() else "empty" if not missing.any() else "missing or empty"
    checks.add("empty id", f"{what} ids in column {name!r}", either, show_ids=False)
    checks.add("oversize", f"ids longer than {limits.max_id_chars:,} characters in column {name!r}",
               long, show_ids=False)
    usable = ~(either | long.fill_null(False))
    dup = usable & ids.is_duplicated()
    if dup.any():
        first = ids.filter(dup).head(1).item()
        checks.add("duplicate id", f"duplicate ids in column {name!r} (e.g. {first!r})", dup,
                   show_ids=False)
    return ids


def _keys(col: pl.Series, *, name: str, checks: _Checks, limits: IngestLimits) -> pl.Series:
    keys = _as_text(col, name=name, what="key")
    checks.add("key", f"missing keys in column {name!r}", keys.is_null())
    checks.add("oversize", f"keys longer than {limits.max_id_chars:,} characters in column {name!r}",
               keys.str.len_chars() > limits.max_id_chars)
    return keys


def _as_text(col: pl.Series, *, name: str, what: str) -> pl.Series:
    """``col`` as strings (integers in decimal)."""
    dtype = col.dtype
    if not (
        dtype == pl.String or dtype.is_integer() or isinstance(dtype, pl.Categorical | pl.Enum)
    ):
        raise IngestError(
            f"{what} column {name!r} has type {dtype}; expected strings or integers"
        )
    return col.cast(pl.String)


def _times(col: pl.Series, *, name: str, what: str, checks: _Checks,
           only: pl.Series | None = None) -> pl.Series:
    """``col`` as ``Datetime[us, UTC]``; where missing or unparsable (in ``only`` rows) a bad row."""
    parsed = parse_times(col)
    bad = parsed.is_null()
    if only is not None:
        bad = bad & only & col.is_not_null()
    if bad.any():
        raw = col.filter(bad & col.is_not_null()).head(1)
        example = f" (e.g. {raw.item()!r})" if raw.len() else ""
        checks.add(
            "time",
            f"missing or unparsable {what}s in column {name!r}{example}; expected "
            f"ISO 8601 strings, datetimes or epoch seconds {_YEARS}",
            bad,
        )
    return parsed


def parse_times(col: pl.Series) -> pl.Series:
    """``col`` as ``Datetime[us, UTC]``, null where missing, unparsable or outside 1900-2199.

    Naive datetimes and naive ISO strings are taken as UTC; numbers are epoch seconds.

    >>> parse_times(pl.Series(["2024-01-01T02:00:00+02:00", "2024-01-01", "nope"])).to_list()
    [datetime.datetime(2024, 1, 1, 0, 0, tzinfo=zoneinfo.ZoneInfo(key='UTC')), \
datetime.datetime(2024, 1, 1, 0, 0, tzinfo=zoneinfo.ZoneInfo(key='UTC')), None]
    >>> parse_times(pl.Series([1.5, 1e12])).dt.epoch("us").to_list()
    [1500000, None]
    """
    name, col = col.name, plain(col)
    dtype = col.dtype
    if isinstance(dtype, pl.Datetime):
        out = (
            col.dt.replace_time_zone("UTC")
            if dtype.time_zone is None
            else col.dt.convert_time_zone("UTC")
        )
        us = out.dt.cast_time_unit("us").dt.epoch("us")
    elif dtype == pl.Date:
        us = col.cast(pl.Datetime("us")).dt.epoch("us")
    elif dtype.is_integer() or dtype.is_float():
        seconds = pl.col("t").cast(pl.Float64)
        ok = seconds.is_finite() & (seconds >= _MIN_S) & (seconds < _MAX_S)
        exact = pl.col("t").cast(pl.Int64) * 1_000_000
        value = exact if dtype.is_integer() else (seconds * 1_000_000).round().cast(pl.Int64)
        us = pl.DataFrame({"t": col}).select(pl.when(ok).then(value)).to_series()
    elif dtype == pl.String:
        unique = col.drop_nulls().unique()
        parsed = pl.Series([_iso_us(s) for s in unique.to_list()], dtype=pl.Int64)
        us = col.replace_strict(unique, parsed, default=None, return_dtype=pl.Int64)
    else:
        raise IngestError(
            f"time column {name!r} has type {dtype}; expected ISO 8601 strings, "
            "datetimes or epoch seconds"
        )
    return _null_where(us, ~((us >= MIN_TIME_US) & (us < MAX_TIME_US))).cast(_UTC_US).alias(name)


def _null_where(values: pl.Series, mask: pl.Series) -> pl.Series:
    """``values`` with nulls where ``mask`` is true (or null)."""
    frame = pl.DataFrame({"v": values, "m": mask.fill_null(True)})
    return frame.select(pl.when(~pl.col("m")).then(pl.col("v"))).to_series()


def _iso_us(text: str) -> int | None:
    """Epoch microseconds of an ISO 8601 string, else of a number of seconds, else ``None``."""
    text = text.strip()
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        try:
            seconds = float(text)
        except ValueError:
            return None
        ok = math.isfinite(seconds) and _MIN_S <= seconds < _MAX_S
        return round(seconds * 1_000_000) if ok else None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // _ONE_US


def _labels(col: pl.Series, *, name: str, positive: str | None, checks: _Checks) -> pl.Series:
    """0/1 labels (``Int64``; null where the input has none, or a bad one)."""
    if col.null_count() == col.len():  # no label yet (a CSV reads an empty column as text): events only
        return pl.Series(col.name, [None] * col.len(), dtype=pl.Int64)
    dtype = col.dtype
    if dtype == pl.Boolean:
        if positive is not None and str(positive).lower() not in ("true", "1"):
            raise IngestError(
                f"positive={positive!r} does not fit boolean labels in column {name!r}"
            )
        return col.cast(pl.Int64)
    if dtype.is_integer() or dtype.is_float():
        if positive is not None and str(positive) not in ("1", "1.0"):
            raise IngestError(
                f"positive={positive!r} does not fit 0/1 labels in column {name!r}"
            )
        ok = col.cast(pl.Float64).is_in([0.0, 1.0])
        checks.add("label", f"labels in column {name!r} must be 0 or 1", col.is_not_null() & ~ok)
        return _null_where(col, ~ok).cast(pl.Int64)
    if dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum):
        col = col.cast(pl.String)
        values = sorted(col.drop_nulls().unique().to_list())
        shown = ", ".join(repr(v) for v in values[:10]) + (" ..." if len(values) > 10 else "")
        if len(values) > 2:
            raise IngestError(
                f"label column {name!r} has {len(values)} distinct values ({shown}); "
                "expected two"
            )
        if positive is None:
            raise IngestError(
                f"label column {name!r} holds strings ({shown}); "
                "say which one is the positive class (positive=... / --positive)"
            )
        if len(values) == 2 and positive not in values:
            raise IngestError(
                f"positive={positive!r} is not one of the labels in column {name!r} ({shown})"
            )
        return (col == positive).cast(pl.Int64)
    raise IngestError(
        f"label column {name!r} has type {dtype}; expected booleans, 0/1 or two strings"
    )


def _payload_column(col: pl.Series, *, name: str, checks: _Checks, limits: IngestLimits,
                    notes: list[str], numbers_from_text: bool) -> pl.Series:
    """A payload column in a type Delta stores (no unsigned integers, no categoricals)."""
    dtype = col.dtype
    if dtype in (pl.UInt8, pl.UInt16, pl.UInt32):
        col = col.cast(pl.Int64)
    elif dtype == pl.UInt64:
        try:
            col = col.cast(pl.Int64, strict=True)
        except pl.exceptions.InvalidOperationError as ex:
            raise IngestError(f"payload column {name!r}: UInt64 values beyond Int64") from ex
    elif isinstance(dtype, pl.Categorical | pl.Enum):
        col = col.cast(pl.String)
    elif dtype == pl.Object or isinstance(dtype, pl.Duration | pl.Time):
        raise IngestError(
            f"payload column {name!r} has type {dtype}, which Delta tables cannot store; "
            "convert it first (e.g. durations to seconds, times of day to strings)"
        )
    if col.dtype == pl.String and numbers_from_text:
        col = _numbers_in_text(col, name=name, checks=checks, notes=notes)
    if col.dtype == pl.String:
        checks.add("oversize", f"values longer than {limits.max_field_bytes:,} bytes in column {name!r}",
                   col.str.len_bytes() > limits.max_field_bytes)
    if col.dtype.is_float():
        odd = col.is_nan() | col.is_infinite()
        n_odd = int(odd.sum())
        if n_odd:
            where = ", ".join(str(r) for r in odd.arg_true().head(5).to_list())
            notes.append(f"column {name!r}: {n_odd:,} NaN/inf value(s) stored as floats (rows {where}"
                         f"{', ...' if n_odd > 5 else ''}); the dataflow dead-letters events with inf")
    return col


def _numbers_in_text(col: pl.Series, *, name: str, checks: _Checks, notes: list[str]) -> pl.Series:
    """A CSV text column read as numbers where its values are numbers (``NaN``/``inf`` spellings
    the CSV reader left as text), or mostly numbers (the rest are bad rows, kind ``number``)."""
    given = col.is_not_null()
    numbers = col.str.strip_chars().cast(pl.Float64, strict=False)
    n_given, n_numbers = int(given.sum()), int(numbers.is_not_null().sum())
    if not n_numbers or 2 * n_numbers < n_given:
        return col  # text
    if n_numbers < n_given:
        text = given & numbers.is_null()
        example = col.filter(text).head(1).item()
        checks.add("number", f"text in column {name!r} of numbers (e.g. {example!r}); "
                   "name it in text_cols (--text-col) to keep the column as text", text)
    else:
        odd = col.filter(given & ~numbers.is_finite()).unique(maintain_order=True).head(3).to_list()
        notes.append(f"column {name!r} holds numbers written as text ({', '.join(map(repr, odd))}): "
                     "stored as floats")
    return numbers


# --------------------------------------------------------------------------- writing


def _fingerprint(tables: Mapping[str, pl.DataFrame], extra: str) -> str:
    digest = hashlib.sha256(f"chunk={CHUNK_ROWS};{extra}".encode())
    for name in sorted(tables):
        digest.update(name.encode())
        buf = tables[name].rechunk().write_ipc(None, compression="uncompressed")
        digest.update(buf.getvalue())
    return digest.hexdigest()[:16]


def _check_against_lake(
    lake: str | os.PathLike[str], events: pl.DataFrame, rows: np.ndarray, checks: _Checks, *,
    first_row: int = 0,
) -> pl.DataFrame:
    """Ids already in the lake and values that do not fit the lake's column types become bad rows
    (``rows`` maps events rows to input rows); payload columns are cast to the lake's types."""
    if not exists(lake, "events") or events.height == 0:
        return events
    uri = table_uri(lake, "events")
    pending = events.get_column("event_id").slice(first_row)
    seen = (
        pl.scan_delta(uri)
        .select("event_id")
        .filter(pl.col("event_id").is_in(pending.implode()))
        .collect()
        .get_column("event_id")
    )
    if seen.len():
        checks.add("duplicate id", f"ids already in the lake's events table (e.g. {seen[0]!r})",
                   pending.is_in(seen.implode()), rows=rows[first_row:], show_ids=False)
    schema = pl.scan_delta(uri).collect_schema()
    casts = []
    for name, dtype in events.schema.items():
        have = schema.get(name)
        if name in _RESERVED or have is None or have == dtype:
            continue
        casts.append(_fit(plain(events.get_column(name)), name=name, have=have, rows=rows,
                          checks=checks).alias(name))
    return events.with_columns(casts) if casts else events


def _fit(col: pl.Series, *, name: str, have: pl.DataType, rows: np.ndarray, checks: _Checks) -> pl.Series:
    """``col`` cast to the lake's type ``have``: values that do not fit are bad rows, never truncated."""
    mismatch = f"payload column {name!r} is {col.dtype} but the lake's events have {have}"
    given = col.is_not_null()
    numeric = have.is_integer() or have.is_float()
    if numeric and (col.dtype == pl.String or col.dtype.is_numeric()):
        source = col.str.strip_chars() if col.dtype == pl.String else col
        numbers = source.cast(pl.Float64, strict=False)
        text = given & numbers.is_null()
        if col.dtype == pl.String and text.all():
            raise IngestError(mismatch)
        checks.add("number", f"text in column {name!r}, which the lake's events hold as {have}",
                   text, rows=rows)
        if not have.is_integer():
            return numbers.cast(have)
        if col.dtype.is_integer():
            return col.cast(have, strict=False)
        whole = numbers.is_finite() & (numbers == numbers.floor())
        checks.add("number", f"fractions (or NaN/inf) in column {name!r}, which the lake's events hold "
                   f"as {have}", given & numbers.is_not_null() & ~whole, rows=rows)
        return numbers.cast(have, strict=False)
    try:
        return col.cast(have, strict=True)
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as ex:
        raise IngestError(mismatch) from ex


def _first_offset(lake: str | os.PathLike[str]) -> int:
    """Offset after the largest one in the lake's events (0 for a new lake)."""
    if not exists(lake, "events"):
        return 0
    top = pl.scan_delta(table_uri(lake, "events")).select(pl.col("offset").max()).collect().item()
    return 0 if top is None else int(top) + 1


def _resumed_offset(lake: str | os.PathLike[str], events: pl.DataFrame) -> int:
    """Offset a previous, interrupted run of the same ingest gave the first event."""
    first = events.get_column("event_id")[0]
    found = (
        pl.scan_delta(table_uri(lake, "events"))
        .filter(pl.col("event_id") == first)
        .select("offset")
        .collect()
    )
    if found.height != 1:
        raise LakeError(
            f"cannot resume: event {first!r} written by an earlier run is not in the lake"
        )
    return int(found.item())


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, datetime | date | timedelta):
        return value.isoformat() if not isinstance(value, timedelta) else value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


def _clipped(text: str, limit: int = _RAW_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut (as the dataflow's dead letters do)."""
    return text if len(text) <= limit else text[:limit] + f"...[truncated {len(text) - limit} chars]"


def _dead_letters(prep: _Prepared, bad: np.ndarray, *, writer_id: str, source: str) -> pl.DataFrame:
    """``dead_letters`` rows of the input rows ``bad``: the reasons and the row as read, in JSON."""
    reasons = prep.checks.reasons()
    ids = prep.checks.ids or [None] * prep.frame.height
    raws = [
        _clipped(json.dumps(_json_value(row), ensure_ascii=False, default=str))
        for row in prep.frame[bad.tolist()].iter_rows(named=True)
    ] if bad.size else []
    return pl.DataFrame(
        {
            "run_id": [writer_id] * bad.size,
            "shard": pl.Series([0] * bad.size, dtype=pl.Int32),
            "seq": pl.Series(bad, dtype=pl.Int64),
            "step": ["ingest"] * bad.size,
            "reason": ["; ".join(reasons.get(r, ["rejected at ingest"])) for r in bad.tolist()],
            "source": [source] * bad.size,
            "event_id": pl.Series([ids[r] for r in bad.tolist()], dtype=pl.String),
            "raw": raws,
        },
        schema_overrides={"raw": pl.String},
    )


def _recorded_bad_rows(lake: str | os.PathLike[str], writer_id: str) -> np.ndarray:
    """Input rows an earlier run of this ingest dead-lettered (its decision, kept on resume)."""
    if not exists(lake, "dead_letters"):
        return np.zeros(0, dtype=np.int64)
    rows = read_table(lake, "dead_letters", columns=["run_id", "seq"]).filter(
        pl.col("run_id") == writer_id)
    return np.sort(rows.get_column("seq").to_numpy())


def _write(
    lake: str | os.PathLike[str],
    prep: _Prepared,
    *,
    extra: dict[str, pl.DataFrame],
    source: str,
    fingerprint: str,
    on_error: OnError,
    progress: Progress | None,
    started: float,
    task: Task | None = None,
) -> IngestReport:
    checks = prep.checks
    input_bad = np.flatnonzero(checks.bad_mask())
    if input_bad.size:  # the same good rows with other bad ones are another input
        fingerprint += f";bad={hashlib.sha256(input_bad.tobytes()).hexdigest()}"
    writer_id = f"ingest/{source}/{_fingerprint({'events': prep.events, 'labels': prep.labels, **extra}, fingerprint)}"
    names = ["dead_letters", "events", "labels", *extra]
    schemas = {"labels": task_schema("labels", task.name)} if task is not None and task.name != "binary" else {}
    writers = {name: TableWriter(lake, name, writer_id=writer_id, schema=schemas.get(name)) for name in names}
    data = [n for n in names if n != "dead_letters"]
    resumed = any(writers[n].committed_position is not None for n in data)

    if resumed:  # an earlier run decided which rows were bad: keep its decision
        bad = _recorded_bad_rows(lake, writer_id)
    else:
        events = _check_against_lake(lake, prep.events, prep.rows, checks)
        bad = np.flatnonzero(checks.bad_mask())
        if bad.size and on_error == "refuse":
            raise checks.error(header="nothing written (on_error='dead-letter', --on-error dead-letter, "
                               "ingests the other rows and dead-letters these)")
        prep.events = events
    if input_bad.size and on_error == "refuse" and not np.isin(input_bad, bad).all():
        raise checks.error(header="nothing written")
    keep = ~np.isin(prep.rows, bad)
    keep_labels = ~np.isin(prep.label_rows, bad)
    tables = {
        "dead_letters": _dead_letters(prep, bad, writer_id=writer_id, source=source) if not resumed
        else pl.DataFrame(),
        "events": prep.events.filter(pl.Series(keep)),
        "labels": prep.labels.filter(pl.Series(keep_labels)),
        **extra,
    }
    positions = {name: [i + 1 for i in range(math.ceil(f.height / CHUNK_ROWS))]
                 for name, f in tables.items() if name != "dead_letters"}
    positions["dead_letters"] = [int(bad[min((i + 1) * CHUNK_ROWS, bad.size) - 1])
                                 for i in range(math.ceil(bad.size / CHUNK_ROWS))] if not resumed else []
    committed = {name: writers[name].committed_position for name in names}
    done = {name: sum(1 for p in positions[name] if committed[name] is not None and committed[name] >= p)
            for name in names}
    kinds = checks.kinds() if not resumed else _recorded_kinds(lake, writer_id)

    def report(already: bool) -> IngestReport:
        return IngestReport(
            source=source,
            lake=os.fspath(lake),
            n_events=tables["events"].height,
            n_labels=tables["labels"].height,
            events_version=table_version(lake, "events"),
            labels_version=table_version(lake, "labels"),
            already_ingested=already,
            writer_id=writer_id,
            seconds=time.perf_counter() - started,
            n_dead_letters=int(bad.size),
            dead_letter_kinds=kinds,
            notes=tuple(prep.notes),
            task=task if tables["labels"].height else None,
        )

    if all(done[name] >= len(positions[name]) for name in names):
        return report(True)
    if task is not None and tables["labels"].height:
        record_task(lake, task)  # before the first labels; refuses a lake that holds another task
    events = tables["events"]
    if resumed:  # rows not written yet must still be new to the lake
        first_row = done["events"] * CHUNK_ROWS
        again = _Checks(prep.frame.height)
        again.ids = checks.ids
        events = _check_against_lake(lake, events, prep.rows[keep], again, first_row=first_row)
        error = again.error(header="found since this ingest began; nothing more written")
        if error is not None:
            raise error
        base = _resumed_offset(lake, events) if events.height else 0
    else:
        base = _first_offset(lake)
    tables["events"] = events.with_columns(
        (pl.int_range(0, events.height, dtype=pl.Int64) + base).alias("offset")
    )
    total = sum(frame.height for frame in tables.values())
    written = sum(min(done[n] * CHUNK_ROWS, tables[n].height) for n in names)
    for name, frame in tables.items():
        for i in range(done[name], len(positions[name])):
            chunk = frame.slice(i * CHUNK_ROWS, CHUNK_ROWS)
            writers[name].append(chunk, position=positions[name][i])
            written += chunk.height
            if progress is not None:
                progress(written, total)
    return report(False)


def _recorded_kinds(lake: str | os.PathLike[str], writer_id: str) -> dict[str, int]:
    """Dead-lettered rows by kind, from the reasons an earlier run of this ingest wrote."""
    if not exists(lake, "dead_letters"):
        return {}
    reasons = read_table(lake, "dead_letters", columns=["run_id", "reason"]).filter(
        pl.col("run_id") == writer_id).get_column("reason").to_list()
    counts: dict[str, int] = {}
    for reason in reasons:
        for kind in {part.split(":", 1)[0] for part in reason.split("; ")}:
            counts[kind] = counts.get(kind, 0) + 1
    return {k: counts[k] for k in KINDS if k in counts}
