"""Building Arrow tables from the rows Python code produces."""

from __future__ import annotations

import pyarrow as pa

from lake.schemas import FEATURES, schema_of


def features_array(dicts: list[dict[str, float]], type_: pa.DataType = FEATURES) -> pa.Array:
    """Map array of feature dicts; a dict shared by several rows is converted once."""
    index: dict[int, int] = {}
    unique: list[dict[str, float]] = []
    take: list[int] = []
    for d in dicts:
        i = index.get(id(d))
        if i is None:
            i = index[id(d)] = len(unique)
            unique.append(d)
        take.append(i)
    keys: list[str] = []
    values: list[float] = []
    offsets = [0]
    for d in unique:
        keys.extend(d)
        values.extend(d.values())
        offsets.append(len(keys))
    arr = pa.MapArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array(keys, pa.string()), pa.array(values, pa.float64()),
        type=type_,
    )
    if len(unique) == len(dicts):
        return arr
    return arr.take(pa.array(take, pa.int32()))


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
