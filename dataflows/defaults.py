"""Settings that depend on a stream's time scale or density, chosen from the pinned history.

A replay knows its whole input before it starts: every event time, every label and
when it arrived. Where the user gives no value (``"auto"``), the settings below come
from that history, each with the reason a person reads at the start of the run:

- ``label_ttl``: how long an event waits for its label. The 99.9th percentile of the
  observed label delays, rounded up to a whole unit (no labels: one metric window, so
  unlabelled events do not pile up).
- ``window``: the prequential metric windows. The shortest round duration whose
  windows hold a median of :data:`METRIC_ROWS` labelled events (fewer on small
  histories, so there are about ten windows, never under :data:`METRIC_MIN_ROWS`).
- ``grace``: how long after a window's end late labels still count. The longest
  observed label delay, rounded up: every label of the history is scored in its window.
- ``stats_window``: the window statistics' tumbling windows. The shortest round
  duration whose windows hold a median of :data:`STATS_ROWS` events.
- ``action_window`` (only with a drift action): the detectors' warm-up, learns of a
  model before an alarm may replace it (and between two), also the recent labelled
  events a retrain learns from. A tenth of the history's labels, between
  :data:`ACTION_MIN` and :data:`ACTION_MAX`, so a short history can act at all.

Explicit values win. An explicit window whose median window holds fewer rows than the
statistic needs (:data:`METRIC_MIN_ROWS` labelled events, :data:`STATS_MIN_ROWS`
events) is refused before any work, with a one-line error.

Everything here is a pure function of a :class:`History`.

>>> day = 86_400_000_000
>>> h = History.of(event_times_us=[i * day // 24 for i in range(24 * 60)],
...                label_delays_us=[(1 + i % 40) * day for i in range(24 * 60)])
>>> chosen = choose(h)
>>> print(chosen["label_ttl"].line())
label_ttl: 40d (99.9th percentile of observed label delays, 1,440 labels)
>>> chosen["window"].text, chosen["grace"].text
('7d', '40d')
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from lake.durations import ROUND_DURATIONS, UNITS, format_us, parse_duration_us
from monitoring.windows import STATS_MIN_ROWS, STATS_ROWS  # (what a statistics window should hold)

AUTO = "auto"
"""The value of a setting the data decides."""

METRIC_ROWS = 500
"""Labelled events a metric window should hold (median over windows with labels)."""
METRIC_MIN_ROWS = 10
"""Fewer labelled events per metric window than this (median) and its accuracy and ROC AUC mean nothing."""
ACTION_MIN, ACTION_MAX = 100, 5_000
"""Bounds of the data-derived ``action_window`` (learns)."""
TTL_QUANTILE = 0.999
"""The share of observed label delays the label TTL covers."""
WARN_SHARE = 0.01
"""A given label TTL shorter than more than this share of the label delays is flagged at the start."""

_S = 1_000_000


class SettingsError(ValueError):
    """A setting the history cannot serve (a window it cannot fill); its message is one line."""


def round_up(us: float) -> int:
    """``us`` rounded up to a whole number of its largest unit (days, hours, minutes, seconds,
    milliseconds); at least 1 s.

    >>> format_us(round_up(39.2 * 86_400_000_000)), format_us(round_up(1_000)), format_us(round_up(90 * 60e6))
    ('40d', '1s', '2h')
    """
    us = max(float(us), float(_S))
    for _, size in UNITS:
        if us >= size:
            return int(math.ceil(us / size - 1e-9)) * size
    return int(math.ceil(us))


@dataclass(frozen=True)
class History:
    """What the defaults look at: the event times (sorted), and per label that belongs to an
    event of the history, its delay (``label_time - event_time``) and its event's time."""

    event_times_us: np.ndarray
    label_delays_us: np.ndarray
    labelled_times_us: np.ndarray

    @classmethod
    def of(cls, *, event_times_us: Sequence[int], label_delays_us: Sequence[int] = (),
           labelled_times_us: Sequence[int] | None = None) -> History:
        """From plain sequences (tests, docs); without ``labelled_times_us`` the labels belong to the
        first events, in order."""
        ev = np.sort(np.asarray(event_times_us, np.int64))
        delays = np.asarray(label_delays_us, np.int64)
        labelled = ev[: delays.size] if labelled_times_us is None else np.asarray(labelled_times_us, np.int64)
        return cls(ev, delays, np.sort(labelled))

    @classmethod
    def read(cls, lake: str | os.PathLike[str], *, events_version: int, labels_version: int | None) -> History:
        """The event times and label delays of one pinned version of ``events`` + ``labels``."""
        import polars as pl

        from lake.table import read_table

        events = read_table(lake, "events", version=events_version, columns=["event_id", "event_time"])
        events = events.with_columns(pl.col("event_time").dt.epoch("us"))
        ev = np.sort(events.get_column("event_time").to_numpy().astype(np.int64))
        if labels_version is None:
            return cls(ev, np.zeros(0, np.int64), np.zeros(0, np.int64))
        labels = (read_table(lake, "labels", version=labels_version, columns=["event_id", "label_time"])
                  .with_columns(pl.col("label_time").dt.epoch("us"))
                  .join(events, on="event_id", how="inner"))
        t = labels.get_column("event_time").to_numpy().astype(np.int64)
        delays = labels.get_column("label_time").to_numpy().astype(np.int64) - t
        return cls(ev, delays, np.sort(t))


