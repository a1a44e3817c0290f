"""Column names taken literally, whatever they look like.

Payload columns carry names chosen by whoever wrote the input (a CSV header, a
Kafka message's keys). polars reads some names as patterns: ``pl.col("^x$")``,
``frame.select("^x$")``, ``frame.drop("^x$")`` and ``pl.read_delta(columns=["^x$"])``
are the regular expression ``^x$`` (the column ``x``), and ``pl.col("*")`` is
every column. Even a :class:`polars.Series` named ``^x$`` fails in methods that
polars runs as expressions on its name (``fill_nan``, ``is_infinite``, ...).

Wherever a name may come from data, use these helpers instead of strings:
:func:`col` and :func:`cols` select exactly the named columns, :func:`select`
takes them from a frame in the given order, and :func:`plain` gives a series a
neutral name for its computations.

>>> frame = pl.DataFrame({"^x$": [1.0], "x": [2.0], "*": [3.0]})
>>> select(frame, ["^x$", "*"]).columns
['^x$', '*']
>>> frame.select((col("^x$") * 10).alias("y")).item()
10.0
>>> is_pattern("^x$"), is_pattern("*"), is_pattern("x$")
(True, True, False)
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl
import polars.selectors as cs

PLAIN = "value"
"""The name :func:`plain` gives a series."""


def is_pattern(name: str) -> bool:
    """Whether polars would read ``name`` as more than one literal column name."""
    return name == "*" or (name.startswith("^") and name.endswith("$"))


def col(name: str) -> pl.Expr:
    """The column named exactly ``name`` (an error if the frame has none)."""
    return cs.by_name(name).as_expr() if is_pattern(name) else pl.col(name)


def cols(names: Iterable[str]) -> pl.Expr:
    """The columns named exactly ``names``, in that order."""
    return cs.by_name(list(names)).as_expr()


def select(frame: pl.DataFrame | pl.LazyFrame, names: Iterable[str]):
    """``frame`` reduced to the columns named exactly ``names``, in that order."""
    return frame.select(cs.by_name(list(names)))


def plain(series: pl.Series) -> pl.Series:
    """``series`` renamed to :data:`PLAIN`, safe for any method; ``.alias(name)`` it back."""
    return series.alias(PLAIN)
