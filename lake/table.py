"""Reading and idempotent writing of the lake's Delta tables.

Writers are idempotent: every append carries a Delta *app transaction*
``(writer_id, position)`` in the same commit as its rows, so a batch that is
handed again after a restart (Bytewax recovery is at-least-once) is dropped, and
rows of a partly-written batch are filtered by their ``seq`` column.

Writers are also fenced: a writer id has one owner. Before each commit the writer
re-reads its committed position, and the commit is made against that snapshot, so
Delta refuses it if another commit with the same app id lands in between. When the
position moved under it (a second process writing with the same run id), the writer
raises :class:`~lake.errors.WriterFencedError` instead of writing the rows twice.

>>> import tempfile, polars as pl
>>> lake = tempfile.mkdtemp()
>>> rows = pl.DataFrame({"event_id": ["a"], "label": [1],
...     "label_time": pl.Series([0], dtype=pl.Datetime("us", "UTC"))})
>>> append(lake, "labels", rows, writer_id="doc", position=1)
1
>>> append(lake, "labels", rows, writer_id="doc", position=1)  # replayed: skipped
0
>>> read_table(lake, "labels").height
1
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import ColumnProperties, CommitProperties, DeltaTable, Transaction, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.exceptions import TableNotFoundError as _DeltaTableNotFound
from deltalake.schema import PrimitiveType

from lake.errors import SchemaError, TableNotFoundError, WriterFencedError, WriterStoppedError
from lake.names import select as select_literal
from lake.retry import retrying
from lake.schemas import OPEN_TABLES, schema_of

Version = int | str | datetime


def table_uri(lake: str | os.PathLike[str], table: str) -> str:
    """Location of ``table`` under the lake root (a local path or an object-store URI, see :mod:`lake.storage`).

    >>> table_uri("s3://bucket/lake/", "events")
    's3://bucket/lake/events'
    """
    schema_of(table)  # unknown names fail here, not deep inside deltalake
    root = os.fspath(lake)
    if "://" in root:
        return root.rstrip("/") + "/" + table
    return os.path.join(os.path.abspath(root), table)


def exists(lake: str | os.PathLike[str], table: str) -> bool:
    """Whether ``table`` has been written to."""
    return DeltaTable.is_deltatable(table_uri(lake, table))


def open_table(lake: str | os.PathLike[str], table: str, *, version: Version | None = None,
               storage_options: dict[str, str] | None = None) -> DeltaTable:
    """The :class:`DeltaTable` of ``table``, optionally at a version or a timestamp.

    The one way the project opens a table to read it (:func:`scan_table` and :func:`read_table`
    go through it): a missing table raises :class:`~lake.errors.TableNotFoundError` naming it.
    Object-store credentials come from the environment (:mod:`lake.storage`);
    ``storage_options`` overrides them for this open.
    """
    uri = table_uri(lake, table)
    try:
        dt = DeltaTable(uri, storage_options=storage_options)
    except _DeltaTableNotFound:
        raise TableNotFoundError(table, uri) from None
    if version is not None:
        dt.load_as_version(version)
    return dt


def table_version(lake: str | os.PathLike[str], table: str) -> int | None:
    """Latest committed version of ``table``, ``None`` when it does not exist."""
    if not exists(lake, table):
        return None
    return open_table(lake, table).version()


def scan_table(
    lake: str | os.PathLike[str],
    table: str,
    *,
    version: Version | None = None,
    columns: list[str] | None = None,
    storage_options: dict[str, str] | None = None,
) -> pl.LazyFrame:
    """``table`` as a lazy polars frame (see :func:`open_table`); ``columns`` are taken literally."""
    scan = pl.scan_delta(open_table(lake, table, version=version, storage_options=storage_options))
    return scan if columns is None else select_literal(scan, columns)  # names never read as patterns


def read_table(
    lake: str | os.PathLike[str],
    table: str,
    *,
    version: Version | None = None,
    columns: list[str] | None = None,
    storage_options: dict[str, str] | None = None,
) -> pl.DataFrame:
    """Read ``table`` as a polars frame; ``version`` time-travels by number, timestamp or ISO string."""
    if columns is None:
        return pl.read_delta(open_table(lake, table, version=version, storage_options=storage_options))
    return scan_table(lake, table, version=version, columns=columns, storage_options=storage_options).collect()


def conform(table: str, data: Any, *, schema: pa.Schema | None = None) -> pa.Table:
    """Cast ``data`` (Arrow, polars or pandas) to ``table``'s schema, or raise :class:`SchemaError`.

    Columns come out in schema order; for ``events`` the payload columns follow. ``schema``
    replaces the table's usual one (a task's, :func:`lake.schemas.task_schema`).
    """
    schema = schema_of(table) if schema is None else schema
    if isinstance(data, pl.DataFrame):
        data = data.to_arrow()
    elif not isinstance(data, pa.Table):
        data = pa.table(data)
    names = set(data.column_names)
    for field in schema:  # a nullable column added to a schema later may be left out by older writers
        if field.name not in names and field.nullable:
            data = data.append_column(field, pa.nulls(data.num_rows, field.type))
    missing = [f.name for f in schema if f.name not in names and not f.nullable]
    if missing:
        raise SchemaError(table, f"missing column(s) {missing}", column=missing[0])
    extra = [n for n in data.column_names if n not in schema.names]
    if extra and table not in OPEN_TABLES:
        raise SchemaError(table, f"unexpected column(s) {extra}", column=extra[0])
    arrays, fields = [], []
    for field in schema:
        col = data.column(field.name)
        if col.type != field.type:
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as ex:
                raise SchemaError(table, f"cannot cast {col.type} to {field.type}: {ex}", column=field.name) from ex
        if not field.nullable and col.null_count:
            raise SchemaError(table, f"{col.null_count} null value(s) in a required column", column=field.name)
        arrays.append(col)
        fields.append(field)
    for name in extra:
        col = data.column(name)
        if pa.types.is_null(col.type):  # all-null column of unknown type: store as string
            col = col.cast(pa.string())
        arrays.append(col)
        fields.append(pa.field(name, col.type, nullable=True))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


# Parquet settings of the columns nested in a map, list or struct (``predictions.features``, window statistics,
# drift scores): no dictionary, no statistics. Their leaves are not addressable by name through deltalake
# (a column path is one name), so these are the defaults and every top-level column is named back to the
# Parquet writer's own defaults. Delta keeps no statistics of such leaves for data skipping, and a dictionary
# of float values mostly overflows and is thrown away: both cost CPU at every append and buy nothing. The
# values read back are the same (encoding is not content).
_NESTED = ColumnProperties(statistics_enabled="NONE", dictionary_enabled=False)
_TOP_LEVEL = ColumnProperties(statistics_enabled="PAGE", dictionary_enabled=True)


def writer_properties(columns: Iterable[tuple[str, bool]]) -> WriterProperties | None:
    """Parquet writer settings for a table whose top-level columns are ``(name, nested)``; None if none is nested.

    The one place the lake's Parquet settings come from (appends and compactions): top-level columns keep
    the writer's defaults (dictionary, page statistics, Snappy), columns nested in a map, list or struct are
    written plain without statistics.

    >>> writer_properties([("score", False)]) is None
    True
    >>> props = writer_properties([("score", False), ("features", True)])
    >>> sorted(props.column_properties), props.compression
    (['score'], 'SNAPPY')
    """
    columns = list(columns)
    if not any(nested for _, nested in columns):
        return None
    return WriterProperties(compression="SNAPPY", default_column_properties=_NESTED,
                            column_properties={name: _TOP_LEVEL for name, nested in columns if not nested})


def _arrow_columns(schema: pa.Schema) -> list[tuple[str, bool]]:
    return [(f.name, pa.types.is_nested(f.type)) for f in schema]


def delta_columns(dt: DeltaTable) -> list[tuple[str, bool]]:
    """A Delta table's top-level columns as ``(name, nested)``, for :func:`writer_properties`."""
    return [(f.name, not isinstance(f.type, PrimitiveType)) for f in dt.schema().fields]


