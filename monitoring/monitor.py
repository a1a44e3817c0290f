"""Drift detectors watching a model's signals; alarms ready for ``drift_events``.

:class:`DriftMonitor` feeds named signals (the model's 0/1 ``error``, its
``log_loss``, its ``score``, ``feature:NAME`` values, the ``new_features`` rate)
to detectors (:mod:`monitoring.detectors`) and returns :class:`Alarm` s:

>>> monitor = DriftMonitor({"error": ["adwin"]})
>>> ys = [1] * 4000
>>> scores = [0.9] * 3000 + [0.1] * 1000  # the model turns wrong at item 3000
>>> alarms = monitor.update_many(ys=ys, scores=scores, event_ids=[f"e{i}" for i in range(4000)],
...                              event_times=list(range(4000)))
>>> [(a.detector, a.signal, a.event_id) for a in alarms][:1]
[('adwin', 'error', 'e3039')]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from monitoring.columns import feature_column
from monitoring.detectors import Detector, is_finite_number, is_int, parse_spec, split_specs

_EPS = 1e-15


class NewFeatureRate:
    """Share of the distinct features in each window of ``window`` items never seen before it.

    A feature-evolving stream (new tokens, new campaigns) shows up as a rising rate.
    Memory is the set of feature names seen (bounded by ``n_buckets`` on hashed streams).

    >>> nfr = NewFeatureRate(window=2)
    >>> [nfr.update({"a": 1, "b": 1}), nfr.update({"a": 1})]
    [None, 1.0]
    >>> [nfr.update({"a": 1}), nfr.update({"c": 1, "d": 1})]
    [None, 0.6666666666666666]
    """

    __slots__ = ("window", "_seen", "_current", "_n")

    def __init__(self, window: int = 1_000) -> None:
        if not is_int(window) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        self.window = window
        self._seen: set[str] = set()
        self._current: set[str] = set()
        self._n = 0

    def update(self, x: Mapping[str, Any]) -> float | None:
        """Add one item's features; returns the window's rate when this item closes it."""
        self._current.update(x)
        self._n += 1
        if self._n < self.window:
            return None
        return self._close()

    def update_many(self, xs: Sequence[Mapping[str, Any]]) -> list[tuple[int, float]]:
        """``(index of the item that closed the window, rate)`` for each window closed by ``xs``."""
        out = []
        i, n = 0, len(xs)
        while i < n:
            take = min(self.window - self._n, n - i)
            self._current.update(*xs[i:i + take])
            self._n += take
            i += take
            if self._n >= self.window:
                out.append((i - 1, self._close()))
        return out

    def _close(self) -> float:
        cur = self._current
        new = len(cur - self._seen)
        rate = new / len(cur) if cur else 0.0
        self._seen |= cur
        self._current = set()
        self._n = 0
        return rate


class Alarm(NamedTuple):
    """One detector alarm. ``position`` is 1-based in the stream the monitor was fed."""

    detector: str
    signal: str
    position: int
    event_id: str | None
    event_time: int  # microseconds since the Unix epoch, UTC
    seq: int | None = None


LABEL_SIGNALS = ("error", "log_loss")
"""Signals that need the label (``ys``) and the model's ``scores``."""


def _check_signal(signal: str) -> None:
    if signal in (*LABEL_SIGNALS, "score", "new_features"):
        return
    if signal.startswith("feature:") and len(signal) > len("feature:"):
        return
    raise ValueError(f"signal must be 'error', 'log_loss', 'score', 'new_features' or 'feature:NAME', got {signal!r}")


def parse_watch(text: str | Mapping[str, str | Sequence[str]]) -> dict[str, list[str]]:
    """``"error=adwin,page-hinkley; feature:age=kswin"`` → ``{signal: [detector spec, ...]}``.

    >>> parse_watch("error=adwin; feature:age=page-hinkley(mode=up, threshold=20)")
    {'error': ['adwin'], 'feature:age': ['page-hinkley(mode=up, threshold=20)']}
    """
    if isinstance(text, Mapping):
        return {s: split_specs(d) for s, d in text.items()}
    out: dict[str, list[str]] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        signal, eq, specs = part.partition("=")
        if not eq:
            raise ValueError(f"watch entries must look like SIGNAL=DETECTOR[,DETECTOR], got {part!r}")
        out.setdefault(signal.strip(), []).extend(split_specs(specs))
    return out