@dataclass(frozen=True)
class Choice:
    """One setting's value and why: from the user (``given``) or from the data."""

    name: str
    us: int | None  # a duration in microseconds (a count when ``count``); None: off or forever
    reason: str
    given: bool = False
    count: bool = False

    @property
    def text(self) -> str:
        if self.us is None:
            return "none"
        return f"{self.us:,}" if self.count else format_us(self.us)

    def line(self) -> str:
        """``label_ttl: 41d (99.9th percentile of observed label delays, 8,213 labels)``."""
        return f"{self.name}: {self.text} ({self.reason})"


def window_counts(sorted_times: np.ndarray, window_us: int) -> np.ndarray:
    """The rows of each non-empty tumbling window of ``window_us``, in order."""
    buckets = sorted_times // window_us
    cuts = np.flatnonzero(buckets[1:] != buckets[:-1]) + 1  # (a comparison, not a difference: ~30% less)
    return np.diff(np.concatenate(([0], cuts, [buckets.size])))


def _median_per_window(sorted_times: np.ndarray, window_us: int) -> float:
    """Median count of rows over the non-empty tumbling windows of ``window_us``."""
    if sorted_times.size == 0:
        return 0.0
    return float(np.median(window_counts(sorted_times, window_us)))


_SAMPLE = 16
"""Every how many sorted times :func:`_too_short` looks at."""


