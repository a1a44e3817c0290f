"""What a logged model shows of its input: a raw-event signature and an input example, from the lake.

The signature names the ``events`` table's columns as a raw event has them (``key`` and
``event_time`` required, ``event_id`` and every payload column optional, with their types);
the input example is one event of the lake, as records (``{"inputs": [...]}`` when served).
The model also takes feature columns (:mod:`flows.mlflow_model`), which no column signature
can name (features appear as the stream brings them), so the signature is marked as one the
model checks itself: MLflow would otherwise drop every column it does not name before
``predict`` sees the input.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import polars as pl
import pyarrow as pa

from lake.table import exists, open_table

_OPTIONAL_FIXED = ("event_id",)
_REQUIRED = ("key", "event_time")
_NOT_INPUT = ("offset",)  # order of arrival in the source: no input of a model


def _mlflow_type(arrow: pa.DataType) -> Any:
    """The MLflow column type of an Arrow type, ``None`` for types a raw event cannot carry as a column."""
    from mlflow.types import DataType

    if pa.types.is_dictionary(arrow):
        arrow = arrow.value_type
    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow) or pa.types.is_string_view(arrow):
        return DataType.string
    if pa.types.is_boolean(arrow):
        return DataType.boolean
    if pa.types.is_integer(arrow):
        return DataType.integer if arrow.bit_width < 32 or arrow == pa.int32() else DataType.long
    if pa.types.is_floating(arrow):
        return DataType.float if arrow == pa.float32() else DataType.double
    if pa.types.is_timestamp(arrow) or pa.types.is_date(arrow):
        return DataType.datetime
    if pa.types.is_binary(arrow) or pa.types.is_large_binary(arrow):
        return DataType.binary
    return None


def raw_event_signature(events_schema: pa.Schema) -> Any:
    """The MLflow signature of a raw event of a lake whose ``events`` table has ``events_schema``."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    order = (*_REQUIRED, *_OPTIONAL_FIXED)
    cols = [ColSpec(kind, f.name, required=f.name in _REQUIRED) for f in events_schema
            if f.name not in _NOT_INPUT and (kind := _mlflow_type(f.type)) is not None]
    cols.sort(key=lambda c: order.index(c.name) if c.name in order else len(order))  # then the payload's order
    signature = ModelSignature(inputs=Schema(cols))
    # The model checks its input itself (raw events or feature columns): MLflow passes it on as given.
    signature._is_signature_from_type_hint = True
    return signature


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):  # MLflow's datetime columns take naive times (UTC here)
        return value.replace(tzinfo=None).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, bytes):
        return None
    return value


def events_schema(lake: str, *, version: int | None = None) -> pa.Schema | None:
    """The ``events`` table's Arrow schema at ``version`` (latest when ``None``); ``None`` without one."""
    if not exists(lake, "events"):
        return None
    return pa.schema(open_table(lake, "events", version=version).schema().to_arrow())  # (via the C schema interface)


def input_example(lake: str, signature: Any, *, event_id: str | None,
                  version: int | None = None) -> list[dict[str, Any]] | None:
    """The raw event ``event_id`` of the lake (else its first), as one record of ``signature``'s columns."""
    if not exists(lake, "events"):
        return None
    scan = pl.scan_delta(open_table(lake, "events", version=version))
    rows = scan.filter(pl.col("event_id") == event_id).head(1).collect() if event_id else None
    if rows is None or rows.height == 0:
        rows = scan.head(1).collect()
    if rows.height == 0:
        return None
    names = set(signature.inputs.input_names())
    record = {k: _json_value(v) for k, v in rows.row(0, named=True).items() if k in names}
    first = [k for k in (*_REQUIRED, *_OPTIONAL_FIXED) if k in record]
    return [{k: record[k] for k in first} | {k: v for k, v in record.items() if k not in first and v is not None}]
