"""Prequential (test-then-train) metrics per event-time tumbling window.

Each label that arrives scores the prediction made for its event *before* the
model learned from it. Scores are grouped by the event's time into tumbling
windows; a window is closed (its row emitted) once the label clock
(latest ``label_time`` seen) has passed the window's end plus ``grace``.
Labels for a window that is already closed are counted as late in the next
window that closes, never silently lost.

>>> m = WindowedPrequential(window_us=10, grace_us=5)
>>> m.update(event_time_us=1, label_time_us=2, y=True, score=0.9)
[]
>>> m.update(event_time_us=3, label_time_us=4, y=False, score=0.2)
[]
>>> [r["accuracy"] for r in m.update(event_time_us=12, label_time_us=16, y=True, score=0.4)]
[1.0]
>>> [(r["n"], r["cum_n"]) for r in m.flush()]
[(1, 3)]
"""

from __future__ import annotations

import math
from typing import Any

_EPS = 1e-15


def log_loss_one(y: bool, p: float) -> float:
    """Binary log loss of one prediction, with ``p`` clipped away from 0 and 1."""
    p = min(max(p, _EPS), 1.0 - _EPS)
    return -math.log(p) if y else -math.log(1.0 - p)


def roc_auc(labels: list[bool], scores: list[float]) -> float | None:
    """Exact ROC AUC (ties count half); ``None`` when only one class is present.

    >>> roc_auc([True, False, True, False], [0.9, 0.1, 0.4, 0.4])
    0.875
    """
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum = 0.0
    i = 0
    n = len(order)
    while i < n:
        j = i
        s = scores[order[i]]
        while j + 1 < n and scores[order[j + 1]] == s:
            j += 1
        avg_rank = (i + j) / 2.0 + 1.0
        for k in range(i, j + 1):
            if labels[order[k]]:
                rank_sum += avg_rank
        i = j + 1
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


class _Window:
    __slots__ = ("start", "n", "n_correct", "n_pos", "n_pred_pos", "sum_ll", "labels", "scores")

    def __init__(self, start: int) -> None:
        self.start = start
        self.n = self.n_correct = self.n_pos = self.n_pred_pos = 0
        self.sum_ll = 0.0
        self.labels: list[bool] = []
        self.scores: list[float] = []


class WindowedPrequential:
    """Prequential accuracy, log loss and ROC AUC per event-time window, plus running totals."""

    def __init__(self, *, window_us: int, grace_us: int = 0, threshold: float = 0.5) -> None:
        if window_us <= 0:
            raise ValueError(f"window_us must be > 0, got {window_us!r}")
        if grace_us < 0:
            raise ValueError(f"grace_us must be >= 0, got {grace_us!r}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
        self.window_us = int(window_us)
        self.grace_us = int(grace_us)
        self.threshold = threshold
        self._open: dict[int, _Window] = {}
        self._closed_before = -(2**62)  # windows starting before this are closed
        self._next_close = 2**62  # label time at which the oldest open window closes
        self._late = 0
        self.cum_n = 0
        self.cum_correct = 0
        self.cum_ll = 0.0

    def update(self, event_time_us: int, label_time_us: int, y: bool, score: float) -> list[dict[str, Any]]:
        """Score one labelled prediction; returns the rows of windows this label closed."""
        ll = log_loss_one(y, score)
        pred = score >= self.threshold
        correct = pred == bool(y)
        self.cum_n += 1
        self.cum_correct += correct
        self.cum_ll += ll
        start = event_time_us - event_time_us % self.window_us
        if start < self._closed_before:
            self._late += 1
        else:
            w = self._open.get(start)
            if w is None:
                w = self._open[start] = _Window(start)
                self._next_close = min(self._next_close, start + self.window_us + self.grace_us)
            w.n += 1
            w.n_correct += correct
            w.n_pos += bool(y)
            w.n_pred_pos += pred
            w.sum_ll += ll
            w.labels.append(bool(y))
            w.scores.append(score)
        if label_time_us >= self._next_close:
            return self._close_until(label_time_us - self.grace_us)
        return []

    def _close_until(self, clock_us: int) -> list[dict[str, Any]]:
        rows = []
        for start in sorted(self._open):
            if start + self.window_us > clock_us:
                break
            rows.append(self._row(self._open.pop(start)))
            self._closed_before = max(self._closed_before, start + self.window_us)
        self._next_close = (
            min(self._open) + self.window_us + self.grace_us if self._open else 2**62
        )
        return rows

    def flush(self) -> list[dict[str, Any]]:
        """Close every open window (end of stream)."""
        rows = [self._row(self._open.pop(s)) for s in sorted(self._open)]
        self._next_close = 2**62
        return rows

    def _row(self, w: _Window) -> dict[str, Any]:
        late, self._late = self._late, 0
        return {
            "window_start": w.start,
            "window_end": w.start + self.window_us,
            "n": w.n,
            "n_correct": w.n_correct,
            "n_positive": w.n_pos,
            "n_predicted_positive": w.n_pred_pos,
            "sum_log_loss": w.sum_ll,
            "accuracy": w.n_correct / w.n if w.n else None,
            "log_loss": w.sum_ll / w.n if w.n else None,
            "roc_auc": roc_auc(w.labels, w.scores),
            "n_late_labels": late,
            "cum_n": self.cum_n,
            "cum_accuracy": self.cum_correct / self.cum_n if self.cum_n else None,
            "cum_log_loss": self.cum_ll / self.cum_n if self.cum_n else None,
        }
