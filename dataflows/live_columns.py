"""A live batch as columns: the Kafka source's decoded items, offered to the learner's columnar step.

A replay hands the learner :class:`~dataflows.replay.ReplayColumns` (frames read from Delta); the live
source decodes one message at a time into item tuples. :func:`live_batch` wraps a validated batch of
such items in :class:`LiveColumns`, which offers what the columnar steps read (``kinds``, ``start``,
``events``, ``labels``, ``payload_columns``, ``event_items``, ``label_items``) and gives back the very
items it was built from (``items()``: dead letters, the recorder, the item path, anything that asks).

Only batches whose columns say exactly what their items say are wrapped, so either path gives the
same rows (``tests/test_live_columns.py``): seqs without gaps, every event's payload with the same
fields in the same order, every field's values of one Python type (or null), labels' values integers.
Anything else (a field that appears or goes missing within the batch, strings among numbers in a run
without payload types, a dead letter between two items) stays a batch of items. The frames are built
when a columnar step first reads them (a learner whose settings never take that path pays only the
checks), and a pickled batch carries the items alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from dataflows.items import EVENT, LABEL, Batch, ItemPositions

MIN_COLUMNS_ITEMS = 48
"""Batches of fewer items stay items: below this the columnar step's fixed cost per batch (building
frames, the compiled step's set-up) is more than the item path spends (BENCHMARKS.md, issue 19)."""

_DTYPES = {float: pl.Float64, int: pl.Int64, bool: pl.Boolean, str: pl.String}
_NONE = type(None)
_FIXED = frozenset({"event_id", "event_time", "key"})


def _dtype(values: list[Any]) -> Any:
    """The polars type that holds ``values`` exactly as they are, or ``None`` where they mix types
    (or are all null: a type the item path would not tell)."""
    kinds = set(map(type, values))
    kinds.discard(_NONE)
    if len(kinds) != 1:
        return None
    return _DTYPES.get(kinds.pop())


def live_batch(batch: Batch, *, min_items: int | None = None) -> Batch:
    """``batch`` as a batch of :class:`LiveColumns` where its items fit columns exactly and it holds at least
    ``min_items`` of them (default :data:`MIN_COLUMNS_ITEMS`); otherwise ``batch`` itself. ``batch`` must be
    validated already (its ``suspects`` empty): what validation took out is in ``batch.dead``, and the columns
    vouch for the rest."""
    items = batch.items
    n = len(items)
    if n < (MIN_COLUMNS_ITEMS if min_items is None else min_items) or items[-1][0] - items[0][0] != n - 1:
        return batch  # (a dead letter between two items: the columnar steps number items start + i)
    cols = LiveColumns.of(items)
    if cols is None:
        return batch
    return Batch(batch.shard, source=batch.source, dead=batch.dead, suspects=set(), columns=cols)


class LiveColumns(ItemPositions):
    """Items of a live batch as columns (see the module docstring); build with :meth:`of`."""

    __slots__ = ("_items", "start", "kinds", "payload_columns", "_dtypes", "_events", "_labels",
                 "_event_items", "_label_items")

    def __init__(self, items: list[tuple], kinds: np.ndarray, payload_columns: list[str],
                 dtypes: list[Any]) -> None:
        self._items = items
        self.start = items[0][0] if items else 0
        self.kinds = kinds
        self.payload_columns = payload_columns
        self._dtypes = dtypes
        self._events: pl.DataFrame | None = None
        self._labels: pl.DataFrame | None = None
        self._event_items: np.ndarray | None = None
        self._label_items: np.ndarray | None = None

    @classmethod
    def of(cls, items: list[tuple]) -> LiveColumns | None:
        """The columns of ``items`` (contiguous seqs), or ``None`` where columns would not say what the items say."""
        kinds = np.fromiter((it[1] for it in items), np.int8, len(items))
        events = [it for it in items if it[1] == EVENT]
        names: tuple[str, ...] = tuple(events[0][5]) if events else ()
        if not _FIXED.isdisjoint(names):
            return None
        for it in events:
            if tuple(it[5]) != names:
                return None
        dtypes = []
        for name in names:
            dtype = _dtype([it[5][name] for it in events])
            if dtype is None:
                return None
            dtypes.append(dtype)
        for it in items:
            if it[1] == LABEL and (type(it[3]) is not int or not (it[5] is None or type(it[5]) is str)):
                return None  # (a bool label: the item path reads True, a column 1; a key not a string)
        return cls(items, kinds, list(names), dtypes)

    def __len__(self) -> int:
        return len(self._items)

    def __getstate__(self) -> list[tuple]:
        return self._items

    def __setstate__(self, items: list[tuple]) -> None:
        built = LiveColumns.of(items)
        for name in self.__slots__:
            setattr(self, name, getattr(built, name))

    def items(self) -> list[tuple]:
        """The items the columns were built from (the same list)."""
        return self._items

    @property
    def events(self) -> pl.DataFrame:
        """``event_id``, ``event_time`` (µs), ``key`` and the payload columns, one row per event in item order."""
        if self._events is None:
            events = [it for it in self._items if it[1] == EVENT]
            data = {"event_id": pl.Series([it[2] for it in events], dtype=pl.String),
                    "event_time": pl.Series([it[3] for it in events], dtype=pl.Int64),
                    "key": pl.Series([it[4] for it in events], dtype=pl.String)}
            for name, dtype in zip(self.payload_columns, self._dtypes, strict=True):
                data[name] = pl.Series(name, [it[5][name] for it in events], dtype=dtype, strict=True)
            self._events = pl.DataFrame(data)
        return self._events

    @property
    def labels(self) -> pl.DataFrame:
        """``event_id``, ``label``, ``label_time`` (µs) and ``key``, one row per label in item order."""
        if self._labels is None:
            labels = [it for it in self._items if it[1] == LABEL]
            self._labels = pl.DataFrame({
                "event_id": pl.Series([it[2] for it in labels], dtype=pl.String),
                "label": pl.Series([it[3] for it in labels], dtype=pl.Int64),
                "label_time": pl.Series([it[4] for it in labels], dtype=pl.Int64),
                "key": pl.Series([it[5] for it in labels], dtype=pl.String)})
        return self._labels