class DriftMonitor:
    """Drift detectors on named signals of one model; returns :class:`Alarm` s.

    ``watch`` maps a signal to detector specs (a dict, or a string for
    :func:`parse_watch`). Signals: ``error`` (0/1: the thresholded score disagrees
    with the label), ``log_loss``, ``score`` (no label needed: prediction drift),
    ``feature:NAME`` (a numeric feature; items without it are skipped) and
    ``new_features`` (:class:`NewFeatureRate` over ``new_feature_window`` items; its
    detectors see one value per window). Detectors for 0/1 input only
    (``ddm``, ``eddm``, ``hddm-*``, ``fhddm``) may watch ``error`` only.

    Feed it items in the order they happen (labels in arrival order for the label
    signals) with :meth:`update_many` (a batch) or :meth:`update_one`; both give the
    same alarms. ``kswin`` detectors without a seed get ``seed``.
    """

    def __init__(self, watch: str | Mapping[str, str | Sequence[str]] | None = None, *, threshold: float = 0.5,
                 new_feature_window: int = 1_000, seed: int = 42) -> None:
        watch = parse_watch(watch) if watch is not None else {"error": ["adwin"]}
        if not watch:
            raise ValueError(f"watch must name at least one signal, got {watch!r}")
        if not (is_finite_number(threshold) and 0 < threshold < 1):
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
        if not is_int(seed):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.threshold = float(threshold)
        self.detectors: dict[str, list[Detector]] = {}
        for signal, specs in watch.items():
            _check_signal(signal)
            if not specs:
                raise ValueError(f"signal {signal!r} has no detector")
            dets = []
            for spec in specs:
                name, params = parse_spec(spec)
                if name == "kswin" and params.get("seed") is None:
                    params["seed"] = seed
                det = Detector(name, **params)
                if det.binary and signal != "error":
                    raise ValueError(f"{name} takes 0/1 input only: it can watch 'error', not {signal!r}")
                dets.append(det)
            self.detectors[signal] = dets
        self.new_features = NewFeatureRate(new_feature_window) if "new_features" in self.detectors else None
        self.n_seen = 0

    @property
    def needs_labels(self) -> bool:
        return any(s in LABEL_SIGNALS for s in self.detectors)

    def update_one(self, *, y: Any = None, score: float | None = None, x: Mapping[str, Any] | None = None,
                   event_id: str | None = None, event_time: int = 0, seq: int | None = None) -> list[Alarm]:
        """One item; see :meth:`update_many`."""
        return self.update_many(
            ys=None if y is None else [y], scores=None if score is None else [score],
            xs=None if x is None else [x], event_ids=[event_id], event_times=[event_time],
            seqs=None if seq is None else [seq])

    def update_many(self, *, event_ids: Sequence[str | None], event_times: Sequence[int] | np.ndarray,
                    ys: Sequence[Any] | np.ndarray | None = None, scores: Sequence[float] | np.ndarray | None = None,
                    xs: Sequence[Mapping[str, Any]] | None = None,
                    seqs: Sequence[int] | np.ndarray | None = None) -> list[Alarm]:
        """Feed a batch of items; returns the alarms, in stream order within each detector.

        ``event_times`` are microseconds since the epoch (UTC). ``ys`` (0/1 or bools) and
        ``scores`` (the model's probability of the positive class) are needed by the
        label signals, ``scores`` by ``score``, ``xs`` (feature dicts) by the feature
        signals. ``seqs`` (optional) are copied into the alarms.
        """
        n = len(event_ids)
        if len(event_times) != n:
            raise ValueError(f"event_times has {len(event_times)} items, event_ids {n}")
        start = self.n_seen
        signals = self._signals(n, ys, scores, xs)
        alarms: list[Alarm] = []
        for signal, dets in self.detectors.items():
            if signal == "new_features":
                closed = self.new_features.update_many(xs)
                idx = [i for i, _ in closed]
                values = [r for _, r in closed]
                for det in dets:
                    alarms.extend(self._alarm(det, signal, idx[h], start, event_ids, event_times, seqs)
                                  for h in det.update_many(values))
                continue
            values = signals[signal]
            for det in dets:
                alarms.extend(self._alarm(det, signal, i, start, event_ids, event_times, seqs)
                              for i in det.update_many(values))
        self.n_seen = start + n
        return alarms

    @staticmethod
    def _alarm(det: Detector, signal: str, i: int, start: int, event_ids: Sequence[str | None],
               event_times: Sequence[int] | np.ndarray, seqs: Sequence[int] | np.ndarray | None) -> Alarm:
        return Alarm(det.label, signal, start + i + 1, event_ids[i], int(event_times[i]),
                     None if seqs is None else int(seqs[i]))

    def _signals(self, n: int, ys: Any, scores: Any, xs: Any) -> dict[str, np.ndarray]:
        wanted = self.detectors
        out: dict[str, np.ndarray] = {}
        needs = {s for s in wanted if s in LABEL_SIGNALS}
        if needs or "score" in wanted:
            if scores is None or len(scores) != n:
                raise ValueError(f"signals {sorted(wanted)} need {n} scores, got "
                                 f"{None if scores is None else len(scores)}")
            p = np.asarray(scores, dtype=np.float64)
            out["score"] = p
        if needs:
            if ys is None or len(ys) != n:
                raise ValueError(f"signals {sorted(needs)} need {n} labels (ys), got {None if ys is None else len(ys)}")
            y = np.asarray(ys, dtype=bool)
            out["error"] = ((p >= self.threshold) != y).astype(np.float64)
            out["log_loss"] = -np.log(np.clip(np.where(y, p, 1.0 - p), _EPS, 1.0))
        features = [s for s in wanted if s.startswith("feature:") or s == "new_features"]
        if features:
            if xs is None or len(xs) != n:
                got = None if xs is None else len(xs)
                raise ValueError(f"signals {features} need {n} feature dicts (xs), got {got}")
            for s in features:
                if s != "new_features":
                    out[s] = feature_column(xs, s[len("feature:"):])
        return out


def drift_events_table(alarms: Sequence[Alarm], *, run_id: str, shard: int = 0, model: str | None = None,
                       seq: int | None = None) -> pa.Table:
    """Alarms as rows of ``drift_events``; an alarm without its own ``seq`` gets ``seq``.

    >>> t = drift_events_table([Alarm("adwin", "error", 7, "e6", 1_000_000, 3)], run_id="r", model="linear")
    >>> t.num_rows, t.column("event_time")[0].as_py().isoformat()
    (1, '1970-01-01T00:00:01+00:00')
    """
    from lake.arrow import rows_to_arrow

    rows = []
    for a in alarms:
        s = a.seq if a.seq is not None else seq
        if s is None:
            raise ValueError(f"alarm {a!r} has no seq and none was given")
        rows.append((run_id, shard, s, a.detector, a.signal, model, a.position, a.event_id, a.event_time))
    return rows_to_arrow("drift_events", rows)
