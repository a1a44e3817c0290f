"""Running a ``python -m`` command: a user mistake is one line on stderr and exit status 2.

Every command-line entry point of the project ends with::

    if __name__ == "__main__":
        run_main(main)

and builds its parser with :class:`ArgumentParser`. What counts as a user mistake:
an error of the lake (:class:`lake.errors.LakeError`: a missing table, a bad input,
:class:`lake.errors.UsageError` for a bad setting or an empty window), an argument
the parser refuses, and a :class:`ValueError` raised while the command reads its
settings inside :func:`settings`. Anything else is a bug and keeps its traceback.

>>> ArgumentParser(prog="x").parse_args(["--nope"])
Traceback (most recent call last):
...
lake.errors.UsageError: x: unrecognized arguments: --nope
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from lake.errors import LakeError, UsageError

USAGE_EXIT = 2
"""Exit status of a command stopped by a user mistake (argparse's own)."""

LAKE_ENV = "RIVERLAKE_LAKE"
DEFAULT_LAKE = "lakehouse"


def resolve_lake(lake: str | None = None) -> str:
    """The lake of every command: ``--lake`` when given, else ``$RIVERLAKE_LAKE``, else ``lakehouse``."""
    import os

    return lake or os.environ.get(LAKE_ENV) or DEFAULT_LAKE


_PROG: list[str] = []  # the name the next top-level parser takes (set by the riverlake command: prog_as)


@contextmanager
def prog_as(name: str) -> Iterator[None]:
    """The next :class:`ArgumentParser` made here calls itself ``name`` (``riverlake ingest`` rather than
    ``python -m lake``) in its usage, help and errors; subcommand parsers follow from it."""
    _PROG[:] = [name]
    try:
        yield
    finally:
        _PROG.clear()


class ArgumentParser(argparse.ArgumentParser):
    """:class:`argparse.ArgumentParser` whose errors raise :class:`UsageError` (shown as one line)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if _PROG:
            kwargs["prog"] = _PROG.pop()
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


@contextmanager
def settings() -> Iterator[None]:
    """Turn a ``ValueError`` raised while reading settings into a :class:`UsageError`."""
    try:
        yield
    except UsageError:
        raise
    except ValueError as ex:
        raise UsageError(str(ex)) from ex


def one_line(ex: BaseException) -> str:
    """``error: MESSAGE`` on one line (a multi-line message is joined with ``; ``)."""
    parts = [p.strip() for p in str(ex).splitlines() if p.strip()]
    return "error: " + ("; ".join(parts) or type(ex).__name__)


def run_main(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> NoReturn:
    """Run ``main(argv)`` and exit with its status; a user mistake exits 2 with one line on stderr."""
    try:
        code = main(argv)
    except LakeError as ex:
        print(one_line(ex), file=sys.stderr)
        code = USAGE_EXIT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    raise SystemExit(code or 0)


def require_tables(lake: str, *tables: str) -> None:
    """Raise :class:`~lake.errors.TableNotFoundError` for the first of ``tables`` that ``lake`` lacks:
    a command checks what it reads before it starts a flow, so the mistake is one line."""
    from lake.errors import TableNotFoundError
    from lake.table import exists, table_uri

    for table in tables:
        if not exists(lake, table):
            raise TableNotFoundError(table, table_uri(lake, table))
