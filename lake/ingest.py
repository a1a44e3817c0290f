"""Ingest a user file, a frame or a scenario into the lake's ``events`` and ``labels``.

Every input goes through one validated path: the whole input is checked first
(columns, ids, times, labels, ids already in the lake) and only then written,
in chunks of :data:`CHUNK_ROWS` rows. Each chunk is an idempotent append tagged
``(writer_id, position)`` where ``writer_id`` is the source name plus a hash of
the normalised content, so running the same ingest again writes nothing, and an
interrupted one completes on the next run.

Times (event and label times) may be timezone-aware datetimes (converted to
UTC), naive datetimes (**taken as UTC**), dates (midnight UTC), ISO 8601 strings
(naive ones taken as UTC) or numbers of seconds since the Unix epoch.

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
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from lake.errors import IngestError, LakeError
from lake.schemas import EVENTS
from lake.table import TableWriter, exists, table_uri, table_version

CHUNK_ROWS = 250_000
"""Rows per idempotent append. Part of the writer id: changing it starts a new ingest."""

Progress = Callable[[int, int], Any]
"""``progress(done_rows, total_rows)``, called after each chunk (all tables counted)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_MIN_S, _MAX_S = -62_135_596_800, 253_402_300_799  # 0001-01-01 .. 9999-12-31T23:59:59 UTC
_UTC_US = pl.Datetime("us", "UTC")
_RESERVED = frozenset(EVENTS.names)
_CSV_NULLS = ["", "NA"]


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

    def __str__(self) -> str:
        versions = f"events v{self.events_version}, labels v{self.labels_version}"
        counts = f"{self.n_events:,} events, {self.n_labels:,} labels"
        if self.already_ingested:
            return (
                f"{self.source}: already ingested in {self.lake} ({counts}; {versions}); "
                "nothing written"
            )
        took = f"{self.seconds:.1f} s"
        return f"{self.source}: ingested {counts} into {self.lake} ({versions}) in {took}"


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
    progress: Progress | None = None,
) -> IngestReport:
    """Validate ``frame`` and append it to ``events`` and ``labels`` (idempotently).

    ``events`` gets ``event_id`` (string; integer ids as decimal strings),
    ``event_time`` (UTC), ``key`` (``key_col`` as string, ``"all"`` without one),
    ``offset`` (input order, after the lake's current maximum) and every other
    column unchanged as payload. ``labels`` gets one row per non-null label:
    ``label`` is 0/1 from booleans, 0/1 numbers or two strings (``positive`` names
    the one meaning 1); ``label_time`` is ``label_time_col``, else ``event_time +
    label_delay`` seconds, else ``event_time``.

    Raises :class:`IngestError` (naming columns and 0-based row numbers) before
    anything is written when the input cannot be ingested as it is.
    """
    return _ingest(
        lake,
        frame,
        source=source,
        progress=progress,
        fingerprint="",
        started=time.perf_counter(),
        id_col=id_col,
        time_col=time_col,
        label_col=label_col,
        key_col=key_col,
        label_time_col=label_time_col,
        label_delay=label_delay,
        positive=positive,
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
    progress: Progress | None = None,
    max_bytes: int | None = None,
    allowed_roots: list[str | os.PathLike[str]] | None = None,
) -> IngestReport:
    """Read a ``.csv`` or ``.parquet`` file and ingest it like :func:`ingest_frame`.

    CSV: ids and keys are read as text, so they stay exact (``"007"``); empty
    fields and ``NA`` are missing values; other types are inferred from the whole
    file. The source name is the file name.

    ``max_bytes`` refuses larger files, ``allowed_roots`` files outside those
    folders (after resolving links and ``..``); both raise :class:`IngestError`
    before anything is read.
    """
    started = time.perf_counter()
    p = Path(path)
    check_file_limits(p, max_bytes=max_bytes, allowed_roots=allowed_roots)
    frame = read_input(p, keep_text=[c for c in (id_col, key_col) if c])
    return _ingest(
        lake,
        frame,
        source=p.name,
        progress=progress,
        fingerprint="",
        started=started,
        id_col=id_col,
        time_col=time_col,
        label_col=label_col,
        key_col=key_col,
        label_time_col=label_time_col,
        label_delay=label_delay,
        positive=positive,
    )


def check_file_limits(path: Path, *, max_bytes: int | None = None,
                      allowed_roots: list[str | os.PathLike[str]] | None = None) -> None:
    """Refuse a file outside ``allowed_roots`` or larger than ``max_bytes``, with a clear message."""
    resolved = Path(path).resolve()
    if allowed_roots:
        roots = [Path(r).resolve() for r in allowed_roots]
        if not any(resolved == r or r in resolved.parents for r in roots):
            raise IngestError(f"{path} is outside the folders ingest may read: {', '.join(map(str, roots))}")
    if not resolved.exists():
        raise IngestError(f"no such file: {path}")
    if not resolved.is_file():
        raise IngestError(f"{path} is not a file")
    size = resolved.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise IngestError(f"{path} is {size:,} bytes, over the ingest limit of {max_bytes:,} bytes")


