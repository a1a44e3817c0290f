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

from collections.abc import Callable
from typing import Any

import numpy as np

_EPS = 1e-15
_NEVER = np.iinfo(np.int64).min

SMALL = 64
"""Up to this many labels (a live batch), :meth:`WindowedPrequential.update_many` runs on Python numbers."""

PIECES = 16
"""A window keeps each batch's labels and scores as arrays (for its ROC AUC at the close); past this many, the
newest are joined into one, and the joined ones pairwise while the one before is no larger (:func:`_compact`)."""


def _compact(pieces: list[Any], join: Callable[[list[Any]], Any] = np.concatenate,
             size: Callable[[Any], int] = len) -> None:
    """Keep a window's per-batch pieces few, in order: O(log n) of them, each value copied O(log n) times. A
    recovery snapshot pickles a window's pieces: one array per batch made a snapshot of a one-day window ~25 ms
    per shard after a minute at 5,000 messages/s, and longer with every batch (BENCHMARKS, issue 19)."""
    if len(pieces) <= PIECES:
        return
    pieces[-PIECES:] = [join(pieces[-PIECES:])]
    while len(pieces) >= 2 and size(pieces[-2]) <= size(pieces[-1]):
        pieces[-2:] = [join(pieces[-2:])]


def _join_parts(parts: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))


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


