"""Prequential (test-then-train) metrics per event-time tumbling window.

Each label that arrives scores the prediction made for its event *before* the
model learned from it. Scores are grouped by the event's time into tumbling
windows. The *label clock* is the latest ``label_time`` seen; a window closes
(its row is emitted) at the first label that moves the clock to the window's
end plus ``grace`` or beyond. A label whose window had already closed when it
arrived is late: it still counts in the running totals and in the
``n_late_labels`` of the next row emitted, never silently lost.

Labels are taken a batch at a time (numpy), with exactly the same result as
one at a time.

>>> m = WindowedPrequential(window_us=10, grace_us=5)
>>> m.update(event_time_us=1, label_time_us=2, y=True, score=0.9)
[]
>>> m.update(event_time_us=3, label_time_us=4, y=False, score=0.2)
[]
>>> rows = m.update(event_time_us=12, label_time_us=16, y=True, score=0.4)
>>> [(seq, r["n"], r["accuracy"]) for seq, r in rows]
[(0, 2, 1.0)]
>>> [(r["n"], r["cum_n"]) for r in m.flush()]
[(1, 3)]
"""

from __future__ import annotations

from typing import Any

import numpy as np

_EPS = 1e-15
_NEVER = np.iinfo(np.int64).min


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Exact ROC AUC (ties count half); ``None`` when only one class is present.

    >>> roc_auc(np.array([True, False, True, False]), np.array([0.9, 0.1, 0.4, 0.4]))
    0.875
    """
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    uniq, inverse, counts = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True,
                                      return_counts=True)
    ends = np.cumsum(counts)
    avg_rank = ends - (counts - 1) / 2.0  # 1-based average rank of each distinct score
    rank_sum = float(avg_rank[inverse][labels].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


class _Window:
    __slots__ = ("start", "n", "n_correct", "n_pos", "n_pred_pos", "sum_ll", "labels", "scores")

    def __init__(self, start: int) -> None:
        self.start = start
        self.n = self.n_correct = self.n_pos = self.n_pred_pos = 0
        self.sum_ll = 0.0
        self.labels: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []


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
        self._clock = _NEVER
        self._late = 0  # late labels not yet reported in a row
        self.cum_n = 0
        self.cum_correct = 0
        self.cum_ll = 0.0

    def update(self, event_time_us: int, label_time_us: int, y: bool, score: float) -> list[tuple[int, dict]]:
        """One label; see :meth:`update_many` (its position is 0)."""
        return self.update_many(np.array([event_time_us]), np.array([label_time_us]), np.array([bool(y)]),
                                np.array([score], dtype=np.float64))

    def update_many(self, event_times: np.ndarray, label_times: np.ndarray, ys: np.ndarray,
                    scores: np.ndarray) -> list[tuple[int, dict[str, Any]]]:
        """Score labels in arrival order; returns ``(position in the batch, row)`` per closed window."""
        m = len(ys)
        if m == 0:
            return []
        w, g = self.window_us, self.grace_us
        ys = np.asarray(ys, dtype=bool)
        scores = np.asarray(scores, dtype=np.float64)
        starts = event_times - event_times % w
        clock = np.maximum.accumulate(np.concatenate(([self._clock], label_times)))
        late = starts + (w + g) <= clock[:-1]
        pred = scores >= self.threshold
        correct = pred == ys
        p = np.clip(np.where(ys, scores, 1.0 - scores), _EPS, 1.0)
        ll = -np.log(p)
        cum_n = self.cum_n + np.arange(1, m + 1)
        cum_correct = self.cum_correct + np.cumsum(correct)
        cum_ll = self.cum_ll + np.cumsum(ll)
        self.cum_n, self.cum_correct, self.cum_ll = int(cum_n[-1]), int(cum_correct[-1]), float(cum_ll[-1])
        self._clock = int(clock[-1])

        ok = ~late
        for start in np.unique(starts[ok]).tolist():
            sel = ok & (starts == start)
            win = self._open.get(start)
            if win is None:
                win = self._open[start] = _Window(start)
            win.n += int(sel.sum())
            win.n_correct += int(correct[sel].sum())
            win.n_pos += int(ys[sel].sum())
            win.n_pred_pos += int(pred[sel].sum())
            win.sum_ll += float(ll[sel].sum())
            win.labels.append(ys[sel])
            win.scores.append(scores[sel])

        closing = sorted(
            (int(np.searchsorted(clock[1:], start + w + g, side="left")), start)
            for start in self._open if start + w + g <= self._clock
        )
        late_at = np.flatnonzero(late)
        rows = []
        reported = 0
        for pos, start in closing:
            n_late = int(np.searchsorted(late_at, pos, side="right")) - reported
            reported += n_late
            rows.append((pos, self._row(self._open.pop(start), self._late + n_late,
                                        int(cum_n[pos]), int(cum_correct[pos]), float(cum_ll[pos]))))
            self._late = 0
        self._late += late_at.size - reported
        return rows

    def flush(self) -> list[dict[str, Any]]:
        """Close every open window (end of stream)."""
        rows = []
        for start in sorted(self._open):
            rows.append(self._row(self._open.pop(start), self._late, self.cum_n, self.cum_correct, self.cum_ll))
            self._late = 0
        return rows

    def _row(self, win: _Window, late: int, cum_n: int, cum_correct: int, cum_ll: float) -> dict[str, Any]:
        labels = np.concatenate(win.labels) if win.labels else np.array([], dtype=bool)
        scores = np.concatenate(win.scores) if win.scores else np.array([])
        return {
            "window_start": win.start,
            "window_end": win.start + self.window_us,
            "n": win.n,
            "n_correct": win.n_correct,
            "n_positive": win.n_pos,
            "n_predicted_positive": win.n_pred_pos,
            "sum_log_loss": win.sum_ll,
            "accuracy": win.n_correct / win.n if win.n else None,
            "log_loss": win.sum_ll / win.n if win.n else None,
            "roc_auc": roc_auc(labels, scores),
            "n_late_labels": late,
            "cum_n": cum_n,
            "cum_accuracy": cum_correct / cum_n if cum_n else None,
            "cum_log_loss": cum_ll / cum_n if cum_n else None,
        }
