"""The replay plan: a pinned Delta version of ``events`` + ``labels`` as one ordered stream.

Events are ordered by ``(event_time, offset)``; each label is placed at its
``label_time``. At equal times events come first, so a label never overtakes
its own event. Every shard's plan is deterministic for the same versions.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

import numpy as np
import polars as pl

from dataflows.defaults import History
from dataflows.guard import MAX_ABS_FEATURE
from dataflows.items import EVENT, LABEL, Batch, ItemPositions
from dataflows.validate import MAX_TIME_US, MIN_TIME_US
from lake import names as lake_names
from lake.schemas import EVENTS
from lake.table import open_table, scan_table

FIXED_EVENT_COLUMNS = tuple(EVENTS.names)


def shard_of(key: str, shards: int) -> int:
    """Stable shard of an entity key (CRC-32, the same in every process).

    >>> shard_of("UA", 1), shard_of("UA", 4)
    (0, 0)
    """
    if shards == 1:
        return 0
    return zlib.crc32(key.encode("utf-8")) % shards


def balanced_shards(counts: dict[str, int], shards: int) -> dict[str, int]:
    """Place keys on shards so the shards hold about as many events each (largest keys first,
    each on the least loaded shard; ties by key, so every process computes the same placement).

    The CRC-32 placement of :func:`shard_of` ignores how many events a key has: on skewed
    keys (flight routes) one shard of 8 can hold 1.5 times its share, and the process holding
    it decides when a replay ends. With per-key models the placement changes no prediction.

    >>> balanced_shards({"a": 10, "b": 6, "c": 5, "d": 1}, 2)
    {'a': 0, 'b': 1, 'c': 1, 'd': 0}
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards!r}")
    load = [0] * shards
    placed: dict[str, int] = {}
    for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        shard = min(range(shards), key=lambda s: (load[s], s))
        placed[key] = shard
        load[shard] += n
    return placed


@dataclass(frozen=True)
class Pin:
    """Delta versions of ``events`` and ``labels`` a replay reads."""

    events: int
    labels: int | None  # None: the lake has no labels table


def pin_versions(lake: str | os.PathLike[str], *, events_version: int | None = None,
                 labels_version: int | None = None) -> Pin:
    """Resolve the versions to replay: the given ones, or the latest."""
    ev = open_table(lake, "events", version=events_version).version()
    try:
        lv = open_table(lake, "labels", version=labels_version).version()
    except Exception:  # noqa: BLE001 - a lake may have events without labels
        if labels_version is not None:
            raise
        lv = None
    return Pin(ev, lv)