def ingest_scenario(
    lake: str | os.PathLike[str],
    name: str,
    *,
    progress: Progress | None = None,
    **params: Any,
) -> IngestReport:
    """Generate scenario ``name`` (see :data:`lake.scenarios.SCENARIOS`) and ingest it.

    ``params`` go to the scenario (e.g. ``limit=2000``); unknown ones raise
    :class:`IngestError` listing the accepted ones.
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
        id_col="event_id",
        time_col="event_time",
        label_col="label",
        key_col="key",
        label_time_col="label_time",
        label_delay=None,
        positive=None,
    )


def read_input(path: Path, *, keep_text: list[str] | None = None) -> pl.DataFrame:
    """Read a ``.csv`` or ``.parquet`` file; CSV columns in ``keep_text`` are read as strings."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise IngestError(
            f"unsupported file type {suffix or '(none)'!r} of {str(path)!r}; use .csv or .parquet"
        )
    if not path.is_file():
        raise IngestError(f"no such file: {str(path)!r}")
    try:
        if suffix != ".csv":
            return pl.read_parquet(path)
        header = pl.read_csv(path, n_rows=0).columns
        text = {c: pl.String for c in keep_text or [] if c in header}
        return pl.read_csv(
            path, schema_overrides=text, infer_schema_length=None, null_values=_CSV_NULLS
        )
    except (pl.exceptions.PolarsError, OSError, ValueError) as ex:
        first = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
        raise IngestError(f"cannot read {str(path)!r}: {first}") from ex


# --------------------------------------------------------------------------- validation