class _CreateRaceLost(Exception):
    """Another writer created the table between this writer's look and its commit."""


@dataclass
class CommitStats:
    """What one :meth:`TableWriter.append` did."""

    rows: int
    seconds: float


class TableWriter:
    """Idempotent appender for one table and one writer (e.g. ``run-1/predictions/shard-0``).

    ``position`` must grow with every append of the same writer. A batch whose
    position was already committed is skipped; rows whose ``seq`` is at or
    below the committed position are dropped, the rest are written.

    Every ``compact_every`` appends to the table (if set; counted over all its writers,
    from the table's versions) one writer compacts the table's small files and writes
    a Delta checkpoint, so commit time stays flat on long runs: a commit's CPU grows
    with the table's files. A compaction that loses a race with another writer's is
    skipped, not an error.

    The writer owns its ``writer_id``: if the committed position of that id moves
    other than by this writer's own commits (another process appending with the
    same id), the next append raises :class:`~lake.errors.WriterFencedError` and
    writes nothing.
    """

    def __init__(self, lake: str | os.PathLike[str], table: str, *, writer_id: str,
                 compact_every: int | None = None, schema: pa.Schema | None = None) -> None:
        if not writer_id:
            raise ValueError(f"writer_id must be a non-empty string, got {writer_id!r}")
        if compact_every is not None and compact_every < 1:
            raise ValueError(f"compact_every must be >= 1 or None, got {compact_every!r}")
        self.compact_every = compact_every
        self.schema = schema  # None: the table's usual schema; else e.g. a task's (lake.schemas.task_schema)
        self.compactions = 0
        self.lake = os.fspath(lake)
        self.table = table
        self.writer_id = writer_id
        self.uri = table_uri(lake, table)
        self._dt: DeltaTable | None = None
        self._done: int | None = None
        self._loaded = False
        self._failed: str | None = None
        self.commits = 0
        self.rows_written = 0
        self.commit_seconds = 0.0

    def _load(self) -> None:
        if self._loaded:
            return
        if DeltaTable.is_deltatable(self.uri):
            self._dt = DeltaTable(self.uri)
            self._done = self._dt.transaction_version(self.writer_id)
        self._loaded = True

    @property
    def committed_position(self) -> int | None:
        """Highest position this writer has committed, ``None`` if it never did."""
        self._load()
        return self._done

    def append(self, data: Any, *, position: int, attempts: int = 5) -> int:
        """Append ``data`` in one commit tagged ``(writer_id, position)``; returns rows written.

        A commit that loses a race that Delta cannot resolve (two writers creating the
        table, or merging new columns, at the same moment) is retried on the fresh table;
        a race lost to a commit of this same writer id raises :class:`WriterFencedError`.
        """
        out = append_together([(self, data, position)], attempts=attempts)[0]
        if isinstance(out, Exception):
            raise out
        return out

    def _stop(self, ex: BaseException) -> None:
        # A later commit would pass the failed rows' positions, and a restart would then skip them.
        self._failed = f"{type(ex).__name__}: {ex}"[:200]

    def _prepare(self, data: Any, *, position: int) -> pa.Table | None:
        """``data`` conformed, less the rows this writer already committed; ``None`` if nothing is to commit."""
        if self._failed is not None:
            raise WriterStoppedError(self.table, self.writer_id, cause=self._failed)
        self._load()
        table = conform(self.table, data, schema=self.schema)
        done = self._done
        if done is not None:
            if position <= done and "seq" not in table.column_names:
                return None
            if "seq" in table.column_names:
                lowest = pc.min(table.column("seq")).as_py()
                if lowest is None or lowest <= done:  # only after a restart: copying the rows is not free
                    table = table.filter(pc.greater(table.column("seq"), done))
        if table.num_rows == 0 and (done is not None and position <= done):
            return None
        return table

    def _fenced(self, dt: DeltaTable | None) -> WriterFencedError | None:
        """The error to raise if this writer id's committed position in ``dt`` moved other than by this writer."""
        found = None if dt is None else dt.transaction_version(self.writer_id)
        if found != self._done:
            return WriterFencedError(self.table, self.writer_id, expected=self._done, found=found)
        return None

    def _compact(self) -> None:
        try:
            dt = DeltaTable(self.uri)
            dt.optimize.compact(writer_properties=writer_properties(delta_columns(dt)))
            DeltaTable(self.uri).create_checkpoint()
            self.compactions += 1
        except Exception as ex:  # noqa: BLE001 - e.g. a concurrent compaction won; the data is safe
            logging.getLogger(__name__).warning("%s: compaction skipped: %s", self.table, ex)
        self._dt = DeltaTable(self.uri)


