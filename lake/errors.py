"""Exceptions raised by the lake. Messages name the table and, where it applies, the column."""

from __future__ import annotations


class LakeError(Exception):
    """Base class of every error raised by :mod:`lake`."""


class TableNotFoundError(LakeError):
    """A table was read before anything was written to it."""

    def __init__(self, table: str, uri: str) -> None:
        super().__init__(f"table {table!r} does not exist at {uri!r}; run `python -m lake ingest` first")
        self.table = table
        self.uri = uri


class SchemaError(LakeError):
    """Data does not fit a table's schema."""

    def __init__(self, table: str, message: str, *, column: str | None = None) -> None:
        where = f"{table}.{column}" if column else table
        super().__init__(f"{where}: {message}")
        self.table = table
        self.column = column


class IngestError(LakeError):
    """Input handed to ``python -m lake ingest`` cannot be written as it is.

    ``rows`` holds the (0-based) row numbers of the input that caused it, at most a
    handful, so the message stays readable on large files.
    """

    def __init__(self, message: str, *, rows: list[int] | None = None, n_rows: int | None = None) -> None:
        self.rows = list(rows or [])
        self.n_rows = n_rows if n_rows is not None else len(self.rows)
        if self.rows:
            shown = ", ".join(str(r) for r in self.rows[:10])
            more = f" (and {self.n_rows - 10} more)" if self.n_rows > 10 else ""
            message = f"{message}: rows {shown}{more}"
        super().__init__(message)


class UsageError(LakeError, ValueError):
    """A user mistake caught before any work: a bad setting, an empty window, nothing to work on.

    Also a :class:`ValueError`, so callers that check settings with ``except ValueError`` keep
    working. Command lines (:func:`lake.entry.run_main`) show it as one line and exit with status 2.
    """
