"""The Kafka source's payload types: JSON values into the ``events`` table's column types.

**Payload types** (:class:`PayloadTypes`). JSON has numbers, strings, booleans and
null; a Delta column has one type. The rule, applied in the source *before* the
models see an event, so a replay of the lake gives the models exactly the values
the live run gave them:

- a field the ``events`` table already has keeps that column's type: a number
  goes into an integer column only if it is integral (NaN becomes null), into a
  float column as a float; booleans fill bool columns (and count as 0/1 in
  numeric ones); strings fill string columns only;
- a new field takes its type from its first non-null value: any number →
  ``float64`` (JSON does not tell ``3`` from ``3.0`` reliably), boolean → ``bool``,
  string → ``string``; new columns are added with ``schema_mode="merge"``;
- null or absent fields are null in the lake (the featurizer treats both as
  missing);
- anything else (a string in a numeric column, a number in a string column, a
  list or an object) is a wrong-schema message: it goes to ``dead_letters`` with
  the field, the column's type and the value, and the models never see it.

Payload fields are put in the table's column order, so features are summed in
the same order live and in replay. A replay reproduces the live predictions when
each partition's messages arrived in time order (events by ``event_time``, each
label at its ``label_time``; ``python -m dataflows.produce`` sends them so) and keys
were partitioned by CRC-32 (:func:`dataflows.replay.shard_of`, librdkafka's
default for keyed messages): replay with ``shards`` = the topic's partitions.

Split from :mod:`dataflows.kafka`, which re-exports :class:`PayloadTypes`.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import pyarrow as pa

from dataflows.replay import FIXED_EVENT_COLUMNS
from lake.schemas import UTC_TS

# --------------------------------------------------------------------------- payload types

log = logging.getLogger("dataflows.kafka")  # the name users filter on, as before the split

_KINDS = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "str": pa.string()}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SAME = {float: "float", str: "str", bool: "bool"}
"""Value types that a column of the kind named stores unchanged (:func:`_convert` returns the value)."""
_EXACT = 2**1023  # (an int of at most this size converts to float without overflow)


def _kind_of_type(type_: pa.DataType) -> str:
    if pa.types.is_integer(type_):
        return "int"
    if pa.types.is_floating(type_):
        return "float"
    if pa.types.is_boolean(type_):
        return "bool"
    if pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_string_view(type_):
        return "str"
    return "other"


def _kind_of_value(value: Any) -> str | None:
    """The column kind a new field gets from its first non-null value (``None``: not fillable)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "float"
    if isinstance(value, str):
        return "str"
    return None


def _convert(value: Any, kind: str) -> tuple[Any, bool]:
    """``(value as stored in a column of this kind, ok)``."""
    if value is None:
        return None, True
    if kind == "float":
        if isinstance(value, int | float):
            try:
                return float(value), True
            except OverflowError:
                return None, False
        return None, False
    if kind == "int":
        if isinstance(value, bool):
            return int(value), True
        if isinstance(value, int):
            return value, _INT64_MIN <= value <= _INT64_MAX
        if isinstance(value, float):
            if value != value:
                return None, True  # NaN is missing, as the featurizer reads it
            if math.isfinite(value) and value.is_integer() and _INT64_MIN <= value <= _INT64_MAX:
                return int(value), True
        return None, False
    if kind == "bool":
        return value, isinstance(value, bool)
    if kind == "str":
        return value, isinstance(value, str)
    return None, False