class _Fenced(Exception):
    """Writers of a combined commit whose ids were committed by someone else (see :func:`append_together`)."""

    def __init__(self, errors: dict[str, WriterFencedError]) -> None:
        super().__init__("; ".join(str(e) for e in errors.values()))
        self.errors = errors


def append_together(entries: Sequence[tuple[TableWriter, Any, int]], *, attempts: int = 5) -> list[int | Exception]:
    """Append several writers' rows of one table in ONE Delta commit; per entry, the rows written or its error.

    ``entries`` are ``(writer, data, position)`` of distinct writer ids of the same table. The commit carries
    every writer's app transaction ``(writer_id, position)``, so each writer keeps what :meth:`TableWriter.append`
    gives it alone: a position already committed is skipped, rows at or below it (``seq``) are dropped,
    a create or merge race is retried on the fresh table, and every ``compact_every`` table versions the
    table is compacted. An entry that fails on its own (its writer stopped, rows that do not fit the
    schema) gets its error and the others are committed. Fencing is checked for every writer against the
    snapshot the commit is made on; if any writer's position moved under it, the whole commit is refused:
    that writer gets :class:`WriterFencedError`, the others :class:`WriterStoppedError` naming it, and
    every writer of the commit stops (nothing of it landed, so none may pass its positions). Any other
    failure of the commit is every entry's error, and stops every writer of it.

    >>> import tempfile, polars as pl
    >>> lake = tempfile.mkdtemp()
    >>> def rows(e): return pl.DataFrame({"event_id": [e], "label": [1],
    ...     "label_time": pl.Series([0], dtype=pl.Datetime("us", "UTC"))})
    >>> a, b = (TableWriter(lake, "labels", writer_id=f"doc/labels/shard-{n}") for n in (0, 1))
    >>> append_together([(a, rows("x"), 1), (b, rows("y"), 1)])
    [1, 1]
    >>> append_together([(a, rows("x"), 1), (b, rows("z"), 2)])  # a's position 1 is in already
    [0, 1]
    >>> table_version(lake, "labels"), read_table(lake, "labels").height
    (1, 3)
    """
    if not entries:
        return []
    uri = entries[0][0].uri
    if any(w.uri != uri for w, _, _ in entries):
        raise ValueError(f"append_together commits one table, got {sorted({w.uri for w, _, _ in entries})}")
    ids = [w.writer_id for w, _, _ in entries]
    if len(set(ids)) != len(ids):
        raise ValueError(f"append_together takes one entry per writer id, got {ids}")
    out: list[int | Exception] = [0] * len(entries)
    todo: list[tuple[int, TableWriter, pa.Table, int]] = []
    for i, (writer, data, position) in enumerate(entries):
        try:
            table = writer._prepare(data, position=int(position))
        except WriterStoppedError as ex:
            out[i] = ex
            continue
        except Exception as ex:  # noqa: BLE001 - this entry's own failure (e.g. its schema): its writer stops
            writer._stop(ex)
            out[i] = ex
            continue
        if table is not None:
            todo.append((i, writer, table, int(position)))
    if not todo:
        return out
    writers = [w for _, w, _, _ in todo]
    state = {"dt": next((w._dt for w in writers if w._dt is not None), None)}

    def reread(_: BaseException) -> None:
        state["dt"] = None  # re-read on the next try; what each writer committed stays known

    started = time.perf_counter()
    try:
        written = retrying(lambda: _commit_once(state, todo), on=(CommitFailedError, _CreateRaceLost),
                           attempts=attempts, before_retry=reread)
    except _Fenced as ex:
        cause = f"a combined commit was refused: {', '.join(sorted(ex.errors))} fenced"
        for i, writer, _, _ in todo:
            err = ex.errors.get(writer.writer_id)
            out[i] = err if err is not None else WriterStoppedError(writer.table, writer.writer_id, cause=cause)
            writer._stop(out[i])
        return out
    except Exception as ex:  # noqa: BLE001 - the commit's failure is every entry's
        for i, writer, _, _ in todo:
            writer._stop(ex)
            out[i] = ex
        return out
    lead = writers[0]
    dt = state["dt"]
    if lead.compact_every and dt.version() % (lead.compact_every + 1) == lead.compact_every - 1:
        # Counted in the table's versions, not this writer's commits: the shards of a table (one writer
        # each) would otherwise each wait for compact_every commits of their own, and the table would
        # pile up shards x compact_every files; every append's commit costs CPU in proportion to them.
        # Versions run in periods of compact_every appends and one compaction, so one writer compacts.
        lead._compact()
        dt = lead._dt
    seconds = time.perf_counter() - started
    for (i, writer, _, position), n in zip(todo, written, strict=True):
        writer._dt = dt  # one snapshot for the writers that commit together (on one thread)
        writer._done = position
        writer.commits += 1
        writer.rows_written += n
        writer.commit_seconds += seconds
        out[i] = n
    return out


