"""Exceptions raised by the lake. Messages name the table and, where it applies, the column."""

from __future__ import annotations


class LakeError(Exception):
    """Base class of every error raised by :mod:`lake`."""


class TableNotFoundError(LakeError):
    """A table was read before anything was written to it."""

    def __init__(self, table: str, uri: str) -> None:
        hint = {"labels": "no label has been ingested yet",
                "predictions": "run a replay (`python -m dataflows.online`) first",
                "checkpoints": "run a replay (`python -m dataflows.online`) first"}.get(
            table, "run `python -m lake ingest` first")
        super().__init__(f"table {table!r} does not exist at {uri!r}; {hint}")
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
    handful, so the message stays readable on large files; ``n_rows`` counts them all.
    ``ids`` (shown after the rows) are the event ids of those rows, where the id is not
    itself the problem. ``problems`` holds one error per kind of bad row when an input
    had several at once (the message then has one line for each).
    """

    SHOWN_ROWS = 10
    SHOWN_IDS = 5

    def __init__(self, message: str, *, rows: list[int] | None = None, n_rows: int | None = None,
                 ids: list[str | None] | None = None, problems: list[IngestError] | None = None) -> None:
        self.rows = list(rows or [])
        self.n_rows = n_rows if n_rows is not None else len(self.rows)
        self.ids = list(ids or [])
        self.problems = list(problems or [])
        if self.rows and not self.problems:
            shown = ", ".join(str(r) for r in self.rows[: self.SHOWN_ROWS])
            more = f" (and {self.n_rows - self.SHOWN_ROWS} more)" if self.n_rows > self.SHOWN_ROWS else ""
            message = f"{message}: rows {shown}{more}"
            if self.ids:
                listed = ", ".join("no id" if i is None else repr(_clip(i)) for i in self.ids[: self.SHOWN_IDS])
                etc = ", ..." if len(self.ids) > self.SHOWN_IDS or self.n_rows > len(self.ids) else ""
                message = f"{message} (ids {listed}{etc})"
        super().__init__(message)


class WriterFencedError(LakeError):
    """Another writer committed under this writer's id: two processes run with one identity.

    Raised at commit time instead of writing a second copy of the rows; the writer
    that sees it must stop (its process is not the only owner of the writer id).
    """

    def __init__(self, table: str, writer_id: str, *, expected: int | None, found: int | None) -> None:
        super().__init__(
            f"table {table!r}: writer {writer_id!r} is also committing from another process "
            f"(committed position is {found!r}, this writer last saw {expected!r}); "
            "stopping instead of writing twice: run one process per run id")
        self.table = table
        self.writer_id = writer_id
        self.expected = expected
        self.found = found


class WriterStoppedError(LakeError):
    """An earlier commit of this writer failed: it commits nothing more, since a later commit would pass the
    failed rows' positions and a restart would then skip those rows for good."""

    def __init__(self, table: str, writer_id: str, *, cause: str) -> None:
        super().__init__(f"table {table!r}: writer {writer_id!r} stopped after a failed commit ({cause}); "
                         "restart the run to resume from its last committed position")
        self.table = table
        self.writer_id = writer_id


class RunLockedError(LakeError):
    """Another process on this machine is running the same run id with recovery (one recovery folder each)."""

    def __init__(self, run_id: str, lock: str) -> None:
        super().__init__(f"run {run_id!r} is already running in another process on this machine (it holds {lock}); "
                         "wait for it to end or stop it, then rerun to resume")
        self.run_id = run_id
        self.lock = lock


class RunIdentityError(LakeError):
    """A run id is already recorded in the lake's ``runs`` table with other inputs or settings."""

    def __init__(self, run_id: str, differences: list[str], *, lake: str) -> None:
        shown = "; ".join(differences[:6]) + (f"; and {len(differences) - 6} more" if len(differences) > 6 else "")
        super().__init__(
            f"run {run_id!r} is recorded in {lake}/runs with other inputs or settings "
            f"(recorded -> now: {shown}); start it with the recorded ones to resume, or use a new run id")
        self.run_id = run_id
        self.differences = differences


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class UsageError(LakeError, ValueError):
    """A user mistake caught before any work: a bad setting, an empty window, nothing to work on.

    Also a :class:`ValueError`, so callers that check settings with ``except ValueError`` keep
    working. Command lines (:func:`lake.entry.run_main`) show it as one line and exit with status 2.
    """