class PayloadTypes:
    """The column type of every payload field, and the rule that fits a live payload to it.

    >>> types = PayloadTypes(pa.schema([("n", pa.int64()), ("tag", pa.string())]))
    >>> types.normalize({"score": 3, "n": 2.0, "on": True, "tag": "x"})
    ({'n': 2, 'tag': 'x', 'score': 3.0, 'on': True}, None)
    >>> types.normalize({"tag": 5})[1]
    "field 'tag' must be a string (the lake's events column is string), got 5"
    >>> types.normalize({"n": 2.5})[1]
    "field 'n' must be an integral number (the lake's events column is int64), got 2.5"
    >>> types.arrow_type("score"), list(types.order)
    (DataType(double), ['n', 'tag', 'score', 'on'])
    """

    _NAMES = {"int": "an integral number", "float": "a number", "bool": "a boolean", "str": "a string"}

    def __init__(self, schema: pa.Schema | None = None) -> None:
        self._types: dict[str, pa.DataType] = {}
        self._kinds: dict[str, str] = {}
        self._lock = threading.Lock()  # the recorder's commit thread adopts a schema another writer merged
        self._in_order: tuple[str, ...] = ()
        if schema is not None:
            self.adopt(schema)

    def __getstate__(self) -> dict[str, Any]:  # (a serving snapshot keeps the types learned)
        with self._lock:
            return {"_types": dict(self._types), "_kinds": dict(self._kinds)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock(), _in_order=())

    @property
    def order(self) -> list[str]:
        """Payload columns in table order (new fields after the table's, as they came)."""
        with self._lock:
            return list(self._types)

    def arrow_type(self, name: str) -> pa.DataType:
        with self._lock:
            return self._types[name]

    def adopt(self, schema: pa.Schema) -> None:
        """Take the types of ``schema``'s payload columns (the table's types win)."""
        with self._lock:
            self._adopt(schema)

    def _adopt(self, schema: pa.Schema) -> None:
        for field in schema:
            if field.name in FIXED_EVENT_COLUMNS:
                continue
            self._types[field.name] = field.type
            self._kinds[field.name] = _kind_of_type(field.type)

    def normalize(self, payload: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """``(payload in column order and types, None)``, or ``(None, reason)`` for a wrong-schema payload."""
        with self._lock:
            return self._normalize(payload)

    def _normalize(self, payload: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        known: dict[str, Any] = {}
        new: dict[str, Any] = {}
        new_kinds: dict[str, str] = {}
        kinds = self._kinds
        for name, value in payload.items():
            kind = kinds.get(name)
            if kind is not None:
                vtype = type(value)
                if _SAME.get(vtype) == kind:  # stored as it is (what _convert gives)
                    known[name] = value
                    continue
                if vtype is int and kind == "float" and -_EXACT <= value <= _EXACT:
                    known[name] = float(value)  # (JSON integers in a number column: what _convert gives)
                    continue
            if kind is None:
                if value is None:
                    new[name] = None
                    continue
                kind = _kind_of_value(value)
                if kind is None:
                    return None, (f"field {name!r} must be a number, string, bool or null, "
                                  f"got {type(value).__name__}")
                new_kinds[name] = kind
            converted, ok = _convert(value, kind)
            if not ok:
                if kind == "other":
                    return None, (f"field {name!r}: the lake's events column is {self._types[name]}; "
                                  "live messages fill number, bool and string columns only")
                column = self._types[name] if name in self._types else _KINDS[kind]
                return None, (f"field {name!r} must be {self._NAMES[kind]} (the lake's events column is "
                              f"{column}), got {value!r:.80}")
            (known if name in self._kinds else new)[name] = converted
        for name, kind in new_kinds.items():
            self._kinds[name] = kind
            self._types[name] = _KINDS[kind]
        if not new:
            names = tuple(known)
            if names == self._in_order or list(names) == [n for n in self._types if n in known]:
                self._in_order = names  # (the last field order found to be the table's: most payloads repeat it)
                return known, None
        ordered = {name: known[name] for name in self._types if name in known}
        ordered.update(new)
        return ordered, None

    def column(self, name: str, values: list[Any]) -> pa.Array:
        """An Arrow column of ``name``; values that do not fit its type (a race between writers) become null."""
        with self._lock:
            type_, kind = self._types[name], self._kinds[name]
        try:
            return pa.array(values, type_)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            fitted = [_convert(v, kind) for v in values]
            lost = sum(1 for v, ok in fitted if not ok)
            log.warning("events: %d value(s) of %r do not fit its column type %s; stored as null",
                        lost, name, type_)
            return pa.array([v if ok else None for v, ok in fitted], type_)

    def event_rows(self, items: list[tuple], offsets: list[int], *, order: list[str] | None = None) -> pa.Table:
        """``events`` rows of event items ``(position, EVENT, event_id, time_us, key, payload)``, with their
        lake offsets; payload columns in ``order`` (default: as of now); all-null ones are left out (readers
        see null anyway)."""
        cols: dict[str, pa.Array] = {
            "event_id": pa.array([it[2] for it in items], pa.string()),
            "event_time": pa.array([it[3] for it in items], UTC_TS),
            "key": pa.array([it[4] for it in items], pa.string()),
            "offset": pa.array(offsets, pa.int64()),
        }
        present: set[str] = set()
        for it in items:
            present.update(k for k, v in it[5].items() if v is not None)
        for name in self.order if order is None else order:
            if name in present:
                cols[name] = self.column(name, [it[5].get(name) for it in items])
        return pa.table(cols)
