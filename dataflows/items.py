"""What flows between the steps of a dataflow.

Sources emit :class:`Batch` objects (hundreds to thousands of items each, so
the per-item cost of the engine is paid once per batch). An item is a tuple:

- event: ``(seq, EVENT, event_id, event_time_us, key, payload)``
- label: ``(seq, LABEL, event_id, label, label_time_us, key)``

``seq`` is the item's position in its shard's stream: it orders everything the
item causes in the lake and makes writes idempotent. Times are integer
microseconds since the epoch, UTC. ``key`` of a label is the entity key of its
event when the source knows it (``None`` otherwise).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

EVENT = 0
LABEL = 1

Item = tuple


@dataclass(slots=True)
class Batch:
    """A run of items of one shard, in ``seq`` order."""

    shard: int
    items: list[Item]
    source: str = "replay"
    # Dead-letter rows (schema order without run_id/shard) added by validation.
    dead: list[tuple] = field(default_factory=list)
    # seqs of the items validation must check; None: check every item.
    suspects: set[int] | None = None


@dataclass(slots=True)
class Output:
    """Rows one step produced for the lake, per table, as tuples in schema order."""

    shard: int
    tables: dict[str, list[tuple]]


def _json_default(value: Any) -> Any:
    return repr(value)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def raw_json(value: Any, *, limit: int = 65_536) -> str:
    """The input as JSON for ``dead_letters.raw``; non-finite floats and odd types as strings.

    >>> raw_json({"x": float("nan"), "y": [1, b"z"]})
    '{"x": "nan", "y": [1, "b\\'z\\'"]}'
    """
    text = json.dumps(_clean(value), default=_json_default, ensure_ascii=False)
    if len(text) > limit:
        text = text[:limit] + f"...[truncated {len(text) - limit} chars]"
    return text