class ReplayPlan:
    """One shard's items in replay order, materialised lazily batch by batch."""

    def __init__(self, lake: str | os.PathLike[str], *, pin: Pin, shard: int = 0, shards: int = 1,
                 balance: bool = False) -> None:
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards!r}")
        if not 0 <= shard < shards:
            raise ValueError(f"shard must be in [0, {shards}), got {shard!r}")
        self.shard = shard
        self.shards = shards
        self.pin = pin
        events_table = open_table(lake, "events", version=pin.events)
        if shards > 1:
            # Only this shard's events are read into memory (the key column of all of them
            # first, to find the shard's keys): a process holds its share of the history.
            keys = pl.read_delta(events_table, columns=["key"]).get_column("key")
            if balance:  # by the keys' event counts in this version (the same in every process)
                counts = keys.value_counts()
                placed = balanced_shards(dict(zip(counts["key"].to_list(), counts["count"].to_list(),
                                                  strict=True)), shards)
                mine = [k for k, s in placed.items() if s == shard]
            else:
                mine = [k for k in keys.unique().to_list() if shard_of(k, shards) == shard]
            events = pl.scan_delta(events_table).filter(pl.col("key").is_in(mine)).collect()
        else:
            events = pl.read_delta(events_table)
        events = events.with_columns(pl.col("event_time").dt.epoch("us").alias("event_time"))
        events = events.sort(["event_time", "offset"], maintain_order=True)
        ei = "_ei"  # the events' row index, named apart from every payload column
        while ei in events.columns:
            ei += "_"
        events = events.with_row_index(ei)
        if pin.labels is not None:
            scan = scan_table(lake, "labels", version=pin.labels).with_columns(
                pl.col("label_time").dt.epoch("us").alias("label_time"))
            ours = events.lazy().select("event_id", "key", ei)
            if shards == 1:
                labels = scan.join(ours, on="event_id", how="left", maintain_order="left")
            else:
                labels = scan.join(ours, on="event_id", how="inner", maintain_order="left")
                if shard == 0:
                    # Labels of events unknown to the lake go to shard 0, to be dead-lettered there.
                    known = pl.scan_delta(events_table).select("event_id")
                    orphans = scan.join(known, on="event_id", how="anti", maintain_order="left").with_columns(
                        key=pl.lit(None, pl.String), **{ei: pl.lit(None, pl.UInt32)})
                    labels = pl.concat([labels, orphans])
            labels = labels.collect().sort(["label_time", ei], nulls_last=True, maintain_order=True)
        else:
            labels = pl.DataFrame(
                schema={"event_id": pl.String, "label": pl.Int64, "label_time": pl.Int64,
                        "key": pl.String, ei: pl.UInt32}
            )
        self._kinds = _merge_kinds(events.get_column("event_time"), labels.get_column("label_time"))
        self.payload_columns = [c for c in events.columns if c not in FIXED_EVENT_COLUMNS and c != ei]
        self._events = events
        self._labels = labels
        self._ei = ei
        self._float_columns = [c for c in self.payload_columns if events.schema[c].is_float()]
        self._floats_f64 = all(events.schema[c] == pl.Float64 for c in self._float_columns)
        # Prefix counts let a batch find its contiguous slices of events and labels.
        self._cursor = (0, 0, 0)  # (seq, events consumed, labels consumed)

    def __len__(self) -> int:
        return len(self._kinds)

    def history(self) -> History:
        """What the data-derived defaults look at (:meth:`dataflows.defaults.History.read`), taken from this
        plan instead of reading the tables again: the plan of one shard of one holds every event and every
        label of the pinned versions, each label beside the row of its event."""
        if self.shards != 1:
            raise ValueError(f"the history of the defaults is the whole replay's: this plan holds shard "
                             f"{self.shard} of {self.shards}")
        ev_t = self._events.get_column("event_time").to_numpy()
        if self.pin.labels is None:
            return History(np.sort(ev_t.astype(np.int64)), np.zeros(0, np.int64), np.zeros(0, np.int64))
        at = self._labels.get_column(self._ei)
        if at.null_count():  # labels of events the version does not hold are no label of the history
            own = at.is_not_null()
            at, label_t = at.filter(own), self._labels.get_column("label_time").filter(own)
        else:
            label_t = self._labels.get_column("label_time")
        t = ev_t[at.to_numpy()].astype(np.int64)
        return History(np.sort(ev_t.astype(np.int64)), label_t.to_numpy().astype(np.int64) - t, np.sort(t))

    @property
    def n_events(self) -> int:
        return self._events.height

    @property
    def n_labels(self) -> int:
        return self._labels.height

    def events_before(self, seq: int) -> int:
        """Events among the items ``0 <= seq' < seq`` (the progress of a replay, in events)."""
        s, e, _ = self._cursor
        if s == seq:
            return e
        return self._seek(seq)[0]

    def _seek(self, seq: int) -> tuple[int, int]:
        s, e, lab = self._cursor
        if seq < s:
            s, e, lab = 0, 0, 0
        n_lab = int(self._kinds[s:seq].sum())
        return e + (seq - s) - n_lab, lab + n_lab

    def batch(self, start: int, stop: int) -> Batch:
        """Items ``start <= seq < stop`` as a :class:`Batch` of columns (items built on demand)."""
        stop = min(stop, len(self._kinds))
        e0, l0 = self._seek(start)
        kinds = self._kinds[start:stop]
        n_lab = int(kinds.sum())
        n_ev = kinds.size - n_lab
        ev = self._events.slice(e0, n_ev)
        lb = self._labels.slice(l0, n_lab)
        self._cursor = (stop, e0 + n_ev, l0 + n_lab)
        cols = ReplayColumns(start, kinds.copy(), ev, lb, self.payload_columns)
        # Typed columns vouch for every value but infinities and floats too large for the models
        # (and labels' values and times, checked here as columns): only the items failing a check
        # are checked one by one.
        suspects: set[int] = set()
        if self._float_columns and n_ev:
            if self._floats_f64:  # as arrays: no query per batch
                with np.errstate(invalid="ignore"):  # (nulls and NaN read NaN: never too large)
                    big = np.column_stack([np.abs(ev.get_column(c).to_numpy()) > MAX_ABS_FEATURE
                                           for c in self._float_columns]).any(axis=1)
                at = np.flatnonzero(big)
            else:
                floats = lake_names.cols(self._float_columns)
                at = ev.select(pl.any_horizontal((floats.abs() > MAX_ABS_FEATURE) & floats.is_not_nan())
                               ).to_series().arg_true().to_numpy()
            if at.size:
                suspects.update((cols.event_items[at] + start).tolist())
        if n_lab:
            ids, lab, lt = (lb.get_column(c) for c in ("event_id", "label", "label_time"))
            if ids.null_count() or lab.null_count() or lt.null_count():
                bad = (ids.is_null() | (ids.str.len_bytes() == 0) | ~lab.is_in([0, 1]).fill_null(False)
                       | ~lt.is_between(MIN_TIME_US, MAX_TIME_US, closed="left").fill_null(False)).to_numpy()
            else:  # the usual case, as arrays (a polars expression per check costs more than the checks)
                y, t = lab.to_numpy(), lt.to_numpy()
                bad = (y != 0) & (y != 1) | (t < MIN_TIME_US) | (t >= MAX_TIME_US)
                if (ids.str.len_bytes() == 0).any():
                    bad |= (ids.str.len_bytes() == 0).to_numpy()
            if bad.any():
                suspects.update((cols.label_items[np.flatnonzero(bad)] + start).tolist())
        return Batch(self.shard, columns=cols, suspects=suspects)