def _too_short(sorted_times: np.ndarray, window_us: int, want: int) -> bool:
    """Whether the non-empty windows of ``window_us`` surely hold a median under ``want`` rows, told from a
    sample of the times: were the median ``want`` or more, half of the ``W`` non-empty windows at least would
    hold ``want`` rows, so the rows would number ``want * ceil(W / 2)`` or more; the windows the sample's times
    fall in are some of the ``W``. (A search over short windows of a long history costs a pass over a
    sixteenth of it each, instead of a whole pass.)

    >>> t = np.arange(1_000) * 1_000_000  # one row a second
    >>> _too_short(t, 10_000_000, 40), _too_short(t, 10_000_000, 10), _median_per_window(t, 10_000_000)
    (True, False, 10.0)
    """
    sample = sorted_times[::_SAMPLE] // window_us
    if sample.size == 0:
        return False
    seen = 1 + int(np.count_nonzero(sample[1:] != sample[:-1]))
    return sorted_times.size < want * ((seen + 1) // 2)


def _window(name: str, times: np.ndarray, *, want: int, what: str) -> Choice:
    """The shortest round window whose non-empty windows hold a median of ``want`` rows."""
    for text in ROUND_DURATIONS:
        us = parse_duration_us(text)
        if _too_short(times, us, want):
            continue
        median = _median_per_window(times, us)
        if median >= want:
            return Choice(name, us, f"median {median:,.0f} {what} per window; {want:,} wanted")
    us = parse_duration_us(ROUND_DURATIONS[-1])
    return Choice(name, us, f"the longest window offered: {_median_per_window(times, us):,.0f} {what} per window, "
                            f"{want:,} wanted")


def _check(name: str, value: str, us: int, times: np.ndarray, *, need: int, what: str) -> None:
    median = _median_per_window(times, us)
    if times.size and median < need:
        raise SettingsError(f"{name}={value!r} holds a median of {median:,.0f} {what} per window in this history; "
                         f"at least {need} are needed: give a longer {name}, or leave it out to let the data choose")


def _auto(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def _off(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off"))


def choose(history: History, *, label_ttl: str | int | float | None = AUTO, window: str | int | float | None = AUTO,
           grace: str | int | float | None = AUTO, stats_window: str | int | float | None = AUTO,
           action_window: int | str | None = None) -> dict[str, Choice]:
    """The run's time-scale settings: the given ones (checked), the others chosen from ``history``.

    Durations are given as ``"30s"``, ``"1d"`` or seconds; ``label_ttl``/``stats_window`` take ``None``
    (or ``"none"``) for "wait forever" / "off"; ``"auto"`` (the default) lets the data decide.
    ``action_window`` (learns) is chosen only when asked for with ``"auto"`` (runs with a drift action).
    Raises :class:`SettingsError` (one line) for a window the history cannot fill.
    """

    chosen: dict[str, Choice] = {}
    labelled, n_labels = history.labelled_times_us, int(history.label_delays_us.size)
    # metric windows
    want = min(METRIC_ROWS, max(METRIC_MIN_ROWS, n_labels // 10))
    if window is None or _auto(window):
        times = labelled if n_labels else history.event_times_us
        chosen["window"] = _window("window", times, want=want, what="labelled events" if n_labels else "events")
    else:
        us = parse_duration_us(window)
        _check("window", window, us, labelled, need=METRIC_MIN_ROWS, what="labelled events")
        chosen["window"] = Choice("window", us, "given", given=True)
    # label TTL
    if _auto(label_ttl):
        if n_labels:
            q = float(np.quantile(np.maximum(history.label_delays_us, 0), TTL_QUANTILE, method="higher"))
            chosen["label_ttl"] = Choice("label_ttl", round_up(q), f"{TTL_QUANTILE * 100:g}th percentile of "
                                         f"observed label delays, {n_labels:,} labels")
        else:
            chosen["label_ttl"] = Choice("label_ttl", chosen["window"].us,
                                         "no labels in the history: events wait one metric window")
    elif _off(label_ttl):
        chosen["label_ttl"] = Choice("label_ttl", None, "given: wait forever", given=True)
    else:
        us = parse_duration_us(label_ttl)
        longer = int((history.label_delays_us > us).sum())
        reason = "given"
        if longer > WARN_SHARE * n_labels:
            reason += (f"; {longer:,} of the {n_labels:,} observed label delays ({100 * longer / n_labels:.1f}%) are "
                       "longer: those labels will not be learned")
        chosen["label_ttl"] = Choice("label_ttl", us, reason, given=True)
    # grace of late labels
    if grace is None or _auto(grace):
        if n_labels:
            longest = round_up(float(np.maximum(history.label_delays_us, 0).max()))
            chosen["grace"] = Choice("grace", longest, "the longest observed label delay: every label of the "
                                     "history is scored in its window")
        else:
            chosen["grace"] = Choice("grace", chosen["window"].us, "one window: no labels in the history")
    else:
        chosen["grace"] = Choice("grace", parse_duration_us(grace), "given", given=True)
    # window statistics
    if _auto(stats_window):
        chosen["stats_window"] = _window("stats_window", history.event_times_us, want=STATS_ROWS, what="events")
    elif _off(stats_window):
        chosen["stats_window"] = Choice("stats_window", None, "given: off", given=True)
    else:
        us = parse_duration_us(stats_window)
        _check("stats_window", stats_window, us, history.event_times_us, need=STATS_MIN_ROWS, what="events")
        chosen["stats_window"] = Choice("stats_window", us, "given", given=True)
    # detector warm-up before a drift action
    if _auto(action_window):
        n = min(ACTION_MAX, max(ACTION_MIN, n_labels // 10))
        chosen["action_window"] = Choice("action_window", n, f"learns before a drift action: a tenth of the "
                                         f"{n_labels:,} labels, within {ACTION_MIN:,}..{ACTION_MAX:,}", count=True)
    elif action_window is not None:
        chosen["action_window"] = Choice("action_window", int(action_window), "given", given=True, count=True)
    return chosen


def announce(run_id: str, pin: object, chosen: Iterable[Choice], *, file: TextIO | None = None) -> None:
    """Print the run id, the pinned versions and every time-scale setting with its reason (stderr)."""
    out = sys.stderr if file is None else file
    versions = f"events v{pin.events}" + (f", labels v{pin.labels}" if pin.labels is not None else ", no labels")
    lines = [f"run {run_id} ({versions})", *(f"  {c.line()}" for c in chosen)]
    print("\n".join(lines), file=out, flush=True)
