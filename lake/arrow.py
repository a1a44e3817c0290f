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
