"""Statistics per event-time tumbling window, closed by a watermark; late events kept, never dropped.

The *watermark* is the latest event time seen minus ``lateness``. A window
``[start, start + window)`` closes (its row comes out) at the first event that
moves the watermark to its end or beyond. An event whose window had already
closed when it arrived is *late*: it is returned (to be kept in ``late_events``)
and counted in the ``n_late`` of the next row, never silently dropped.

Per window: the event count, per numeric feature its count, mean, standard
deviation (n - 1), min and max (map columns, so feature-evolving streams fit), and
the label rate among labels known while the window was open.

Batches (:meth:`WindowStats.update_many`) give the rows one-by-one updates give: counts,
positions and late events exactly, the statistics as any grouping of the same events gives
them (to the last bits). A window holds the feature values of the events it counted until
:data:`HOLD_ROWS` wait or a window closes, and merges them together (live batches of a few
events each would otherwise cost ~25 numpy calls apiece). A few held values (a window closing with nearly every
batch, as when a replayed history runs months a minute) merge on Python floats, the same formulas.

Size: one class whose bulk (numpy), live-batch (Python numbers) and held paths must give the
same rows; they stay side by side here, where a change to one is read against the others.

>>> ws = WindowStats(window_us=10, lateness_us=2)
>>> ws.update_many([1, 4, 9], [{"x": 1.0}, {"x": 3.0}, {"x": 5.0}]).closed
[]
>>> up = ws.update_many([13, 3], [{"x": 0.0}, {"x": 7.0}], event_ids=["e3", "e4"])
>>> [(c.position, c.row["n"], c.row["mean"], c.row["max"]) for c in up.closed]
[(0, 3, {'x': 3.0}, {'x': 5.0})]
>>> [(late.event_id, late.window_start, late.watermark) for late in up.late]
[('e4', 0, 11)]
>>> [(r.row["window_start"], r.row["n"], r.row["n_late"]) for r in ws.flush()]
[(10, 1, 1)]
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa

from monitoring.columns import DenseFeatures, feature_matrix, is_number, stack_rows

if TYPE_CHECKING:
    from lake.arrow import PendingRows

STATS_ROWS = 50
"""Events a window-statistics window should hold (median over non-empty windows): what a data-derived
``stats_window`` aims at (:mod:`dataflows.defaults`)."""
STATS_MIN_ROWS = 2
"""Fewer events per statistics window than this (median) and no standard deviation exists."""

_NEVER = -(2**62)
_MAX_SEEN = 1 << 19  # keys remembered by WindowStats._discover before it starts afresh


class Closed(NamedTuple):
    """A window that closed; ``position`` is the index in the batch of the event that closed it
    (``-1`` when closed by :meth:`WindowStats.advance` or :meth:`WindowStats.flush`)."""

    position: int
    row: dict[str, Any]


class Late(NamedTuple):
    """An event that arrived after its window had closed."""

    position: int
    event_id: str | None
    event_time: int
    window_start: int
    watermark: int


class WindowUpdate(NamedTuple):
    closed: list[Closed]
    late: list[Late]


class _Window:
    """An open window: its counts and, per described feature (in the order of ``WindowStats.names``), the count,
    mean, sum of squared deviations, min and max of its values, as lists of Python floats (grown as features are
    found; a window read or merged by numpy is copied in and written back whole)."""

    __slots__ = ("start", "n", "n_labels", "n_pos", "cnt", "mean", "m2", "lo", "hi")

    def __init__(self, start: int, d: int) -> None:
        self.start = start
        self.n = self.n_labels = self.n_pos = 0
        self.cnt = [0.0] * d
        self.mean = [0.0] * d
        self.m2 = [0.0] * d
        self.lo = [math.inf] * d
        self.hi = [-math.inf] * d

    def grow(self, d: int) -> None:
        """Room for ``d`` features (those found after the window opened: none of their values yet)."""
        k = d - len(self.cnt)
        if k > 0:
            self.cnt += [0.0] * k
            self.mean += [0.0] * k
            self.m2 += [0.0] * k
            self.lo += [math.inf] * k
            self.hi += [-math.inf] * k

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        for name, value in state[1].items():  # (snapshots from before the lists: numpy arrays, the same doubles)
            setattr(self, name, value.tolist() if isinstance(value, np.ndarray) else value)


class WindowStats:
    """Tumbling event-time windows of ``window_us`` microseconds (aligned to ``align_us``).

    ``features`` names the numeric features to describe; without it the first
    ``max_features`` numeric keys seen are used (keys holding ``=``, one-hot
    indicators such as ``carrier=UA``, are skipped unless named).
    """

    def __init__(self, *, window_us: int, lateness_us: int = 0, features: Sequence[str] | None = None,
                 max_features: int = 64, align_us: int = 0) -> None:
        if not isinstance(window_us, int) or window_us <= 0:
            raise ValueError(f"window_us must be an integer > 0, got {window_us!r}")
        if not isinstance(lateness_us, int) or lateness_us < 0:
            raise ValueError(f"lateness_us must be an integer >= 0, got {lateness_us!r}")
        if not isinstance(max_features, int) or max_features < 1:
            raise ValueError(f"max_features must be an integer >= 1, got {max_features!r}")
        if not isinstance(align_us, int):
            raise ValueError(f"align_us must be an integer, got {align_us!r}")
        if features is not None and (isinstance(features, str) or not all(isinstance(f, str) for f in features)):
            raise ValueError(f"features must be a sequence of names, got {features!r}")
        self.window_us = window_us
        self.lateness_us = lateness_us
        self.align_us = align_us
        self.fixed = features is not None
        self.names: list[str] = list(dict.fromkeys(features)) if features is not None else []
        self.capacity = len(self.names) if self.fixed else max_features
        self._seen: set[str] = set(self.names)  # keys decided: described, or indicators (see _discover)
        self._open: dict[int, _Window] = {}
        self._max_t = _NEVER
        self._late = 0  # late events not yet reported in a row
        self._late_labels = 0
        self.n_late = 0  # all late events ever

    @property
    def watermark(self) -> int:
        """Latest event time seen minus the allowed lateness (microseconds)."""
        return self._max_t - self.lateness_us if self._max_t != _NEVER else _NEVER

    def _start(self, t: np.ndarray) -> np.ndarray:
        return t - (t - self.align_us) % self.window_us

    def update_one(self, event_time: int, x: Mapping[str, Any], *, event_id: str | None = None,
                   y: Any = None) -> WindowUpdate:
        return self.update_many([event_time], [x], event_ids=None if event_id is None else [event_id],
                                ys=None if y is None else [y])

    def update_many(self, event_times: Sequence[int] | np.ndarray, xs: Sequence[Mapping[str, Any]], *,
                    event_ids: Sequence[str] | None = None, ys: Sequence[Any] | None = None) -> WindowUpdate:
        """Add events in arrival order (``event_times`` in microseconds, UTC); ``ys`` where labels are known
        (``None``/NaN where not). Returns the windows closed and the late events."""
        t = np.asarray(event_times, dtype=np.int64)
        m = t.size
        if len(xs) != m or (event_ids is not None and len(event_ids) != m) or (ys is not None and len(ys) != m):
            raise ValueError(f"event_times, xs, event_ids and ys must have the same length, got {m}, {len(xs)}, "
                             f"{None if event_ids is None else len(event_ids)}, {None if ys is None else len(ys)}")
        if m == 0:
            return WindowUpdate([], [])
        if not self.fixed and len(self.names) < self.capacity:
            self._discover(xs)
        if m <= _SMALL:
            return self._update_few(t.tolist(), xs, event_ids, ys)
        w, g = self.window_us, self.lateness_us
        starts = self._start(t)
        clock = np.maximum.accumulate(np.concatenate(([self._max_t], t)))
        wm_before = clock[:-1] - g
        late = starts + w <= wm_before
        ok = ~late
        if ok.any():
            kept = xs if not late.any() else (xs.select(ok) if isinstance(xs, DenseFeatures) else
                                              [x for x, keep in zip(xs, ok.tolist(), strict=True) if keep])
            self._add(starts[ok], kept,
                      None if ys is None else _labels(ys)[ok])
        late_at = np.flatnonzero(late)
        lates = [Late(int(i), None if event_ids is None else event_ids[i], int(t[i]), int(starts[i]),
                      int(wm_before[i])) for i in late_at.tolist()]
        self._max_t = int(clock[-1])
        wm_after = clock[1:] - g
        closing = sorted((int(np.searchsorted(wm_after, s + w, side="left")), s)
                         for s in self._open if s + w <= self.watermark)
        if closing:
            self._merge_held()
        closed, reported = [], 0
        for pos, s in closing:
            n_late = int(np.searchsorted(late_at, pos, side="right")) - reported
            reported += n_late
            self._late += n_late
            closed.append(Closed(pos, self._row(self._open.pop(s), int(wm_after[pos]))))
        self._late += late_at.size - reported
        self.n_late += late_at.size
        return WindowUpdate(closed, lates)

    def _update_few(self, t: list[int], xs: Sequence[Mapping[str, Any]], event_ids: Sequence[str] | None,
                    ys: Sequence[Any] | None) -> WindowUpdate:
        """:meth:`update_many` of a live batch (up to :data:`_SMALL` events): the same integer steps on
        Python ints, without a numpy call each (the statistics are :meth:`_add`'s, as for any batch)."""
        w, g, align = self.window_us, self.lateness_us, self.align_us
        starts = [v - (v - align) % w for v in t]
        wm_before, wm_after = [], []  # the watermark before and after each event
        clock = self._max_t
        for v in t:
            wm_before.append(clock - g)
            if v > clock:
                clock = v
            wm_after.append(clock - g)
        late_at = [i for i, (s, wm) in enumerate(zip(starts, wm_before, strict=True)) if s + w <= wm]
        if len(late_at) < len(t):
            if late_at:
                ok = np.ones(len(t), dtype=bool)
                ok[late_at] = False
                kept = xs.select(ok) if isinstance(xs, DenseFeatures) else [
                    x for x, keep in zip(xs, ok.tolist(), strict=True) if keep]
                self._add([s for s, keep in zip(starts, ok.tolist(), strict=True) if keep], kept,
                          None if ys is None else _labels(ys)[ok])
            else:
                self._add(starts, xs, None if ys is None else _labels(ys))
        lates = [Late(i, None if event_ids is None else event_ids[i], t[i], starts[i], wm_before[i])
                 for i in late_at]
        self._max_t = clock
        closing = sorted((bisect_left(wm_after, s + w), s) for s in self._open if s + w <= self.watermark)
        if closing:
            self._merge_held()
        closed, reported = [], 0
        for pos, s in closing:
            n_late = bisect_right(late_at, pos) - reported
            reported += n_late
            self._late += n_late
            closed.append(Closed(pos, self._row(self._open.pop(s), wm_after[pos])))
        self._late += len(late_at) - reported
        self.n_late += len(late_at)
        return WindowUpdate(closed, lates)

    def label_many(self, event_times: Sequence[int] | np.ndarray, ys: Sequence[Any]) -> int:
        """Labels that arrived for events at ``event_times``; returns how many landed in open windows
        (the others, for closed windows, are counted in the next row's ``n_late_labels``)."""
        if len(ys) <= _SMALL:
            return self._label_few(event_times.tolist() if isinstance(event_times, np.ndarray) else event_times,
                                   ys.tolist() if isinstance(ys, np.ndarray) else ys)
        t = np.asarray(event_times, dtype=np.int64)
        y = _labels(ys)
        starts = self._start(t)
        wm, w = self.watermark, self.window_us
        known = ~np.isnan(y)
        late = known & (starts + w <= wm)
        self._late_labels += int(late.sum())
        landing = known & ~late
        if not landing.any():
            return 0
        # Per window: labels and positives, in the order windows are first met (as one by one).
        s_land, y_land = starts[landing], y[landing]
        uniq, first, inverse = np.unique(s_land, return_index=True, return_inverse=True)
        n_lab = np.bincount(inverse, minlength=uniq.size)
        n_pos = np.bincount(inverse, weights=y_land, minlength=uniq.size)
        for k in np.argsort(first, kind="stable").tolist():
            win = self._window(int(uniq[k]))
            win.n_labels += int(n_lab[k])
            win.n_pos += int(n_pos[k])
        return int(landing.sum())

    def _label_few(self, event_times: Sequence[int], ys: Sequence[Any]) -> int:
        """:meth:`label_many` of a live batch on Python numbers (the same integers and the same float sums, in
        arrival order, without a numpy call each)."""
        w, align, wm = self.window_us, self.align_us, self.watermark
        per: dict[int, list] = {}  # window start -> [labels, sum of labels], in the order windows are first met
        late = 0
        for t, y in zip(event_times, ys, strict=True):
            if y is None:
                continue
            y = float(y)
            if y != y:  # (NaN: not known)
                continue
            t = int(t)
            start = t - (t - align) % w
            if start + w <= wm:
                late += 1
                continue
            acc = per.get(start)
            if acc is None:
                per[start] = [1, 0.0 + y]
            else:
                acc[0] += 1
                acc[1] += y
        self._late_labels += late
        landed = 0
        for start, (n, total) in per.items():
            win = self._window(start)
            win.n_labels += n
            win.n_pos += int(total)
            landed += n
        return landed

    def advance(self, watermark: int) -> list[Closed]:
        """Move the watermark to at least ``watermark`` (e.g. wall clock minus lateness on an idle
        source) and return the windows that closes."""
        self._max_t = max(self._max_t, int(watermark) + self.lateness_us)
        wm, w = self.watermark, self.window_us
        self._merge_held()
        return [Closed(-1, self._row(self._open.pop(s), wm)) for s in sorted(self._open) if s + w <= wm]

    def flush(self) -> list[Closed]:
        """Close every open window (end of stream)."""
        self._merge_held()
        return [Closed(-1, self._row(self._open.pop(s), self.watermark)) for s in sorted(self._open)]

    # -- internals ---------------------------------------------------------------------------------
    def _discover(self, xs: Sequence[Mapping[str, Any]]) -> None:
        """Add the numeric keys of ``xs`` not yet described, in order of first appearance (a key's first
        value in the batch decides), skipping one-hot indicators (keys holding ``=``), up to capacity.

        Keys already decided (names, indicators) are remembered across batches, so an item is looked
        at key by key only when it holds a key never met before: on hashed streams (thousands of token
        indicators) most items pass one C-level subset test.
        """
        seen = self._seen
        if isinstance(xs, DenseFeatures):  # every event has every name, all numbers: in order
            for name in xs.names:
                if name not in seen:
                    seen.add(name)
                    self.names.append(name)
                    if len(self.names) >= self.capacity:
                        return
            return
        if len(seen) > _MAX_SEEN:  # unbounded one-hot streams: forget the indicators, keep the names
            seen.clear()
            seen.update(self.names)
        new = set().union(*xs) - seen  # the batch's keys met for the first time (C-level, small sets)
        if not new:
            return
        if all("=" in k for k in new):  # only new indicators (hashed tokens): nothing to describe
            seen |= new
            return
        skipped: set[str] = set()  # keys whose first value in this batch is not a number
        room = self.capacity - len(self.names)
        for x in xs:
            keys = x.keys()
            if keys <= seen:
                continue
            new = keys - seen
            if skipped:
                new -= skipped
            if not new:
                continue
            if all("=" in k for k in new):
                seen |= new
                continue
            for k in x:
                if k not in new:
                    continue
                if "=" in k:
                    seen.add(k)
                elif is_number(x[k]):
                    seen.add(k)
                    self.names.append(k)
                    room -= 1
                    if not room:
                        return
                else:
                    skipped.add(k)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_seen"]  # a cache, rebuilt from the names: kept out of snapshots
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._seen = set(self.names)

    def _window(self, start: int) -> _Window:
        win = self._open.get(start)
        if win is None:
            win = self._open[start] = _Window(start, len(self.names))
        return win

    def _add(self, starts: np.ndarray | list[int], xs: Sequence[Mapping[str, Any]], ys: np.ndarray | None) -> None:
        """Events into their (open) windows: the counts at once; the feature statistics held until
        :data:`HOLD_ROWS` events wait or a window closes (:meth:`_merge_held`), then merged together."""
        d = len(self.names)
        if not d or ys is not None:
            self._merge_held()
            self._merge(starts, xs, ys)
            return
        x = feature_matrix(xs, self.names)  # (the features described now: a name found later is not in it)
        starts = starts.tolist() if isinstance(starts, np.ndarray) else list(starts)
        for s, n in _runs(starts):  # (windows opened in order of arrival here; the merge opens none)
            self._window(s).n += n
        held = self.__dict__.setdefault("_held", [])
        held.append((starts, x))
        n_held = self._n_held = self.__dict__.get("_n_held", 0) + len(starts)
        if n_held >= HOLD_ROWS:
            self._merge_held()

    def _merge_held(self) -> None:
        """Merge the held events' feature statistics into their windows (before a window is read or closed)."""
        held = self.__dict__.get("_held")
        if not held:
            return
        d = len(self.names)
        starts = held[0][0] if len(held) == 1 else [s for part, _ in held for s in part]
        x = stack_rows([m for _, m in held], d)
        held.clear()
        self._n_held = 0
        if x.size <= _FEW_VALUES:
            self._merge_few(starts, x.tolist())
        else:
            self._merge(starts, x, None, counted=True)

    def _merge_few(self, starts: list[int], rows: list[list[float]]) -> None:
        """:meth:`_merge` of counted events on Python floats (a few held rows: a window closing every batch or
        two when event time runs fast): window by window, in order of start, the numpy merge's formulas on each
        feature (a block's sum added value by value, where numpy's ``reduceat`` groups the additions otherwise:
        the last bits may differ, as with any other grouping of the events)."""
        d = len(self.names)
        by: dict[int, list[list[float]]] = {}
        for s, r in zip(starts, rows, strict=True):
            block = by.get(s)
            if block is None:
                by[s] = [r]
            else:
                block.append(r)
        for s in sorted(by):
            win = self._window(s)
            win.grow(d)
            cnt, mean, m2, lo, hi = win.cnt, win.mean, win.m2, win.lo, win.hi
            block = by[s]
            cols = ((v,) for v in block[0]) if len(block) == 1 else zip(*block, strict=True)
            for j, col in enumerate(cols):
                c, total = 0, 0.0
                for v in col:
                    if v == v:  # (NaN: missing)
                        c += 1
                        total += v
                if not c:
                    continue
                mu = total / c
                q, a, b = 0.0, math.inf, -math.inf
                for v in col:
                    if v == v:
                        e = v - mu
                        q += e * e
                        if v < a:
                            a = v
                        if v > b:
                            b = v
                na = cnt[j]
                n = na + c
                delta = mu - mean[j]
                frac = c / n
                m2[j] = m2[j] + (q + delta * delta * na * frac)
                mean[j] = mean[j] + delta * frac
                cnt[j] = n
                if a < lo[j]:
                    lo[j] = a
                if b > hi[j]:
                    hi[j] = b

    # (hostile magnitudes, 1e300, give inf statistics, not warnings; one errstate for the whole merge:
    # entering one costs about as much as a window's arithmetic on a live batch)
    @np.errstate(over="ignore", invalid="ignore", divide="ignore")
    def _merge(self, starts: np.ndarray | list[int], xs: Sequence[Mapping[str, Any]] | np.ndarray,
               ys: np.ndarray | None, *, counted: bool = False) -> None:
        d = len(self.names)
        order, idx, seg_starts, seg_n = _segments(starts)
        if d:
            x = xs if isinstance(xs, np.ndarray) else feature_matrix(xs, self.names)
            if order is not None:
                x = x[order]
            missing = np.isnan(x)
            cnt = np.add.reduceat((~missing).astype(np.float64), idx, axis=0)
            sums = np.add.reduceat(np.where(missing, 0.0, x), idx, axis=0)
            means = sums / cnt
            # (one window: its means broadcast to every row as they are)
            means_of = means[np.repeat(np.arange(len(idx)), seg_n)] if len(seg_n) > 1 else means
            dev = np.where(missing, 0.0, x - means_of)
            m2 = np.add.reduceat(dev * dev, idx, axis=0)
            lo = np.fmin.reduceat(np.where(missing, np.inf, x), idx, axis=0)
            hi = np.fmax.reduceat(np.where(missing, -np.inf, x), idx, axis=0)
        if ys is not None:
            y = ys if order is None else ys[order]
            known = ~np.isnan(y)
            n_lab = np.add.reduceat(known.astype(np.int64), idx).tolist()
            n_pos = np.add.reduceat(np.where(known, y, 0.0), idx).tolist()
        wins = [self._window(s) for s in seg_starts]  # (opened in order of start, as one by one)
        for k, win in enumerate(wins):
            win.grow(d)
            if not counted:
                win.n += seg_n[k]
            if ys is not None:
                win.n_labels += int(n_lab[k])
                win.n_pos += int(n_pos[k])
        if not d:
            return
        # Every window's merge at once (Chan et al.), element by element the same operations as one
        # window at a time: the windows' states as rows of matrices, written back row by row.
        na = _states(wins, "cnt", d)
        w_mean = _states(wins, "mean", d)
        n = na + cnt
        has = cnt > 0
        delta = np.where(has, means - w_mean, 0.0)
        frac = np.where(has, cnt / np.where(n > 0, n, 1.0), 0.0)
        new_m2 = _states(wins, "m2", d) + np.where(has, m2 + delta * delta * na * frac, 0.0)
        new_mean = w_mean + delta * frac
        new_lo = np.minimum(_states(wins, "lo", d), lo)
        new_hi = np.maximum(_states(wins, "hi", d), hi)
        for win, *state in zip(wins, n.tolist(), new_mean.tolist(), new_m2.tolist(), new_lo.tolist(),
                               new_hi.tolist(), strict=True):
            win.cnt, win.mean, win.m2, win.lo, win.hi = state

    def _row(self, win: _Window, watermark: int) -> dict[str, Any]:
        d = len(self.names)
        win.grow(d)
        count, mean, std, lo, hi = {}, {}, {}, {}, {}
        cnts, means, m2s, los, his = (a[:d] for a in (win.cnt, win.mean, win.m2, win.lo, win.hi))
        names = self.names
        if d and min(cnts) >= 2:  # (every feature seen twice or more: the dicts in one go each)
            count, mean, lo, hi = (dict(zip(names, v, strict=True)) for v in (cnts, means, los, his))
            std = dict(zip(names, [math.sqrt(max(m2, 0.0) / (c - 1)) for m2, c in zip(m2s, cnts, strict=True)],
                           strict=True))
            cnts = ()
        for name, c, mu, m2, a, b in zip(names, cnts, means, m2s, los, his, strict=False):
            if c <= 0:
                continue
            count[name] = c
            mean[name] = mu
            lo[name] = a
            hi[name] = b
            if c >= 2:
                std[name] = math.sqrt(max(m2, 0.0) / (c - 1))
        late, self._late = self._late, 0
        late_labels, self._late_labels = self._late_labels, 0
        return {
            "window_start": win.start, "window_end": win.start + self.window_us, "n": win.n, "n_late": late,
            "n_labels": win.n_labels, "n_positive": win.n_pos,
            "label_rate": win.n_pos / win.n_labels if win.n_labels else None, "n_late_labels": late_labels,
            "watermark": watermark, "count": count, "mean": mean, "std": std, "min": lo, "max": hi,
        }


HOLD_ROWS = 64
"""Events whose feature statistics a window holds before merging them (:meth:`WindowStats._add`): a live batch of
a few events merged on its own cost ~25 numpy calls on arrays of a few rows; held, one merge serves many batches.
The held rows are merged before any window closes, so rows come out as before (the doubles may differ in the
last bits, as any other grouping of the events)."""


_FEW_VALUES = 320
"""Held values (rows × features) up to which :meth:`WindowStats._merge_held` merges on Python floats: below this
the numpy merge's ~25 calls cost more than the arithmetic (BENCHMARKS.md, issue 19)."""


def _runs(starts: list[int]) -> list[tuple[int, int]]:
    """``(start, n)`` of each run of equal starts, in order (``[5, 5, 7, 5]`` -> ``[(5, 2), (7, 1), (5, 1)]``)."""
    out: list[tuple[int, int]] = []
    prev, n = None, 0
    for s in starts:
        if s == prev:
            n += 1
            continue
        if n:
            out.append((prev, n))
        prev, n = s, 1
    if n:
        out.append((prev, n))
    return out


_SMALL = 64
"""Up to this many events (a live batch), the integer steps of :meth:`WindowStats.update_many` (window starts,
watermark, lateness, closes) and the grouping by window (:func:`_segments`) run on Python ints: fewer numpy calls."""


def _segments(starts: np.ndarray | list[int]) -> tuple[np.ndarray | None, np.ndarray, list[int], list[int]]:
    """The events grouped by window, in order of start and then arrival (a stable sort): ``(order, or
    None where the events already are in it; the first position of each window's run; the windows'
    starts; their numbers of events)``."""
    if isinstance(starts, list) or starts.size <= _SMALL:
        s = starts if isinstance(starts, list) else starts.tolist()
        if all(a <= b for a, b in zip(s, s[1:], strict=False)):  # (mostly one window, or windows in order)
            order, s_sorted = None, s
        else:
            order = sorted(range(len(s)), key=s.__getitem__)  # (Python's sort is stable)
            s_sorted = [s[i] for i in order]
        first = [0, *(i for i in range(1, len(s_sorted)) if s_sorted[i] != s_sorted[i - 1])]
        seg_n = [b - a for a, b in zip(first, [*first[1:], len(s_sorted)], strict=True)]
        return order, np.array(first, dtype=np.intp), [s_sorted[i] for i in first], seg_n
    order = np.argsort(starts, kind="stable")
    s_sorted = starts[order]
    idx = np.concatenate(([0], np.flatnonzero(np.diff(s_sorted)) + 1))
    return order, idx, s_sorted[idx].tolist(), np.diff(np.concatenate((idx, [s_sorted.size]))).tolist()


def _states(wins: list[_Window], name: str, d: int) -> np.ndarray:
    """One of the windows' state lists (its first ``d`` features) as the rows of a matrix."""
    return np.array([getattr(w, name)[:d] for w in wins], dtype=np.float64).reshape(len(wins), d)


def _labels(ys: Sequence[Any]) -> np.ndarray:
    if isinstance(ys, np.ndarray) and ys.dtype != object:
        return ys.astype(np.float64)
    return np.fromiter((np.nan if y is None else float(y) for y in ys), np.float64, len(ys))


def window_stats_table(closed: Sequence[Closed | dict[str, Any]], *, run_id: str, shard: int = 0,
                       seq: int | Sequence[int] = 0, closed_at: datetime | None = None) -> pa.Table:
    """Rows of ``window_stats`` (``seq``: one for all rows, or one per row; ``closed_at`` defaults to now).

    >>> ws = WindowStats(window_us=10)
    >>> _ = ws.update_many([1, 2], [{"x": 1.0}, {"x": 2.0}])
    >>> window_stats_table(ws.flush(), run_id="r").column("std").to_pylist()
    [[('x', 0.7071067811865476)]]
    """
    return window_stats_rows(closed, run_id=run_id, shard=shard, seq=seq, closed_at=closed_at).arrow()


def window_stats_rows(closed: Sequence[Closed | dict[str, Any]], *, run_id: str, shard: int = 0,
                      seq: int | Sequence[int] = 0, closed_at: datetime | None = None) -> PendingRows:
    """:func:`window_stats_table`'s rows, built into Arrow when asked (a lake writer builds many steps'
    together)."""
    from lake.arrow import PendingRows

    rows = [c.row if isinstance(c, Closed) else c for c in closed]
    seqs = [seq] * len(rows) if isinstance(seq, int) else list(seq)
    if len(seqs) != len(rows):
        raise ValueError(f"seq must be one int or one per row ({len(rows)}), got {len(seqs)}")
    at = closed_at or datetime.now(UTC)
    return PendingRows("window_stats", [
        (run_id, shard, s, r["window_start"], r["window_end"], r["n"], r["n_late"], r["n_labels"], r["n_positive"],
         r["label_rate"], r["n_late_labels"], r["watermark"], r["count"], r["mean"], r["std"], r["min"], r["max"], at)
        for s, r in zip(seqs, rows, strict=True)
    ])


def late_events_table(late: Sequence[Late], *, run_id: str, shard: int = 0,
                      seq: int | Sequence[int] = 0) -> pa.Table:
    """Rows of ``late_events`` (``seq``: one for all rows, or one per row)."""
    from lake.arrow import rows_to_arrow

    seqs = [seq] * len(late) if isinstance(seq, int) else list(seq)
    if len(seqs) != len(late):
        raise ValueError(f"seq must be one int or one per row ({len(late)}), got {len(seqs)}")
    return rows_to_arrow("late_events", [
        (run_id, shard, s, e.event_id, e.event_time, e.window_start, e.watermark)
        for s, e in zip(seqs, late, strict=True)
    ])
