"""The benchmark's history: one pinned replay, featurized once, with the label clock of every event.

:func:`build_stream` replays a pinned Delta version of ``events`` + ``labels``
in the dataflow's order (:class:`dataflows.replay.ReplayPlan`: events by
``(event_time, offset)``, each label at its ``label_time``, events first at
equal times) and featurizes every event once with :class:`KeyedFeaturizer`
exactly as the dataflow's learner does (``transform_one`` then ``learn_one``
per event; ``learn_label`` when its label arrives). Every strategy then reads
the same features and the same label arrival order from the :class:`Stream`.

The one way a strategy gets training labels is :func:`training_rows`, which
returns only labels that arrived before the event being served, and reports
them to a :class:`LabelAudit` that raises :class:`LeakError` if a label is used
before its ``label_time``.
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dataflows.replay import Pin

NO_TIME = np.iinfo(np.int64).min
_DAY_US = 86_400_000_000
_ARRAYS = ("event_time", "y", "label_time", "arrival", "labels_before", "indptr", "indices", "values")


class LeakError(AssertionError):
    """A strategy used a label before its ``label_time``."""


@dataclass
class Stream:
    """The pinned history as arrays, in event order (index ``e`` = the e-th event replayed).

    ``y[e]`` is the label and ``label_time[e]`` its time (:data:`NO_TIME` without one). The
    label per task (``info["task"]``, :mod:`lake.tasks`): binary 0/1 (-1 without one);
    multiclass the index of the class in ``info["classes"]`` (the classes as text, sorted; -1
    without one); regression the value (NaN without one). ``arrival`` lists labelled events in label arrival order;
    ``labels_before[e]`` is how many labels had arrived when event ``e`` was served.
    Features are a CSR matrix in the featurizer's key order (``names[indices[j]]``).
    """

    event_time: np.ndarray
    y: np.ndarray
    label_time: np.ndarray
    arrival: np.ndarray
    labels_before: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    names: list[str]
    event_ids: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_events(self) -> int:
        return len(self.event_time)

    @property
    def task(self) -> str:
        """The lake's task: ``binary`` (default), ``multiclass`` or ``regression``."""
        return self.info.get("task", "binary")

    @property
    def classes(self) -> list[str]:
        """Multiclass: the classes as text, in the order of ``y``'s indices; else empty."""
        return list(self.info.get("classes", []))

    @property
    def scored(self) -> np.ndarray:
        """Indices of the events every strategy is scored on: those with a label."""
        if self.task == "regression":
            return np.flatnonzero(~np.isnan(self.y))
        return np.flatnonzero(np.asarray(self.y) >= 0)

    @cached_property
    def class_index(self) -> dict[str, int]:
        """Multiclass: column of each class (as text) in a row of scores."""
        return {c: i for i, c in enumerate(self.classes)}

    def label(self, e: int) -> Any:
        """The label of event ``e`` as a River model learns it: True/False, the class, the value."""
        if self.task == "regression":
            return float(self.y[e])
        if self.task == "multiclass":
            return self.info["classes"][int(self.y[e])]
        return bool(self.y[e] == 1)

    def new_scores(self, n: int) -> np.ndarray:
        """An array for ``n`` events' scores: P(positive) (binary; 0.5), the value (regression; 0.0),
        or one row of class probabilities per event (multiclass; uniform)."""
        if self.task == "multiclass":
            k = max(len(self.classes), 1)
            return np.full((n, k), 1.0 / k)
        return np.full(n, 0.0 if self.task == "regression" else 0.5)

    def answer(self, model: Any, x: dict[str, float]) -> Any:
        """A River model's score for ``x`` in the stream's terms (see :meth:`new_scores`)."""
        if self.task == "regression":
            v = model.predict_one(x)
            return 0.0 if v is None else float(v)
        p = model.predict_proba_one(x)
        if self.task == "binary":
            return p.get(True, 0.0) if p else 0.5
        index = self.class_index
        row = np.zeros(len(index))
        for c, v in (p or {}).items():
            i = index.get(str(c))
            if i is not None:
                row[i] = v
        total = row.sum()
        return row / total if total > 0 else np.full(len(index), 1.0 / max(len(index), 1))

    def row(self, e: int) -> dict[str, float]:
        """Features of event ``e`` as the dict the dataflow's models saw."""
        a, b = self.indptr[e], self.indptr[e + 1]
        names = self.names
        return dict(zip([names[i] for i in self.indices[a:b].tolist()], self.values[a:b].tolist(), strict=True))

    def rows(self, events: np.ndarray, *, chunk: int = 8192) -> Iterator[list[dict[str, float]]]:
        """Feature dicts of ``events``, ``chunk`` at a time (bounded memory)."""
        for k in range(0, len(events), chunk):
            yield [self.row(e) for e in events[k:k + chunk].tolist()]

    def entries(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(indptr, positions)`` of the CSR entries of ``rows``, in their order."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = np.asarray(self.indptr)[rows]
        lengths = np.asarray(self.indptr)[rows + 1] - starts
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        positions = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1], dtype=np.int64)
        return indptr, positions

    def csr(self, rows: np.ndarray) -> Any:
        """Features of ``rows`` as a ``scipy.sparse.csr_matrix`` (one column per name, sorted indices).

        Built from the stream's arrays for just those rows: a learner holds the matrix of
        its training window, never one of the whole history.
        """
        from scipy import sparse

        indptr, pos = self.entries(rows)
        m = sparse.csr_matrix((np.asarray(self.values)[pos], np.asarray(self.indices)[pos], indptr),
                              shape=(len(indptr) - 1, len(self.names)))
        m.sort_indices()
        return m

    def next_event_after_label(self, k: int) -> int:
        """Index of the first event served after the ``k``-th label (0-based) arrived."""
        return int(np.searchsorted(self.labels_before, k, side="right"))

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the arrays (``.npy``, memory-mappable) and names to ``folder``; event ids are left out."""
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        for name in _ARRAYS:
            np.save(path / f"{name}.npy", getattr(self, name))
        (path / "meta.json").write_text(json.dumps({"names": self.names, "info": self.info}))
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Stream:
        path = Path(folder)
        meta = json.loads((path / "meta.json").read_text())
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
        return cls(**arrays, names=meta["names"], info=meta["info"])


def build_stream(lake: str | os.PathLike[str], pin: Pin, *, featurizer: dict[str, Any] | None = None,
                 batch_items: int = 100_000) -> Stream:
    """Replay ``pin`` once, featurizing every event the way the dataflow does (see module doc).

    Labels of events the pinned ``events`` do not hold, and second labels of an
    event, are counted in ``info`` and not used (the dataflow dead-letters them).
    """
    from dataflows.features import KeyedFeaturizer
    from dataflows.items import EVENT
    from dataflows.replay import ReplayPlan
    from lake.tasks import read_task

    found = read_task(lake)
    task = found.name if found is not None else "binary"
    plan = ReplayPlan(lake, pin=pin)
    f = KeyedFeaturizer(**(featurizer or {}))
    transform, observe, learn_label = f.transform_one, f.learn_one, f.learn_label
    vocab: dict[str, int] = {}
    names: list[str] = []
    indptr = array("q", [0])
    indices = array("i")
    values = array("d")
    event_ids: list[str] = []
    times = array("q")
    keys: list[str] = []
    index: dict[str, int] = {}
    labels_before = array("q")
    arrival = array("q")
    y: dict[int, Any] = {}
    label_time: dict[int, int] = {}
    unknown = duplicate = duplicate_events = 0
    for start in range(0, len(plan), batch_items):
        for item in plan.batch(start, start + batch_items).items:
            if item[1] == EVENT:
                _, _, event_id, t, key, payload = item
                if event_id in index:
                    duplicate_events += 1
                    continue
                x = transform(payload, key=key, event_time_us=t)
                observe(payload, key=key, event_time_us=t)
                e = len(event_ids)
                index[event_id] = e
                event_ids.append(event_id)
                keys.append(key)
                times.append(t)
                labels_before.append(len(arrival))
                for name, value in x.items():
                    j = vocab.get(name)
                    if j is None:
                        j = vocab[name] = len(names)
                        names.append(name)
                    indices.append(j)
                    values.append(value)
                indptr.append(len(indices))
            else:
                e = index.get(item[2])
                if e is None:
                    unknown += 1
                    continue
                if e in y:
                    duplicate += 1
                    continue
                y[e] = int(item[3] == 1) if task == "binary" else item[3]
                label_time[e] = item[4]
                arrival.append(e)
                learn_label(key=keys[e], y=item[3] == 1)
    n = len(event_ids)
    lt = np.full(n, NO_TIME, dtype=np.int64)
    arr = np.frombuffer(arrival, dtype=np.int64).copy()
    classes: list[str] = []
    if task == "regression":
        y_arr = np.full(n, np.nan)
        y_arr[arr] = [float(y[e]) for e in arr.tolist()]
    elif task == "multiclass":
        classes = sorted({str(v) for v in y.values()})
        code = {c: i for i, c in enumerate(classes)}
        y_arr = np.full(n, -1, dtype=np.int32)
        y_arr[arr] = [code[str(y[e])] for e in arr.tolist()]
    else:
        y_arr = np.full(n, -1, dtype=np.int8)
        y_arr[arr] = [y[e] for e in arr.tolist()]
    lt[arr] = [label_time[e] for e in arr.tolist()]
    info = {"events_version": pin.events, "labels_version": pin.labels, "n_events": n, "n_labels": len(arr),
            "unknown_labels": unknown, "duplicate_labels": duplicate, "duplicate_events": duplicate_events,
            "n_features": len(names), "featurizer": featurizer or {}, "task": task, "classes": classes}
    return Stream(
        event_time=np.frombuffer(times, dtype=np.int64).copy(), y=y_arr, label_time=lt, arrival=arr,
        labels_before=np.frombuffer(labels_before, dtype=np.int64).copy(),
        indptr=np.frombuffer(indptr, dtype=np.int64).copy(), indices=np.frombuffer(indices, dtype=np.int32).copy(),
        values=np.frombuffer(values, dtype=np.float64).copy(), names=names, event_ids=event_ids, info=info,
    )


@dataclass
class Training:
    """One training set handed to a strategy (kept for the fairness tests)."""

    at_event: int
    at_time_us: int
    n_rows: int
    max_label_time_us: int
    rows: np.ndarray | None = None
    cpu_s: float | None = None  # CPU seconds of the fit


class LabelAudit:
    """Watches what one strategy learns from and when it serves; raises :class:`LeakError` on a leak.

    ``learned(now, label_times)``: the strategy trains, at time ``now``, on labels with these
    ``label_time``s. ``serve(t)``: it predicts an event of time ``t``; every label it has
    learned from must have ``label_time <= t``.
    """

    def __init__(self, strategy: str, *, keep_rows: bool = False) -> None:
        self.strategy = strategy
        self.keep_rows = keep_rows
        self.seen_us = NO_TIME
        self.trainings: list[Training] = []
        self.n_served = 0

    def learned(self, now_us: int, label_times: np.ndarray, *, at_event: int = -1,
                rows: np.ndarray | None = None) -> None:
        if len(label_times) == 0:
            return
        latest = int(np.max(label_times))
        if latest == NO_TIME or (label_times == NO_TIME).any():
            raise LeakError(f"{self.strategy}: trained on an event that has no label (at event {at_event})")
        if latest > now_us:
            raise LeakError(f"{self.strategy}: at {now_us} trained on a label of label_time {latest} "
                            f"(at event {at_event})")
        self.seen_us = max(self.seen_us, latest)
        if at_event >= 0:
            self.trainings.append(Training(at_event, int(now_us), len(label_times), latest,
                                           None if not self.keep_rows or rows is None else np.array(rows)))

    def serve(self, event_time_us: int, n: int = 1) -> None:
        if self.seen_us > event_time_us:
            raise LeakError(f"{self.strategy}: serves an event of time {event_time_us} with a model that "
                            f"learned a label of label_time {self.seen_us}")
        self.n_served += n

    def reset(self) -> None:
        """The strategy threw its model away (what it learned before no longer counts)."""
        self.seen_us = NO_TIME


def training_rows(stream: Stream, at: int, *, window: tuple[str, int] | None = None,
                  max_rows: int | None = None, audit: LabelAudit | None = None) -> np.ndarray:
    """Labelled events a model trained just before serving event ``at`` may learn from, in event order.

    Only labels that had arrived when event ``at`` was served (``label_time`` at or
    before its ``event_time``). ``window``: ``("events", K)`` keeps events among the
    last K before ``at``; ``("us", W)`` those of event time within W before it;
    ``None`` keeps all (expanding). ``max_rows`` keeps the newest rows only.
    """
    arrived = np.sort(stream.arrival[: stream.labels_before[at]])
    if window is not None:
        kind, size = window
        if kind == "events":
            arrived = arrived[arrived >= at - size]
        else:
            now = stream.event_time[at] if at < stream.n_events else stream.event_time[-1]
            arrived = arrived[stream.event_time[arrived] >= now - size]
    if max_rows is not None and len(arrived) > max_rows:
        arrived = arrived[-max_rows:]
    if audit is not None:
        now = int(stream.event_time[at]) if at < stream.n_events else int(stream.event_time[-1])
        audit.learned(now, stream.label_time[arrived], at_event=at, rows=arrived)
    return arrived


def schedule(stream: Stream, every: tuple[str, int]) -> np.ndarray:
    """Event indices at which a periodic strategy retrains (before serving that event).

    Every K events, or at the first event of each calendar period of length W
    counted from the first event's time (weeks from the first event's day, etc.).
    """
    n = stream.n_events
    kind, size = every
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if kind == "events":
        return np.arange(size, n, size, dtype=np.int64)
    t = stream.event_time
    origin = int(t[0]) - int(t[0]) % min(size, _DAY_US)
    bounds = np.arange(origin + size, int(t[-1]) + 1, size, dtype=np.int64)
    points = np.searchsorted(t, bounds, side="left")
    points = np.unique(points[(points > 0) & (points < n)])
    return points.astype(np.int64)
