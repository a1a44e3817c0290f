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
from dataclasses import dataclass
from typing import Any

import numpy as np

EVENT = 0
LABEL = 1

Item = tuple


class Batch:
    """A run of items of one shard, in ``seq`` order.

    A source that holds its items as columns (the replay) passes ``columns`` (an object
    with an ``items()`` method) instead of ``items``: the columnar path of the learner
    reads the columns, and ``items`` is built from them only when a step asks for it.
    """

    __slots__ = ("shard", "_items", "source", "dead", "suspects", "columns")

    def __init__(self, shard: int, items: list[Item] | None = None, source: str = "replay",
                 dead: list[tuple] | None = None, suspects: set[int] | None = None, columns: Any = None) -> None:
        if items is None and columns is None:
            items = []
        self.shard = shard
        self._items = items
        self.source = source
        # Dead-letter rows (schema order without run_id/shard) added by validation.
        self.dead = [] if dead is None else dead
        # seqs of the items validation must check; None: check every item.
        self.suspects = suspects
        self.columns = columns

    @property
    def items(self) -> list[Item]:
        if self._items is None:
            self._items = self.columns.items()
        return self._items

    @items.setter
    def items(self, value: list[Item]) -> None:
        self._items = value

    @property
    def materialized(self) -> bool:
        """Whether ``items`` exist as tuples (always, unless the batch came as columns and no step asked)."""
        return self._items is not None

    def __len__(self) -> int:
        return len(self._items) if self._items is not None else len(self.columns)

    def __repr__(self) -> str:
        return f"Batch(shard={self.shard}, items={len(self)}, source={self.source!r}, dead={len(self.dead)})"

    def __getstate__(self) -> tuple:
        return self.shard, self._items, self.source, self.dead, self.suspects, self.columns

    def __setstate__(self, state: tuple) -> None:
        self.shard, self._items, self.source, self.dead, self.suspects, self.columns = state


@dataclass(slots=True)
class Output:
    """Rows one step produced for the lake, per table: Arrow tables, or rows not yet Arrow that read like
    one (:data:`dataflows.rows.Lazy`; their ``arrow()`` is the table)."""

    shard: int
    tables: dict[str, Any]


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


class ItemPositions:
    """Where a batch of columns (``kinds``: EVENT/LABEL per item) has its events and its labels, found once:
    the columns of a replay (:class:`dataflows.replay.ReplayColumns`) and of a live batch
    (:class:`dataflows.live_columns.LiveColumns`) share it; they set ``_event_items`` and ``_label_items`` to
    ``None``."""

    __slots__ = ()
    kinds: np.ndarray
    _event_items: np.ndarray | None
    _label_items: np.ndarray | None

    @property
    def event_items(self) -> np.ndarray:
        """Positions (in the batch) of the events, in order."""
        if self._event_items is None:
            self._event_items = np.flatnonzero(self.kinds == EVENT)
        return self._event_items

    @property
    def label_items(self) -> np.ndarray:
        """Positions (in the batch) of the labels, in order."""
        if self._label_items is None:
            self._label_items = np.flatnonzero(self.kinds == LABEL)
        return self._label_items