def _merge_kinds(event_times: pl.Series, label_times: pl.Series) -> np.ndarray:
    """EVENT/LABEL per item of the plan: the events (sorted by time) and the labels (sorted by time, nulls
    last) merged by time, events first at equal times and each kind in its own order -- what a stable
    sort by ``(time, kind)`` of both gives (polars puts null times first), found by one binary search per
    label instead of sorting the whole plan."""
    n_ev, n_lb = event_times.len(), label_times.len()
    kinds = np.full(n_ev + n_lb, EVENT, np.int8)
    if not n_lb:
        return kinds
    n_null = label_times.null_count()
    ev_t = event_times.to_numpy()
    if n_null or event_times.null_count():
        if event_times.null_count():  # (the lake has no such events: the sort decides, as before)
            plan = pl.concat([pl.DataFrame({"t": event_times, "kind": pl.Series(kinds[:n_ev])}),
                              pl.DataFrame({"t": label_times, "kind": pl.Series(np.full(n_lb, LABEL, np.int8))})])
            return plan.sort(["t", "kind"], maintain_order=True).get_column("kind").to_numpy().copy()
        kinds[:n_null] = LABEL  # null times sort first, the labels' nulls are their last rows
    lb_t = label_times.to_numpy()[: n_lb - n_null]
    kinds[np.searchsorted(ev_t, lb_t, side="right") + np.arange(n_null, n_lb)] = LABEL
    return kinds


class ReplayColumns(ItemPositions):
    """A replay batch as columns: ``kinds`` (EVENT/LABEL per item, seq ``start + i``), the events'
    frame (``event_id``, ``event_time`` in µs, ``key`` and the payload columns) and the labels'
    frame (``event_id``, ``label``, ``label_time`` in µs, ``key``), both in item order."""

    __slots__ = ("start", "kinds", "events", "labels", "payload_columns", "_event_items", "_label_items")

    def __init__(self, start: int, kinds: np.ndarray, events: pl.DataFrame, labels: pl.DataFrame,
                 payload_columns: list[str]) -> None:
        self.start = start
        self.kinds = kinds
        self.events = events
        self.labels = labels
        self.payload_columns = payload_columns
        self._event_items: np.ndarray | None = None
        self._label_items: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.kinds.size)

    def __getstate__(self) -> tuple:
        return self.start, self.kinds, self.events, self.labels, self.payload_columns

    def __setstate__(self, state: tuple) -> None:
        self.start, self.kinds, self.events, self.labels, self.payload_columns = state
        self._event_items = self._label_items = None

    def items(self) -> list[tuple]:
        """The batch as item tuples (:mod:`dataflows.items`)."""
        ev, lb = self.events, self.labels
        ev_ids = ev.get_column("event_id").to_list()
        ev_times = ev.get_column("event_time").to_list()
        ev_keys = ev.get_column("key").to_list()
        cols = self.payload_columns
        if cols:
            values = [c.to_list() for c in lake_names.select(ev, cols).iter_columns()]
            payloads = [dict(zip(cols, row, strict=True)) for row in zip(*values, strict=True)]
        else:
            payloads = [{} for _ in range(ev.height)]
        lb_ids = lb.get_column("event_id").to_list()
        lb_vals = lb.get_column("label").to_list()
        lb_times = lb.get_column("label_time").to_list()
        lb_keys = lb.get_column("key").to_list()
        items = []
        ie = il = 0
        seq = self.start
        for kind in self.kinds.tolist():
            if kind == EVENT:
                items.append((seq, EVENT, ev_ids[ie], ev_times[ie], ev_keys[ie], payloads[ie]))
                ie += 1
            else:
                items.append((seq, LABEL, lb_ids[il], lb_vals[il], lb_times[il], lb_keys[il]))
                il += 1
            seq += 1
        return items
