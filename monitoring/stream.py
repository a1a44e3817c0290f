"""Monitoring inside the dataflow: what one shard watches besides its models' errors.

:class:`MonitorConfig` says what to watch; :class:`StreamMonitor` (one per shard,
owned by :class:`dataflows.learner.ShardLearner`) turns each batch's events and
labels into rows for the lake:

- ``window_stats``: feature statistics per event-time tumbling window, closed by a
  watermark (latest event time minus ``lateness``); ``late_events``: events whose
  window had already closed (:mod:`monitoring.windows`).
- ``predictions.anomaly_score`` and ``anomalies``: an unsupervised score per event
  and the events above the scorer's threshold (:mod:`monitoring.anomaly`).
- ``drift_events``: alarms of detectors on the champion's label-free signals,
  ``score``, ``feature:NAME`` and ``new_features`` (:mod:`monitoring.monitor`).

The error-stream detectors (one set per model) and the drift actions stay in the
learner, which owns the models.

>>> cfg = MonitorConfig.from_settings(stats_window="10s", watch="feature:x=adwin", anomaly="zscore(block=50)")
>>> mon = StreamMonitor(cfg, run_id="r", shard=0)
>>> xs = [{"x": float(i % 7)} for i in range(300)]
>>> times = [i * 100_000 for i in range(300)]  # one event every 0.1 s: 30 s of events
>>> scores, tables = mon.on_events(list(range(300)), [f"e{i}" for i in range(300)], times, xs, [0.5] * 300,
...                                champion="linear")
>>> tables["window_stats"].num_rows, int(np.isnan(scores).sum())  # two windows closed; the first block warms up
(2, 50)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lake.durations import ROUND_DURATIONS, format_us, parse_duration_us, parse_optional_us
from monitoring.anomaly import make_scorer
from monitoring.monitor import LABEL_SIGNALS, DriftMonitor, drift_events_table, parse_watch
from monitoring.windows import (
    STATS_MIN_ROWS,
    STATS_ROWS,
    Closed,
    WindowStats,
    late_events_table,
    window_stats_rows,
    window_stats_table,
)

log = logging.getLogger(__name__)


def _median_merged(starts: np.ndarray, ns: np.ndarray, us: int) -> float:
    """Median events per non-empty window of ``us`` microseconds, of windows (``starts``, ``ns`` events each) put
    together by start."""
    _, inverse = np.unique(starts // us, return_inverse=True)
    return float(np.median(np.bincount(inverse, weights=ns)))

SPARSE_CHECK = 200
"""Closed statistics windows a shard looks at, once, to tell whether ``stats_window`` suits the stream (see
:meth:`StreamMonitor.check_density`)."""

ACTIONS = ("none", "reset", "retrain")
"""What the dataflow may do when a model's error detector alarms: nothing, replace the model
with a fresh one, or with a fresh one trained on the most recent labelled events."""


@dataclass(frozen=True)
class MonitorConfig:
    """What a run watches besides its models' error streams. Part of the run's identity.

    ``stats_window_us``: tumbling event-time windows of feature statistics (``None``: off);
    ``lateness_us``: how far behind the latest event time the watermark stays;
    ``stats_features``: the numeric features to describe (default: the first 64 seen);
    ``anomaly``: anomaly scorer spec (``"zscore"``, ``"hst(threshold=0.8)"``; ``None``: off);
    ``watch``: detectors on the champion's label-free signals, e.g.
    ``"new_features=page-hinkley; feature:dep_delay=adwin"``;
    ``drift_action``: one of :data:`ACTIONS`, applied to the model whose error detector alarmed;
    ``action_window``: recent labelled events kept to retrain from, and the least number of
    learns of a model before its first action and between two (alarms while it is still
    learning its first concept replace nothing).
    """

    stats_window_us: int | None = 3_600_000_000
    lateness_us: int = 0
    stats_features: tuple[str, ...] | None = None
    anomaly: str | None = "zscore"
    watch: str | None = None
    drift_action: str = "none"
    action_window: int = 5_000

    def __post_init__(self) -> None:
        if self.stats_window_us is not None and (not isinstance(self.stats_window_us, int)
                                                 or self.stats_window_us <= 0):
            raise ValueError(f"stats_window_us must be a positive integer or None, got {self.stats_window_us!r}")
        if not isinstance(self.lateness_us, int) or self.lateness_us < 0:
            raise ValueError(f"lateness_us must be an integer >= 0, got {self.lateness_us!r}")
        if self.drift_action not in ACTIONS:
            raise ValueError(f"drift_action must be one of {', '.join(ACTIONS)}, got {self.drift_action!r}")
        if not isinstance(self.action_window, int) or self.action_window < 1:
            raise ValueError(f"action_window must be an integer >= 1, got {self.action_window!r}")
        if self.anomaly is not None:
            make_scorer(self.anomaly)  # fails early, naming the known scorers and parameters
        if self.watch:
            signals = parse_watch(self.watch)
            label = [s for s in signals if s in LABEL_SIGNALS]
            if label:
                raise ValueError(f"watch takes label-free signals (score, feature:NAME, new_features); "
                                 f"{label} are watched per model by the run's drift detectors")
            DriftMonitor(signals)  # validates every detector spec

    @classmethod
    def from_settings(cls, *, stats_window: str | int | None = "1h", lateness: str | int = 0,
                      stats_features: str | Sequence[str] | None = None, anomaly: str | None = "zscore",
                      watch: str | None = None, drift_action: str = "none",
                      action_window: int = 5_000) -> MonitorConfig:
        """From user-facing settings: durations as ``"15s"``, ``"1h"``; lists as ``"a,b"``."""
        if isinstance(stats_features, str):
            stats_features = tuple(f.strip() for f in stats_features.split(",") if f.strip()) or None
        return cls(
            stats_window_us=parse_optional_us(stats_window), lateness_us=parse_optional_us(lateness) or 0,
            stats_features=tuple(stats_features) if stats_features else None,
            anomaly=None if anomaly in (None, "", "none", "off") else anomaly,
            watch=watch or None, drift_action=drift_action or "none", action_window=action_window,
        )

    def identity(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


class StreamMonitor:
    """The label-free monitoring of one shard (see the module doc)."""

    def __init__(self, config: MonitorConfig, *, run_id: str, shard: int, seed: int = 42) -> None:
        self.config = config
        self.run_id = run_id
        self.shard = shard
        self.windows = (WindowStats(window_us=config.stats_window_us, lateness_us=config.lateness_us,
                                    features=config.stats_features)
                        if config.stats_window_us is not None else None)
        self.scorer = make_scorer(config.anomaly) if config.anomaly is not None else None
        self.drift = DriftMonitor(config.watch, seed=seed) if config.watch else None

    def on_events(self, seqs: Sequence[int], event_ids: Sequence[str], times: Sequence[int],
                  xs: Sequence[Mapping[str, Any]], champion_scores: Sequence[float], *,
                  champion: str) -> tuple[np.ndarray | None, dict[str, pa.Table]]:
        """A batch's accepted events, in arrival order; returns their anomaly scores and the rows to write."""
        tables: dict[str, pa.Table] = {}
        if not seqs:
            return None, tables
        run_id, shard = self.run_id, self.shard
        scores = None
        if self.scorer is not None:
            scores, alarms = self.scorer.update_many(xs, event_ids=event_ids, event_times=times, seqs=seqs)
            if alarms:
                from lake.arrow import rows_to_arrow

                thr = self.scorer.threshold
                start = self.scorer.n_seen - len(xs)
                tables["anomalies"] = rows_to_arrow("anomalies", [
                    (run_id, shard, a.seq, a.detector, a.position, a.event_id, a.event_time,
                     float(scores[a.position - start - 1]), thr) for a in alarms])
        if self.drift is not None:
            alarms = self.drift.update_many(event_ids=event_ids, event_times=times, scores=champion_scores,
                                            xs=xs, seqs=seqs)
            if alarms:
                tables["drift_events"] = drift_events_table(alarms, run_id=run_id, shard=shard, model=champion)
        if self.windows is not None:
            up = self.windows.update_many(times, xs, event_ids=event_ids)
            if up.closed and self.__dict__.get("_density", ()) is not None:
                self.check_density(up.closed)
            if up.closed:
                tables["window_stats"] = window_stats_rows(  # (Arrow when the lake writer commits them)
                    up.closed, run_id=run_id, shard=shard,
                    seq=[seqs[c.position] if c.position >= 0 else seqs[-1] for c in up.closed])
            if up.late:
                tables["late_events"] = late_events_table(up.late, run_id=run_id, shard=shard,
                                                          seq=[seqs[e.position] for e in up.late])
        return scores, tables

    def check_density(self, closed: Sequence[Closed]) -> str | None:
        """Once per shard, after :data:`SPARSE_CHECK` closed windows: when those that held events held a median of
        fewer than :data:`~monitoring.windows.STATS_MIN_ROWS` (no standard deviation, a row per event or two: a
        live run's one-minute default on a history replayed at months a minute), warn in one log line naming the
        shortest round window in which the same events would have held a median of
        :data:`~monitoring.windows.STATS_ROWS` (the rule a replay chooses its window by). Returns the warning
        (``None`` while counting, or when the windows suit the stream)."""
        seen = self.__dict__.setdefault("_density", [])
        seen.extend((c.row["n"], c.row["window_start"]) for c in closed)
        if len(seen) < SPARSE_CHECK:
            return None
        self._density = None  # (looked at once: a suggestion, not a running check)
        held = [(n, start) for n, start in seen if n]  # (a window only labels opened holds no event)
        if not held:
            return None
        ns = np.array([n for n, _ in held], dtype=np.float64)
        starts = np.array([start for _, start in held], dtype=np.int64)
        median = float(np.median(ns))
        if median >= STATS_MIN_ROWS:
            return None
        w = self.windows.window_us
        fit, fit_median = ROUND_DURATIONS[-1], 0.0
        for text in ROUND_DURATIONS:
            us = parse_duration_us(text)
            if us <= w:
                continue
            fit, fit_median = text, _median_merged(starts, ns, us)
            if fit_median >= STATS_ROWS:
                break
        text = (f"window statistics of shard {self.shard}: {len(seen)} windows of {format_us(w)} held a median of "
                f"{median:g} event(s) (a standard deviation needs {STATS_MIN_ROWS}; a history replayed faster than "
                f"it happened?): stats_window={fit} would have held a median of {fit_median:g} of their events "
                f"({STATS_ROWS} wanted)")
        log.warning(text)
        return text

    def on_labels(self, event_times: Sequence[int], ys: Sequence[bool]) -> None:
        """Labels that arrived, by their events' times (for the windows' label rates)."""
        if self.windows is not None and len(event_times):
            self.windows.label_many(event_times, ys)

    def finish(self, seq: int) -> dict[str, pa.Table]:
        """End of stream: close every open window."""
        if self.windows is None:
            return {}
        closed = self.windows.flush()
        return {"window_stats": window_stats_table(closed, run_id=self.run_id, shard=self.shard, seq=seq)} \
            if closed else {}
