"""The predictions topic's messages: the champion's rows of a step's ``predictions``, each value ``json.dumps``
of its served row (event time in ISO 8601), byte for byte what consumers of the topic have always read.

A binary step's rows (the live path: the item path's lists, the columnar step's Arrow columns) are written
straight from the step's columns, without a dict per row; anything else goes through ``json.dumps``.
Split from :mod:`dataflows.kafka`, whose predictions sink sends them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from dataflows import rows
from lake.schemas import UTC_TS

_SERVED = ("event_id", "event_time", "key", "model", "model_version", "score", "prediction")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _served(preds: pa.Table | rows.StepRows) -> list[dict[str, Any]]:
    """The champion's rows of a step's ``predictions`` as the topic's messages (event time in ISO 8601)."""
    cols = [*_SERVED, "role"]
    if isinstance(preds, rows.StepRows):  # (a binary step's rows, read without building Arrow)
        return [{"event_id": event_id, "event_time": _iso(t), "key": key, "model": model,
                 "model_version": version, "score": score, "prediction": prediction}
                for event_id, t, key, model, version, score, prediction, role
                in zip(*(preds.pylist(c) for c in cols), strict=True) if role == "champion"]
    cols += ["probabilities"] if "probabilities" in preds.column_names else []  # (multiclass)
    served = []
    for row in preds.select(cols).to_pylist():
        if row.pop("role") != "champion":
            continue
        row["event_time"] = _iso(row["event_time"])
        if "probabilities" in row:  # a map column reads as (class, probability) pairs
            row["probabilities"] = dict(row["probabilities"])
        served.append(row)
    return served


def messages(preds: pa.Table | rows.StepRows) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of the topic's messages for a step's ``predictions``: each value is
    ``json.dumps`` of its :func:`_served` row, byte for byte. A binary step's rows (the live path,
    a few events a step) are written straight from the step's lists, without a dict per row."""
    if isinstance(preds, rows.StepRows) and preds.table == "predictions":
        fast = _step_messages(preds)
        if fast is not None:
            return fast
    return [(row["key"].encode(), json.dumps(row).encode()) for row in _served(preds)]


def _message(event_id: str, t: int, key: str, model_part: str, version: str, score: float, prediction: str) -> bytes:
    """A served row as ``json.dumps`` writes it (its keys in :data:`_SERVED`'s order)."""
    return (f'{{"event_id": {_str(event_id)}, "event_time": "{_iso(t)}", "key": {_str(key)}'
            f'{model_part}{_str(version)}, "score": {_float(score)}, "prediction": {prediction}}}').encode()


def _step_messages(preds: rows.StepRows) -> list[tuple[bytes, bytes]] | None:
    """:func:`messages` of a binary step's rows, or ``None`` where a value is not of the usual type
    (then :func:`messages` goes through ``json.dumps``, which writes anything as it always did)."""
    champions = [i for i, (_, role) in enumerate(preds.models) if role == "champion"]
    n = preds.n
    if not n or not champions:
        return []
    cols = preds.columns
    ids, times, keys = _listed(cols["event_id"], pa.string()), _listed(cols["event_time"], UTC_TS), \
        _listed(cols["key"], pa.string())
    if ids is None or times is None or keys is None:
        return None
    out: list[tuple[bytes, bytes]] = []
    threshold = preds.threshold
    all_versions = preds.pylist("model_version")  # (model by model)
    for i in champions:
        model, scores = preds.models[i][0], cols["score"][i]
        versions = all_versions[i * n:(i + 1) * n]
        if (type(model) is not str or threshold is None or
                not all(type(v) is str for v in versions)):
            return None
        model_part = f', "model": {_str(model)}, "model_version": '
        for event_id, t, key, version, s in zip(ids, times, keys, versions, scores, strict=True):
            if type(event_id) is not str or type(key) is not str or type(t) is not int:
                return None
            out.append((key.encode(), _message(event_id, t, key, model_part, version, float(s),
                                               "1" if s >= threshold else "0")))
    return out


def _listed(column: Any, type_: pa.DataType) -> list | None:
    """A step's column as a list (an item step's list as it is; a columnar step's Arrow array of ``type_``
    and no nulls as Python values, times as microseconds), or ``None`` for any other."""
    if type(column) is list:
        return column
    if not isinstance(column, pa.Array) or column.type != type_ or column.null_count:
        return None
    return (column.cast(pa.int64()) if type_ == UTC_TS else column).to_pylist()


_str = json.encoder.encode_basestring_ascii  # (what json.dumps writes a str as, quotes included)


def _float(x: float) -> str:
    """A float as json.dumps writes it (``NaN`` and ``Infinity`` as JavaScript spells them)."""
    if x != x:
        return "NaN"
    if x in (_INF, -_INF):
        return "Infinity" if x > 0 else "-Infinity"
    return float.__repr__(x)


_INF = float("inf")


def _iso(t: datetime | int) -> str:
    """An event time (a datetime, or microseconds where the step's rows are not Arrow yet) in ISO 8601, UTC."""
    if isinstance(t, datetime):
        return t.astimezone(UTC).isoformat()
    return (_EPOCH + timedelta(microseconds=int(t))).isoformat()  # (_EPOCH is UTC)