class _WindowClock:
    """Event-time tumbling windows closed by the label clock (shared by every task's metrics).

    Subclasses keep their windows in ``_open`` (start -> window) and build a row with
    ``make_row(window, n_late, position)`` (``position`` ``None`` at :meth:`flush`).
    """

    def __init__(self, *, window_us: int, grace_us: int) -> None:
        if window_us <= 0:
            raise ValueError(f"window_us must be > 0, got {window_us!r}")
        if grace_us < 0:
            raise ValueError(f"grace_us must be >= 0, got {grace_us!r}")
        self.window_us = int(window_us)
        self.grace_us = int(grace_us)
        self._open: dict[int, Any] = {}
        self._clock = _NEVER
        self._late = 0  # late labels not yet reported in a row

    def _place(self, event_times: np.ndarray, label_times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each label's window start, the label clock after each (first: before the batch), and lateness."""
        w, g = self.window_us, self.grace_us
        starts = event_times - event_times % w
        clock = np.maximum.accumulate(np.concatenate(([self._clock], label_times)))
        late = starts + (w + g) <= clock[:-1]
        self._clock = int(clock[-1])
        return starts, clock, late

    def _closing(self, clock: np.ndarray, late: np.ndarray,
                 make_row: Callable[[Any, int, int | None], dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
        """Rows of the windows the batch closed, at the position of the label that closed each."""
        w, g = self.window_us, self.grace_us
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
            rows.append((pos, make_row(self._open.pop(start), self._late + n_late, pos)))
            self._late = 0
        self._late += late_at.size - reported
        return rows

    def _flush(self, make_row: Callable[[Any, int, int | None], dict[str, Any]]) -> list[dict[str, Any]]:
        rows = []
        for start in sorted(self._open):
            rows.append(make_row(self._open.pop(start), self._late, None))
            self._late = 0
        return rows


class WindowedPrequential(_WindowClock):
    """Prequential accuracy, log loss and ROC AUC per event-time window, plus running totals."""

    def __init__(self, *, window_us: int, grace_us: int = 0, threshold: float = 0.5) -> None:
        super().__init__(window_us=window_us, grace_us=grace_us)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
        self.threshold = threshold
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
        if m <= SMALL:
            return self._update_few(event_times, label_times, ys, scores)
        ys = np.asarray(ys, dtype=bool)
        scores = np.asarray(scores, dtype=np.float64)
        starts, clock, late = self._place(event_times, label_times)
        pred = scores >= self.threshold
        correct = pred == ys
        p = np.clip(np.where(ys, scores, 1.0 - scores), _EPS, 1.0)
        ll = -np.log(p)
        cum_n = self.cum_n + np.arange(1, m + 1)
        cum_correct = self.cum_correct + np.cumsum(correct)
        cum_ll = self.cum_ll + np.cumsum(ll)
        self.cum_n, self.cum_correct, self.cum_ll = int(cum_n[-1]), int(cum_correct[-1]), float(cum_ll[-1])

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
            _compact(win.labels)
            _compact(win.scores)

        return self._closing(clock, late, lambda win, n_late, pos: self._row(
            win, n_late, int(cum_n[pos]), int(cum_correct[pos]), float(cum_ll[pos])))

    def _update_few(self, event_times: Any, label_times: Any, ys: Any, scores: Any) -> list[tuple[int, dict[str, Any]]]:
        """:meth:`update_many` of a live batch (up to :data:`SMALL` labels): the integer steps, counts and running
        sums on Python numbers, the logarithms and each window's sum of log losses by the same numpy calls as
        :meth:`update_many` (so the same doubles), without the ~30 numpy calls on a few values each."""
        ts = [int(v) for v in event_times]
        lts = [int(v) for v in label_times]
        ys = [bool(v) for v in ys]
        scores = [float(v) for v in scores]
        w, g, thr = self.window_us, self.grace_us, self.threshold
        clock = self._clock
        clocks = [clock]  # the label clock before the batch, then after each label
        lates = []
        for t, lt in zip(ts, lts, strict=True):
            lates.append(t - t % w + (w + g) <= clock)
            if lt > clock:
                clock = lt
            clocks.append(clock)
        self._clock = clock
        lls = (-np.log(np.clip(np.array([s if y else 1.0 - s for s, y in zip(scores, ys, strict=True)]), _EPS,
                                1.0))).tolist()
        preds = [s >= thr for s in scores]
        cum_n, cum_correct, cum_ll = [], [], []
        n, n_correct, total = self.cum_n, self.cum_correct, 0.0
        for i, (p, y) in enumerate(zip(preds, ys, strict=True)):
            n += 1
            n_correct += p == y
            total = lls[0] if i == 0 else total + lls[i]  # (numpy's cumsum, then the running total added)
            cum_n.append(n)
            cum_correct.append(n_correct)
            cum_ll.append(self.cum_ll + total)
        self.cum_n, self.cum_correct, self.cum_ll = n, n_correct, cum_ll[-1]
        per: dict[int, list[int]] = {}
        for i, (t, late) in enumerate(zip(ts, lates, strict=True)):
            if not late:
                per.setdefault(t - t % w, []).append(i)
        for start in sorted(per):
            at = per[start]
            win = self._open.get(start)
            if win is None:
                win = self._open[start] = _Window(start)
            win.n += len(at)
            win.n_correct += sum(preds[i] == ys[i] for i in at)
            win.n_pos += sum(ys[i] for i in at)
            win.n_pred_pos += sum(preds[i] for i in at)
            win.sum_ll += float(np.array([lls[i] for i in at]).sum())
            win.labels.append(np.array([ys[i] for i in at], dtype=bool))
            win.scores.append(np.array([scores[i] for i in at], dtype=np.float64))
            _compact(win.labels)
            _compact(win.scores)
        if not any(start + w + g <= clock for start in self._open):
            self._late += sum(lates)
            return []
        return self._closing(np.array(clocks, dtype=np.int64), np.array(lates, dtype=bool),
                             lambda win, n_late, pos: self._row(win, n_late, cum_n[pos], cum_correct[pos], cum_ll[pos]))

    def flush(self) -> list[dict[str, Any]]:
        """Close every open window (end of stream)."""
        return self._flush(lambda win, n_late, pos: self._row(win, n_late, self.cum_n, self.cum_correct,
                                                              self.cum_ll))

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


def macro_f1(labels: np.ndarray, predictions: np.ndarray) -> float | None:
    """Mean F1 over the classes among the labels and predictions; ``None`` without labels.

    >>> macro_f1(np.array(["a", "a", "b", "c"]), np.array(["a", "b", "b", "a"]))
    0.38888888888888884
    """
    if labels.size == 0:
        return None
    f1 = []
    for c in np.unique(np.concatenate((labels, predictions))):
        tp = int(np.sum((labels == c) & (predictions == c)))
        wrong = int(np.sum(labels == c)) + int(np.sum(predictions == c)) - 2 * tp
        f1.append(2 * tp / (2 * tp + wrong))
    return float(np.mean(f1))


class _TaskWindow:
    __slots__ = ("start", "parts")

    def __init__(self, start: int) -> None:
        self.start = start
        self.parts: list[tuple[np.ndarray, ...]] = []


class TaskPrequential(_WindowClock):
    """Prequential metrics of a ``regression`` or ``multiclass`` model per event-time window.

    Windows, grace and late labels work as in :class:`WindowedPrequential`; rows carry
    the columns of ``lake.schemas.task_schema("metrics", task)`` (without run, shard,
    seq and model). Regression: MAE, RMSE and R² (1 - SSE/SST around the window's own
    mean; ``None`` with fewer than two labels or all equal), and their running values.
    Multiclass: accuracy, macro-F1 (over the classes in the window's labels and
    predictions) and log loss of the label's probability (clipped at 1e-15).

    >>> m = TaskPrequential(task="regression", window_us=10)
    >>> m.update(event_time_us=1, label_time_us=2, y=3.0, prediction=2.0)
    []
    >>> m.update(event_time_us=2, label_time_us=3, y=5.0, prediction=5.0)
    []
    >>> [(r["mae"], round(r["rmse"], 4), r["r2"]) for r in m.flush()]
    [(0.5, 0.7071, 0.5)]
    """

    def __init__(self, *, task: str, window_us: int, grace_us: int = 0) -> None:
        super().__init__(window_us=window_us, grace_us=grace_us)
        if task not in ("regression", "multiclass"):
            raise ValueError(f"task must be regression or multiclass (binary: WindowedPrequential), got {task!r}")
        self.task = task
        self.cum_n = 0
        self._cum = np.zeros(4)  # regression: sum |e|, e², y, y²; multiclass: correct, log loss

    def update(self, event_time_us: int, label_time_us: int, y: Any, prediction: Any,
               probability: float | None = None) -> list[tuple[int, dict[str, Any]]]:
        """One label; ``probability`` is the one the model gave the label's class (multiclass)."""
        return self.update_many(np.array([event_time_us]), np.array([label_time_us]), [y], [prediction],
                                None if probability is None else [probability])

    def update_many(self, event_times: np.ndarray, label_times: np.ndarray, ys: Any, predictions: Any,
                    probabilities: Any = None) -> list[tuple[int, dict[str, Any]]]:
        """Score labels in arrival order; returns ``(position in the batch, row)`` per closed window.

        ``probabilities``: for multiclass, the probability each prediction gave its label's class.
        """
        m = len(ys)
        if m == 0:
            return []
        if self.task == "regression":
            ys = np.asarray(ys, dtype=np.float64)
            preds = np.asarray(predictions, dtype=np.float64)
            err = ys - preds
            per = np.stack((np.abs(err), err * err, ys, ys * ys), axis=1)
            parts: tuple[np.ndarray, ...] = (per,)
        else:
            ys = np.asarray([str(y) for y in ys], dtype=object)
            preds = np.asarray([str(p) for p in predictions], dtype=object)
            if probabilities is None:
                raise ValueError("multiclass metrics need the probability given to each label's class")
            p = np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1.0)
            per = np.stack(((ys == preds).astype(np.float64), -np.log(p), np.zeros(m), np.zeros(m)), axis=1)
            parts = (per, ys, preds)
        starts, clock, late = self._place(np.asarray(event_times), np.asarray(label_times))
        cum = self._cum + np.cumsum(per, axis=0)
        cum_n = self.cum_n + np.arange(1, m + 1)
        self._cum, self.cum_n = cum[-1].copy(), int(cum_n[-1])
        ok = ~late
        for start in np.unique(starts[ok]).tolist():
            sel = ok & (starts == start)
            win = self._open.get(start)
            if win is None:
                win = self._open[start] = _TaskWindow(start)
            win.parts.append(tuple(a[sel] for a in parts))
            _compact(win.parts, _join_parts, lambda part: len(part[0]))
        return self._closing(clock, late, lambda win, n_late, pos: self._row(win, n_late, int(cum_n[pos]),
                                                                             cum[pos]))

    def flush(self) -> list[dict[str, Any]]:
        """Close every open window (end of stream)."""
        return self._flush(lambda win, n_late, pos: self._row(win, n_late, self.cum_n, self._cum))

    def _row(self, win: _TaskWindow, late: int, cum_n: int, cum: np.ndarray) -> dict[str, Any]:
        per = np.concatenate([p[0] for p in win.parts]) if win.parts else np.zeros((0, 4))
        n = per.shape[0]
        sums = per.sum(axis=0)
        row: dict[str, Any] = {"window_start": win.start, "window_end": win.start + self.window_us, "n": n}
        if self.task == "regression":
            row |= {"sum_abs_error": float(sums[0]), "sum_sq_error": float(sums[1]),
                    "mae": float(sums[0]) / n if n else None,
                    "rmse": (float(sums[1]) / n) ** 0.5 if n else None,
                    "r2": _r2(n, sums), "n_late_labels": late, "cum_n": cum_n,
                    "cum_mae": float(cum[0]) / cum_n if cum_n else None,
                    "cum_rmse": (float(cum[1]) / cum_n) ** 0.5 if cum_n else None,
                    "cum_r2": _r2(cum_n, cum)}
            return row
        labels = np.concatenate([p[1] for p in win.parts]) if win.parts else np.array([], dtype=object)
        preds = np.concatenate([p[2] for p in win.parts]) if win.parts else np.array([], dtype=object)
        row |= {"n_correct": int(round(sums[0])), "n_classes": int(np.unique(labels).size) if n else 0,
                "sum_log_loss": float(sums[1]), "accuracy": float(sums[0]) / n if n else None,
                "macro_f1": macro_f1(labels, preds), "log_loss": float(sums[1]) / n if n else None,
                "n_late_labels": late, "cum_n": cum_n,
                "cum_accuracy": float(cum[0]) / cum_n if cum_n else None,
                "cum_log_loss": float(cum[1]) / cum_n if cum_n else None}
        return row


def _r2(n: int, sums: np.ndarray) -> float | None:
    """1 - SSE/SST from sums of (|e|, e², y, y²); ``None`` when undefined."""
    if n < 2:
        return None
    sst = float(sums[3]) - float(sums[2]) ** 2 / n
    if sst <= 1e-12 * max(1.0, abs(float(sums[3]))):
        return None
    return 1.0 - float(sums[1]) / sst
