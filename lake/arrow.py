"""Building Arrow tables from the rows Python code produces."""

from __future__ import annotations

from itertools import chain

import numpy as np
import pyarrow as pa

from lake.schemas import FEATURES, schema_of


def features_array(dicts: list[dict[str, float]], type_: pa.DataType = FEATURES) -> pa.Array:
    """Map array of feature dicts, one per row (the flattening runs at C speed).

    >>> features_array([{"a": 1.0}, {}, {"b": 2.0, "c": 3.0}]).to_pylist()
    [[('a', 1.0)], [], [('b', 2.0), ('c', 3.0)]]
    """
    n = len(dicts)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.fromiter(map(len, dicts), np.int32, n), out=offsets[1:])
    keys = pa.array(list(chain.from_iterable(dicts)), pa.string())
    values = pa.array(list(chain.from_iterable(map(dict.values, dicts))), pa.float64())
    return pa.MapArray.from_arrays(pa.array(offsets), keys, values, type=type_)


def rows_to_arrow(table: str, rows: list[tuple]) -> pa.Table:
    """Arrow table of ``rows`` (tuples in ``table``'s schema order)."""
    schema = schema_of(table)
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    arrays = []
    for field, col in zip(schema, columns, strict=True):
        if pa.types.is_map(field.type):
            arrays.append(features_array(list(col), field.type))
        else:
            arrays.append(pa.array(col, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class LazyTable:
    """Rows kept as their producer handed them over until they are asked for as Arrow.

    ``table``, ``num_rows`` and ``max_seq`` are known at once; :meth:`arrow` builds the table (once,
    by the subclass's ``_build``), and any other attribute is the built table's, so a reader may
    treat the rows as a table.
    """

    __slots__ = ("table", "num_rows", "max_seq", "_arrow")

    def _build(self) -> pa.Table:
        raise NotImplementedError

    def arrow(self) -> pa.Table:
        """The rows as an Arrow table in the table's schema (built on first use)."""
        if self._arrow is None:
            self._arrow = self._build()
        return self._arrow

    @property
    def built(self) -> bool:
        """Whether :meth:`arrow` has built the table already."""
        return self._arrow is not None

    def __len__(self) -> int:
        return self.num_rows

    def __getattr__(self, name: str) -> object:
        if name.startswith("_"):  # (pickle and copy ask before the slots are set)
            raise AttributeError(name)
        return getattr(self.arrow(), name)


class PendingRows(LazyTable):
    """Rows of ``table`` (tuples in schema order) kept as tuples until they are asked for as Arrow.

    A step that closes a few rows at a time hands them over like this; a writer that collects
    many builds them together (:meth:`build_many`, one :func:`rows_to_arrow` for all). ``num_rows``
    and ``max_seq`` are known at once; any other attribute is the built table's.
    """

    __slots__ = ("rows",)

    def __init__(self, table: str, rows: list[tuple]) -> None:
        self.table = table
        self.rows = rows
        self.num_rows = len(rows)
        at = schema_of(table).get_field_index("seq")
        self.max_seq = max(r[at] for r in rows) if rows and at >= 0 else -1
        self._arrow: pa.Table | None = None

    def _build(self) -> pa.Table:
        return rows_to_arrow(self.table, self.rows)

    @staticmethod
    def build_many(parts: list[PendingRows]) -> pa.Table:
        """One table of ``parts`` (of one table) in order."""
        return rows_to_arrow(parts[0].table, list(chain.from_iterable(p.rows for p in parts)))

    def pylist(self, name: str) -> list:
        at = schema_of(self.table).get_field_index(name)
        return [r[at] for r in self.rows] if at >= 0 else self.arrow().column(name).to_pylist()

    def __getstate__(self) -> tuple:
        return self.table, self.rows

    def __setstate__(self, state: tuple) -> None:
        self.__init__(*state)

    def __repr__(self) -> str:
        return f"PendingRows({self.table!r}, rows={self.num_rows})"