def _ingest(
    lake: str | os.PathLike[str],
    frame: pl.DataFrame,
    *,
    source: str,
    progress: Progress | None,
    fingerprint: str,
    started: float,
    extra: Mapping[str, pl.DataFrame] | None = None,
    **columns: Any,
) -> IngestReport:
    if not source:
        raise IngestError(f"source must be a non-empty name, got {source!r}")
    events, labels = prepare(frame, **columns)
    tables = {"events": events, "labels": labels, **(extra or {})}
    return _write(
        lake, tables, source=source, fingerprint=fingerprint, progress=progress, started=started
    )


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
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The ``events`` (without ``offset``) and ``labels`` frames of a validated input.

    Checks only the input itself; :func:`ingest_frame` also checks it against the lake.
    """
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

    event_id = _event_ids(frame.get_column(id_col))
    event_time = _times(frame.get_column(time_col), what="event time")
    if key_col is None:
        key = pl.Series("key", ["all"] * frame.height, dtype=pl.String)
    else:
        key = _text(frame.get_column(key_col), what="key")
    label = _labels(frame.get_column(label_col), positive=positive)
    labelled = label.is_not_null()
    labelled_rows = labelled.arg_true()
    if label_time_col is not None:
        raw = frame.get_column(label_time_col)
        _fail_rows(
            labelled & raw.is_null(), f"labels without a label time in column {label_time_col!r}"
        )
        label_time = _times(raw.filter(labelled), what="label time", rows=labelled_rows)
    else:
        delay = timedelta(microseconds=round((label_delay or 0) * 1_000_000))
        label_time = event_time.filter(labelled) + delay
    _fail_rows(
        label_time < event_time.filter(labelled),
        "label_time is before event_time",
        rows=labelled_rows,
    )

    payload = [c for c in frame.columns if c not in given.values()]
    clash = [c for c in payload if c in _RESERVED]
    if clash:
        raise IngestError(
            f"payload column(s) {clash} would overwrite the lake's own columns; rename them"
        )
    events = pl.DataFrame(
        [event_id.alias("event_id"), event_time.alias("event_time"), key.alias("key")]
    )
    events = events.hstack([_payload_column(frame.get_column(c)) for c in payload])
    labels = pl.DataFrame(
        {
            "event_id": event_id.filter(labelled),
            "label": label.filter(labelled),
            "label_time": label_time,
        }
    )
    return events, labels


def _fail_rows(bad: pl.Series, message: str, *, rows: pl.Series | None = None) -> None:
    """Raise :class:`IngestError` naming the rows where ``bad`` is true.

    ``rows`` maps positions in ``bad`` to input row numbers when ``bad`` covers a subset.
    """
    bad = bad.fill_null(False)
    n = int(bad.sum())
    if not n:
        return
    where = bad.arg_true().head(10)
    if rows is not None:
        where = rows.gather(where)
    raise IngestError(message, rows=where.to_list(), n_rows=n)


def _event_ids(col: pl.Series) -> pl.Series:
    dtype = col.dtype
    if dtype.is_float():
        raise IngestError(
            f"id column {col.name!r} holds floats ({dtype}); ids must be strings or integers"
        )
    ids = _text(col, what="id")
    _fail_rows(ids.str.strip_chars() == "", f"empty ids in column {col.name!r}")
    dup = ids.is_duplicated()
    if dup.any():
        first = ids.filter(dup).head(1).item()
        _fail_rows(dup, f"duplicate ids in column {col.name!r} (e.g. {first!r})")
    return ids


def _text(col: pl.Series, *, what: str) -> pl.Series:
    """``col`` as strings (integers in decimal); null values are an error naming rows."""
    dtype = col.dtype
    if not (
        dtype == pl.String or dtype.is_integer() or isinstance(dtype, pl.Categorical | pl.Enum)
    ):
        raise IngestError(
            f"{what} column {col.name!r} has type {dtype}; expected strings or integers"
        )
    _fail_rows(col.is_null(), f"missing {what}s in column {col.name!r}")
    return col.cast(pl.String)


def _times(col: pl.Series, *, what: str, rows: pl.Series | None = None) -> pl.Series:
    """``col`` as ``Datetime[us, UTC]``; missing or unparsable values raise naming rows."""
    parsed = parse_times(col)
    bad = parsed.is_null()
    if bad.any():
        raw = col.filter(bad & col.is_not_null()).head(1)
        example = f" (e.g. {raw.item()!r})" if raw.len() else ""
        _fail_rows(
            bad,
            f"missing or unparsable {what}s in column {col.name!r}{example}; expected "
            "ISO 8601 strings, datetimes or epoch seconds",
            rows=rows,
        )
    return parsed


def parse_times(col: pl.Series) -> pl.Series:
    """``col`` as ``Datetime[us, UTC]``, null where missing or unparsable.

    Naive datetimes and naive ISO strings are taken as UTC; numbers are epoch seconds.

    >>> parse_times(pl.Series(["2024-01-01T02:00:00+02:00", "2024-01-01", "nope"])).to_list()
    [datetime.datetime(2024, 1, 1, 0, 0, tzinfo=zoneinfo.ZoneInfo(key='UTC')), \
datetime.datetime(2024, 1, 1, 0, 0, tzinfo=zoneinfo.ZoneInfo(key='UTC')), None]
    >>> parse_times(pl.Series([1.5])).dt.epoch("us").to_list()
    [1500000]
    """
    dtype = col.dtype
    if isinstance(dtype, pl.Datetime):
        out = (
            col.dt.replace_time_zone("UTC")
            if dtype.time_zone is None
            else col.dt.convert_time_zone("UTC")
        )
        return out.dt.cast_time_unit("us")
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if dtype.is_integer() or dtype.is_float():
        seconds = pl.col("t").cast(pl.Float64)
        ok = seconds.is_finite() & (seconds >= _MIN_S) & (seconds <= _MAX_S)
        exact = pl.col("t").cast(pl.Int64) * 1_000_000
        us = exact if dtype.is_integer() else (seconds * 1_000_000).round().cast(pl.Int64)
        frame = pl.DataFrame({"t": col})
        return frame.select(pl.when(ok).then(us).cast(_UTC_US).alias(col.name)).to_series()
    if dtype == pl.String:
        unique = col.drop_nulls().unique()
        parsed = pl.Series([_iso_us(s) for s in unique.to_list()], dtype=pl.Int64)
        us = col.replace_strict(unique, parsed, default=None, return_dtype=pl.Int64)
        return us.cast(_UTC_US)
    raise IngestError(
        f"time column {col.name!r} has type {dtype}; expected ISO 8601 strings, "
        "datetimes or epoch seconds"
    )


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
        ok = math.isfinite(seconds) and _MIN_S <= seconds <= _MAX_S
        return round(seconds * 1_000_000) if ok else None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // _ONE_US


def _labels(col: pl.Series, *, positive: str | None) -> pl.Series:
    """0/1 labels (``Int64``; null where the input has none)."""
    dtype = col.dtype
    if dtype == pl.Boolean:
        if positive is not None and str(positive).lower() not in ("true", "1"):
            raise IngestError(
                f"positive={positive!r} does not fit boolean labels in column {col.name!r}"
            )
        return col.cast(pl.Int64)
    if dtype.is_integer() or dtype.is_float():
        if positive is not None and str(positive) not in ("1", "1.0"):
            raise IngestError(
                f"positive={positive!r} does not fit 0/1 labels in column {col.name!r}"
            )
        bad = col.is_not_null() & ~col.cast(pl.Float64).is_in([0.0, 1.0])
        _fail_rows(bad, f"labels in column {col.name!r} must be 0 or 1")
        return col.cast(pl.Int64)
    if dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum):
        col = col.cast(pl.String)
        values = sorted(col.drop_nulls().unique().to_list())
        shown = ", ".join(repr(v) for v in values[:10]) + (" ..." if len(values) > 10 else "")
        if len(values) > 2:
            raise IngestError(
                f"label column {col.name!r} has {len(values)} distinct values ({shown}); "
                "expected two"
            )
        if positive is None:
            raise IngestError(
                f"label column {col.name!r} holds strings ({shown}); "
                "say which one is the positive class (positive=... / --positive)"
            )
        if len(values) == 2 and positive not in values:
            raise IngestError(
                f"positive={positive!r} is not one of the labels in column {col.name!r} ({shown})"
            )
        return (col == positive).cast(pl.Int64)
    raise IngestError(
        f"label column {col.name!r} has type {dtype}; expected booleans, 0/1 or two strings"
    )


def _payload_column(col: pl.Series) -> pl.Series:
    """A payload column in a type Delta stores (no unsigned integers, no categoricals)."""
    dtype = col.dtype
    if dtype in (pl.UInt8, pl.UInt16, pl.UInt32):
        return col.cast(pl.Int64)
    if dtype == pl.UInt64:
        try:
            return col.cast(pl.Int64, strict=True)
        except pl.exceptions.InvalidOperationError as ex:
            raise IngestError(f"payload column {col.name!r}: UInt64 values beyond Int64") from ex
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return col.cast(pl.String)
    if dtype == pl.Object or isinstance(dtype, pl.Duration | pl.Time):
        raise IngestError(
            f"payload column {col.name!r} has type {dtype}, which Delta tables cannot store; "
            "convert it first (e.g. durations to seconds, times of day to strings)"
        )
    return col


# --------------------------------------------------------------------------- writing


def _fingerprint(tables: Mapping[str, pl.DataFrame], extra: str) -> str:
    digest = hashlib.sha256(f"chunk={CHUNK_ROWS};{extra}".encode())
    for name in sorted(tables):
        digest.update(name.encode())
        buf = tables[name].rechunk().write_ipc(None, compression="uncompressed")
        digest.update(buf.getvalue())
    return digest.hexdigest()[:16]


def _check_against_lake(
    lake: str | os.PathLike[str], events: pl.DataFrame, *, first_row: int
) -> pl.DataFrame:
    """Reject ids already in the lake; cast payload columns to the lake's types."""
    if not exists(lake, "events"):
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
        bad = pending.is_in(seen.implode())
        _fail_rows(
            bad,
            f"ids already in the lake's events table (e.g. {seen[0]!r})",
            rows=pl.int_range(first_row, events.height, eager=True),
        )
    schema = pl.scan_delta(uri).collect_schema()
    casts = []
    for name, dtype in events.schema.items():
        have = schema.get(name)
        if name in _RESERVED or have is None or have == dtype:
            continue
        try:
            casts.append(events.get_column(name).cast(have, strict=True))
        except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as ex:
            raise IngestError(
                f"payload column {name!r} is {dtype} but the lake's events have {have}"
            ) from ex
    return events.with_columns(casts) if casts else events


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


