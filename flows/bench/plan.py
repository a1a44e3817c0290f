"""The benchmark's defaults chosen from the data, and its time budget, settled before any strategy runs.

:func:`resolve_schedule` turns ``auto`` settings into values that work on the history at
hand and says why, one line each (the benchmark prints them):

- retrain cadence: the shortest of 1h, 6h, 1d, 7d, 28d giving 8 to 60 retrains, else
  every n/20 events (``retrain every 908 events (~2.4 years of event time; 20 retrains)``);
- sliding window: 4 retrain periods, in events where a time window would hold fewer than
  :data:`MIN_TRAIN_ROWS` labelled rows;
- static models: fitted at the first retrain point, or on the first :data:`MIN_TRAIN_ROWS`
  labels where that point holds fewer.

An explicit value wins; one that cannot work (no retrain at all, a window that keeps
almost nothing) raises :class:`~lake.errors.UsageError` before any work.

:func:`plan_budget` estimates every strategy's wall time from its schedule
(:func:`estimate_seconds`) and, when the sum exceeds the budget,
subsamples the periodic strategies (every k-th retrain, the same k for all of them), and
skips the most expensive strategies when even that does not fit. Each change comes with
its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from flows.bench.strategies import BenchConfig, StrategySpec, retrain_points
from flows.bench.stream import Stream, schedule
from lake.durations import duration_or_events, format_us, parse_duration_us, parse_optional_us
from lake.errors import UsageError
from lake.summary import span_text

CADENCES = ("1h", "6h", "1d", "7d", "28d")
"""Calendar cadences ``retrain_every="auto"`` tries, shortest first."""
RETRAINS = (8, 60)
"""A calendar cadence is taken when it gives this many retrains (inclusive)."""
AUTO_RETRAINS = 20
"""Otherwise the history is cut in this many retrain periods of equal event counts."""
MIN_TRAIN_ROWS = 1_000
"""Labelled rows a default training set should hold (at most a fifth of the labels)."""
REFUSE_TRAIN_ROWS = 50
"""An explicit sliding window expected to keep fewer labelled rows per fit is refused."""


# Cost model of :func:`estimate_seconds`: seconds per event, per fit and per training row, measured
# on this project's 2-core machine (flights and the daily weather history), one thread. Estimates,
# printed as such; the benchmark rescales them by what the strategies already run took.
_ONLINE_S = {"linear": 100e-6, "linear-hash": 60e-6, "naive-bayes": 120e-6, "tree": 400e-6, "forest": 3e-3}
_FIT_S = {"sk-logreg": (0.02, 20e-6), "sk-sgd": (0.01, 10e-6), "sk-ridge": (0.01, 10e-6), "hgb": (0.3, 30e-6),
          "river": (0.0, 40e-6)}
_PREDICT_S = {"sk-logreg": 3e-6, "sk-sgd": 3e-6, "sk-ridge": 3e-6, "hgb": 10e-6, "river": 30e-6}


def estimate_seconds(stream: Stream, spec: StrategySpec | str, config: BenchConfig) -> float:
    """Seconds the strategy is expected to compute, from its schedule and a per-learner cost model
    (a process start is the caller's to add).

    Online: a cost per event. Batch: per fit a fixed cost plus a cost per training row (the rows
    :func:`training_rows` would hand it, counted from the label clock, not fitted), plus scoring
    every event. A rough figure (the model's constants come from this project's machine); the
    benchmark rescales it by how long the strategies already run took against their estimates.
    """
    if isinstance(spec, str):
        spec = StrategySpec.parse(spec, task=stream.task)
    n = stream.n_events
    if spec.mode in ("online", "adwin-reset"):
        per = _ONLINE_S.get(spec.learner, 200e-6) * (1.2 if spec.mode == "adwin-reset" else 1.0)
        return n * per
    kind = "river" if spec.learner.startswith("river-") else spec.learner
    fixed, per_row = _FIT_S[kind]
    window = config.window() if spec.mode == "periodic-sliding" else None
    rows = 0
    points = retrain_points(stream, spec, config)
    for at in points.tolist():
        arrived = int(stream.labels_before[at])
        if window is None:
            k = arrived
        elif window[0] == "events":
            k = min(arrived, window[1])
        else:
            lo = int(np.searchsorted(stream.event_time, stream.event_time[at] - window[1], side="left"))
            k = max(0, arrived - int(stream.labels_before[lo]))
        rows += min(k, config.max_train_rows) if config.max_train_rows else k
    return len(points) * fixed + rows * per_row + n * _PREDICT_S[kind]


def n_retrains(stream: Stream, spec: StrategySpec | str, config: BenchConfig) -> int:
    """Fits a batch strategy makes over ``stream`` (0 for online ones)."""
    if isinstance(spec, str):
        spec = StrategySpec.parse(spec, task=stream.task)
    return 0 if spec.mode in ("online", "adwin-reset") else len(retrain_points(stream, spec, config))


@dataclass(frozen=True)
class Schedule:
    """Resolved cadence, sliding window and static training slice, with a line saying why for each.

    The cadence is ``retrain_every`` (a duration) or ``retrain_every_events``, the window
    ``sliding`` or ``sliding_events``: one of each pair is set."""

    retrain_every: str | None
    sliding: str | None
    static_rows: int | None
    lines: tuple[str, ...] = ()
    retrain_every_events: int | None = None
    sliding_events: int | None = None


def _span(stream: Stream) -> int:
    return int(stream.event_time[-1] - stream.event_time[0]) if stream.n_events else 0


def _rows_in(stream: Stream, window: tuple[str, int]) -> float:
    """Labelled rows a window of this size holds on average over the history."""
    n_labels = len(stream.arrival)
    kind, size = window
    if kind == "events":
        return min(size, stream.n_events) * n_labels / max(stream.n_events, 1)
    return n_labels * min(1.0, size / max(_span(stream), 1))


def resolve_schedule(stream: Stream, retrain_every: str | None = "auto", sliding: str | None = "auto",
                     static_rows: int | str | None = "auto", *, retrain_every_events: int | None = None,
                     sliding_events: int | None = None) -> Schedule:
    """Cadence, sliding window and static slice for ``stream`` (see module doc). A count of
    events (``retrain_every_events``, ``sliding_events``) replaces the matching ``auto``."""
    n, span = stream.n_events, _span(stream)
    n_labels = len(stream.arrival)
    target = max(1, min(MIN_TRAIN_ROWS, n_labels // 5))
    lines = []
    if retrain_every_events is not None and retrain_every == "auto":
        retrain_every = None
    if sliding_events is not None and sliding == "auto":
        sliding = None
    # cadence
    if retrain_every == "auto":
        for name in CADENCES:
            count = len(schedule(stream, ("us", parse_duration_us(name))))
            if RETRAINS[0] <= count <= RETRAINS[1]:
                retrain_every = name
                lines.append(f"retrain every {name} ({count:,} retrains over {span_text(span)}; auto: the "
                             f"shortest of {', '.join(CADENCES)} giving {RETRAINS[0]} to {RETRAINS[1]})")
                break
        else:
            k = max(1, n // AUTO_RETRAINS)
            count = len(schedule(stream, ("events", k)))
            weekly = len(schedule(stream, ("us", parse_duration_us("7d"))))
            lines.append(f"retrain every {k:,} events (~{span_text(span * k / max(n, 1))} of event time; "
                         f"{count:,} retrains; auto: weekly would mean {weekly:,} over {span_text(span)})")
            retrain_every, retrain_every_events = None, k
    else:
        try:
            every = duration_or_events("retrain_every", retrain_every, retrain_every_events)
        except ValueError as ex:
            raise UsageError(f"retrain_every: {ex}") from None
        asked = retrain_every if retrain_every_events is None else f"{retrain_every_events:,} events"
        count = len(schedule(stream, every))
        if count == 0:
            raise UsageError(f"retrain every {asked}: no retrain would happen in {n:,} events over "
                             f"{span_text(span)}; give a shorter period or fewer events (or 'auto')")
        lines.append(f"retrain every {asked} ({count:,} retrains; as asked)")
    kind, size = duration_or_events("retrain_every", retrain_every, retrain_every_events)
    # sliding window
    if sliding == "auto":
        candidate = ("us", 4 * size) if kind == "us" else ("events", 4 * size)
        expected = _rows_in(stream, candidate)
        if kind == "us" and expected < target:
            per_period = int(np.ceil(n * size / max(span, 1)))
            sliding, sliding_events = None, max(4 * per_period, target)
            lines.append(f"sliding window: the last {sliding_events:,} events (auto: 4 retrain periods, "
                         f"{format_us(4 * size)}, would keep ~{expected:,.0f} labelled rows)")
        else:
            if kind == "us":
                sliding, sliding_events = format_us(4 * size), None
            else:
                sliding, sliding_events = None, 4 * size
            shown = sliding if kind == "us" else f"the last {sliding_events:,} events"
            lines.append(f"sliding window: {shown} (~{expected:,.0f} labelled rows; auto: 4 retrain periods)")
    else:
        try:
            window = duration_or_events("sliding", sliding, sliding_events)
        except ValueError as ex:
            raise UsageError(f"sliding: {ex}") from None
        asked = sliding if sliding_events is None else f"{sliding_events:,} events"
        expected = _rows_in(stream, window)
        if expected < REFUSE_TRAIN_ROWS:
            raise UsageError(f"sliding window {asked} keeps ~{expected:,.0f} labelled rows per fit here "
                             f"({n:,} events over {span_text(span)}); give a longer window or a number of events "
                             f"(or 'auto')")
        lines.append(f"sliding window {asked} (~{expected:,.0f} labelled rows; as asked)")
    # static slice
    points = schedule(stream, (kind, size))
    at_first = int(stream.labels_before[points[0]]) if len(points) else 0
    if static_rows in ("auto", None):
        if static_rows is None or at_first >= target:
            static_rows = None
            lines.append(f"static models: fitted once at the first retrain point ({at_first:,} labels)")
        else:
            static_rows = target
            lines.append(f"static models: fitted once on the first {target:,} labels (auto: the first retrain "
                         f"point holds {at_first:,})")
    else:
        static_rows = int(static_rows)
        if not 1 <= static_rows < n_labels:
            raise UsageError(f"static_rows must be 1 to {n_labels - 1:,} (the labels of this history), got "
                             f"{static_rows:,}")
        lines.append(f"static models: fitted once on the first {static_rows:,} labels (as asked)")
    return Schedule(retrain_every, sliding, static_rows, tuple(lines), retrain_every_events, sliding_events)


def parse_budget(text: str | float | None) -> float | None:
    """Seconds of a budget (``"5m"``, ``"300"`` seconds, ``"none"``): ``None`` for no budget."""
    try:
        us = parse_optional_us(text)
    except ValueError:
        raise UsageError(f"budget must be a duration (30m), seconds (600) or none, got {text!r}") from None
    if us is None:
        return None
    seconds = us / 1e6
    if seconds <= 0:
        raise UsageError(f"budget must be > 0, got {text!r}")
    return seconds


@dataclass
class BudgetPlan:
    """Per strategy: the config it runs with (``None``: skipped), its estimate and why it was changed."""

    configs: dict[str, BenchConfig | None]
    estimates: dict[str, float]
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.estimates[k] for k, c in self.configs.items() if c is not None)


def _periodic(name: str) -> bool:
    return name.strip().partition("/")[0].startswith("periodic")


def plan_budget(stream: Stream, names: list[str], config: BenchConfig, budget_s: float | None, *,
                scale: float = 1.0, overhead_s: float = 0.0) -> BudgetPlan:
    """Fit ``names`` into ``budget_s`` seconds (see module doc); ``scale`` multiplies every estimate
    (measured over estimated so far), ``overhead_s`` is added per strategy (a process start)."""
    def est(name: str, cfg: BenchConfig) -> float:
        return scale * (estimate_seconds(stream, name, cfg) + overhead_s)

    full = {name: est(name, config) for name in names}
    plan = BudgetPlan(dict.fromkeys(names, config), dict(full))
    if budget_s is None or plan.total <= budget_s:
        return plan
    active = list(names)
    while active:
        periodic = [n for n in active if _periodic(n)]
        most = max((n_retrains(stream, n, config) for n in periodic), default=0)
        strides = [k for k in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
                   if most // k >= 2] or [1]
        for k in strides:
            cfg = replace(config, retrain_stride=k)
            estimates = {n: est(n, cfg if _periodic(n) else config) for n in active}
            if sum(estimates.values()) <= budget_s:
                break
        if sum(estimates.values()) <= budget_s:
            for n in names:
                plan.configs[n] = None if n not in active else (cfg if _periodic(n) else config)
                plan.estimates[n] = estimates.get(n, full[n])
                if n in active and _periodic(n) and k > 1:
                    plan.notes[n] = (f"subsampled: retrained at every {k}th scheduled point "
                                     f"({n_retrains(stream, n, cfg):,} of {n_retrains(stream, n, config):,} "
                                     f"retrains), as all strategies at full schedule were estimated at "
                                     f"{sum(full.values()):,.0f} s, over the budget of {budget_s:,.0f} s")
            return plan
        dropped = max(active, key=lambda n: estimates[n])
        active.remove(dropped)
        plan.configs[dropped] = None
        plan.notes[dropped] = (f"skipped: estimated {full[dropped]:,.0f} s "
                               f"({estimates[dropped]:,.0f} s even subsampled); the budget of {budget_s:,.0f} s "
                               f"cannot hold it with the others")
    return plan


def label_clock(lake: str, *, events_version: int | None = None, labels_version: int | None = None) -> Stream:
    """The history's event times and label clock only (no features): enough for
    :func:`resolve_schedule` to check settings before the benchmark featurizes anything.

    Events in event-time order, each label counted from its ``label_time`` on (labels of
    unknown events and second labels left out, as the replay does; ties between events and
    labels approximated).
    """
    import polars as pl

    from lake.table import read_table
    from lake.tasks import read_task

    events = (read_table(lake, "events", version=events_version, columns=["event_id", "event_time"])
              .unique("event_id", keep="first", maintain_order=True).sort("event_time"))
    labels = (read_table(lake, "labels", version=labels_version, columns=["event_id", "label", "label_time"])
              .unique("event_id", keep="first", maintain_order=True)
              .join(events.select("event_id").with_row_index("e"), on="event_id", how="inner")
              .sort("label_time"))
    t = events.get_column("event_time").dt.epoch("us").to_numpy()
    lt_sorted = labels.get_column("label_time").dt.epoch("us").to_numpy()
    arrival = labels.get_column("e").cast(pl.Int64).to_numpy()
    found = read_task(lake)
    task = found.name if found is not None else "binary"
    if task == "regression":
        y = np.full(len(t), np.nan)
        y[arrival] = labels.get_column("label").to_numpy()
    else:  # the label clock needs no classes: binary 0/1, multiclass 0 for every label
        y = np.full(len(t), -1, dtype=np.int8)
        y[arrival] = (labels.get_column("label").to_numpy() == 1).astype(np.int8) if task == "binary" else 0
    label_time = np.zeros(len(t), dtype=np.int64)
    label_time[arrival] = lt_sorted
    return Stream(event_time=t, y=y, label_time=label_time, arrival=arrival,
                  labels_before=np.searchsorted(lt_sorted, t, side="left").astype(np.int64),
                  indptr=np.zeros(len(t) + 1, dtype=np.int64), indices=np.zeros(0, dtype=np.int32),
                  values=np.zeros(0), names=[], info={"task": task})