def _commit_once(state: dict[str, DeltaTable | None], todo: list[tuple[int, TableWriter, pa.Table, int]]) -> list[int]:
    """One try of :func:`append_together`'s commit: fence every writer against a fresh snapshot, then commit."""
    first = todo[0][1]
    dt = state["dt"]
    if dt is None:
        if DeltaTable.is_deltatable(first.uri):
            dt = state["dt"] = DeltaTable(first.uri)
    else:
        dt.update_incremental()
    fenced = {w.writer_id: err for _, w, _, _ in todo if (err := w._fenced(dt)) is not None}
    if fenced:
        raise _Fenced(fenced)
    tables = [t for _, _, t, _ in todo]
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
    # Committed against the snapshot just read: a commit of any of these writer ids in between fails it.
    # A table that did not exist is created only if it still does not ("error" mode, and no
    # silent retry as version 1 when another writer's creation won version 0).
    creating = dt is None
    try:
        write_deltalake(
            first.uri if creating else dt,
            table,
            mode="error" if creating else "append",
            schema_mode="merge",
            writer_properties=writer_properties(_arrow_columns(table.schema)),
            commit_properties=CommitProperties(
                app_transactions=[Transaction(app_id=w.writer_id, version=position) for _, w, _, position in todo],
                max_commit_retries=0 if creating else None,
            ),
        )
    except DeltaError as ex:
        if creating and "already exists" in str(ex):
            raise _CreateRaceLost(str(ex)) from ex
        raise
    if creating:
        state["dt"] = DeltaTable(first.uri)
    return [t.num_rows for t in tables]


def append(
    lake: str | os.PathLike[str],
    table: str,
    data: Any,
    *,
    writer_id: str,
    position: int,
) -> int:
    """One idempotent append; see :class:`TableWriter`. Returns rows written (0 if already committed)."""
    return TableWriter(lake, table, writer_id=writer_id).append(data, position=position)