def _write(
    lake: str | os.PathLike[str],
    tables: dict[str, pl.DataFrame],
    *,
    source: str,
    fingerprint: str,
    progress: Progress | None,
    started: float,
) -> IngestReport:
    writer_id = f"ingest/{source}/{_fingerprint(tables, fingerprint)}"
    writers = {name: TableWriter(lake, name, writer_id=writer_id) for name in tables}
    chunks = {name: math.ceil(frame.height / CHUNK_ROWS) for name, frame in tables.items()}
    done = {name: min(writers[name].committed_position or 0, chunks[name]) for name in tables}

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
        )

    if all(done[name] >= chunks[name] for name in tables):
        return report(True)
    events = _check_against_lake(lake, tables["events"], first_row=done["events"] * CHUNK_ROWS)
    base = _resumed_offset(lake, events) if done["events"] else _first_offset(lake)
    tables["events"] = events.with_columns(
        (pl.int_range(0, events.height, dtype=pl.Int64) + base).alias("offset")
    )
    total = sum(frame.height for frame in tables.values())
    written = sum(min(done[n] * CHUNK_ROWS, tables[n].height) for n in tables)
    for name, frame in tables.items():
        for i in range(done[name], chunks[name]):
            chunk = frame.slice(i * CHUNK_ROWS, CHUNK_ROWS)
            writers[name].append(chunk, position=i + 1)
            written += chunk.height
            if progress is not None:
                progress(written, total)
    return report(False)
