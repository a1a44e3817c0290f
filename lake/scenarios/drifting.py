"""Synthetic drift scenarios beyond yes/no, with their drift positions in ``scenario_drifts``.

- ``friedman-drift`` (regression): River's ``FriedmanDrift`` with global recurring
  abrupt drift (``drift_type="gra"``): the target function changes at ``n/3`` (the
  important features swap) and the first concept comes back at ``2n/3``. Labels are
  floats (the Friedman #1 function plus unit Gaussian noise).
- ``rbf-drift`` (multiclass): River's ``RandomRBF`` with 4 classes, a new set of
  centroids (another ``seed_model``) at each quarter of the stream: four concepts,
  three abrupt drifts at exactly known positions. Labels are the class names
  ``"c0"`` to ``"c3"``.

Events are one second apart from 2026-01-01T00:00:00Z (key ``"all"``); labels arrive
1 to 120 seconds after their event (seeded), as in ``agrawal-drift``.

>>> frames = friedman_drift(n=300, seed=1)
>>> frames.task, frames.labels.get_column("label").dtype, frames.drifts.get_column("position").to_list()
('regression', Float64, [100, 200])
>>> frames = rbf_drift(n=400, seed=1)
>>> frames.task, sorted(frames.labels.get_column("label").unique()), frames.drifts.height
('multiclass', ['c0', 'c1', 'c2', 'c3'], 3)
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pyarrow as pa

from lake.scenarios.frames import ScenarioFrames
from lake.schemas import SCENARIO_DRIFTS

START = datetime(2026, 1, 1, tzinfo=UTC)
MAX_DELAY_S = 120
RBF_CLASSES = 4
RBF_FEATURES = 10
RBF_CONCEPTS = 4


def friedman_drift(*, n: int = 100_000, seed: int = 42) -> ScenarioFrames:
    """``n`` Friedman events (regression), drifting at ``n/3`` and back at ``2n/3``."""
    _check(n, seed, minimum=30)
    from river.datasets import synth  # imported here: river takes seconds to import

    positions = [n // 3, 2 * n // 3]
    stream = synth.FriedmanDrift(drift_type="gra", position=tuple(positions), seed=seed)
    samples = ((x, float(y)) for x, y in stream.take(n))
    drifts = [(positions[0], "Friedman: important features swapped (global abrupt)"),
              (positions[1], "Friedman: the first concept comes back (global abrupt)")]
    return _frames("friedman-drift", samples, n=n, seed=seed, drifts=drifts, task="regression",
                   label_type=pl.Float64)


def rbf_drift(*, n: int = 100_000, seed: int = 42) -> ScenarioFrames:
    """``n`` RandomRBF events of 4 classes, with new centroids at ``n/4``, ``n/2``, ``3n/4``."""
    _check(n, seed, minimum=4 * RBF_CONCEPTS)
    from river.datasets import synth

    positions = [n * k // RBF_CONCEPTS for k in range(1, RBF_CONCEPTS)]
    bounds = [0, *positions, n]

    def samples() -> Iterable[tuple[dict[Any, float], str]]:
        for k in range(RBF_CONCEPTS):
            generator = synth.RandomRBF(seed_model=seed + k, seed_sample=seed + 1000 + k,
                                        n_classes=RBF_CLASSES, n_features=RBF_FEATURES)
            for x, y in generator.take(bounds[k + 1] - bounds[k]):
                yield x, f"c{y}"

    drifts = [(p, f"RandomRBF centroids seed_model {seed + k} -> {seed + k + 1} (abrupt)")
              for k, p in enumerate(positions)]
    return _frames("rbf-drift", samples(), n=n, seed=seed, drifts=drifts, task="multiclass",
                   label_type=pl.String)


def _check(n: Any, seed: Any, *, minimum: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise ValueError(f"n must be an integer >= {minimum}, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")


def _frames(name: str, samples: Iterable[tuple[dict[Any, float], Any]], *, n: int, seed: int,
            drifts: list[tuple[int, str]], task: str, label_type: pl.DataType) -> ScenarioFrames:
    """Events (features ``x0``, ``x1``, ...), labels and ``scenario_drifts`` rows of a generated stream."""
    columns: dict[str, list[float]] = {}
    ys: list[Any] = []
    for i, (x, y) in enumerate(samples):
        for k, v in x.items():
            columns.setdefault(f"x{k}", [0.0] * i).append(float(v))
        ys.append(y)
    ids = [f"{name}-{i:08d}" for i in range(n)]
    start_us = (START - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    times = pl.Series("event_time", [start_us + i * 1_000_000 for i in range(n)], dtype=pl.Int64)
    times = times.cast(pl.Datetime("us", "UTC"))
    events = pl.DataFrame({"event_id": ids, "event_time": times, "key": ["all"] * n})
    events = events.hstack(pl.DataFrame(columns, schema=dict.fromkeys(columns, pl.Float64)))
    rng = random.Random(seed)
    delays = pl.Series([rng.randint(1, MAX_DELAY_S) * 1_000_000 for _ in range(n)], dtype=pl.Int64)
    labels = pl.DataFrame({"event_id": ids, "label": pl.Series(ys, dtype=label_type),
                           "label_time": times + delays.cast(pl.Duration("us"))})
    rows = [{"scenario": name, "position": p, "event_id": ids[p], "event_time": START + timedelta(seconds=p),
             "description": what} for p, what in drifts]
    return ScenarioFrames(events, labels, pl.from_arrow(pa.Table.from_pylist(rows, schema=SCENARIO_DRIFTS)),
                          task=task)
