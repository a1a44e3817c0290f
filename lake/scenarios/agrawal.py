"""``agrawal-drift``: River's Agrawal generator with abrupt concept drifts at known positions.

The concept (Agrawal's ``classification_function``) switches 0 → 2 → 4 → 6 at a
quarter, half and three quarters of the stream; consecutive concepts agree on
about half of the points, so every switch is a real drift. Each switch is exact:
event ``position`` is the first one drawn from the new concept's generator, and
these positions are returned as ``drifts`` (the ``scenario_drifts`` rows).

Why not ``ConceptDriftStream(width=1)``: in river 0.26.1 it computes
``math.exp(-4 * (t - position) / width)``, which overflows (``OverflowError``)
for any position beyond ~177 with ``width=1``; and even where it works the
switch is random within a few events. Concatenating the generators gives the
same abrupt drift with an exactly known position.

Labels arrive 1 to 120 seconds after their event (seeded).

>>> frames = agrawal_drift(n=400, seed=1)
>>> frames.events.height, frames.labels.height
(400, 400)
>>> frames.drifts.get_column("position").to_list()
[100, 200, 300]
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa

from lake.scenarios.frames import ScenarioFrames
from lake.schemas import SCENARIO_DRIFTS

NAME = "agrawal-drift"
CONCEPTS = (0, 2, 4, 6)
"""Classification functions in stream order."""
FEATURES = ("salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan")
START = datetime(2026, 1, 1, tzinfo=UTC)
MAX_DELAY_S = 120


def agrawal_drift(*, n: int = 100_000, seed: int = 42) -> ScenarioFrames:
    """``n`` Agrawal events, drifting at ``n/4``, ``n/2``, ``3n/4``; same seed, same frames.

    ``event_time`` is 2026-01-01T00:00:00Z plus ``i`` seconds; the key is ``"all"``.
    """
    if not isinstance(n, int) or n < 4 * len(CONCEPTS):
        raise ValueError(f"n must be an integer >= {4 * len(CONCEPTS)}, got {n!r}")
    if not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    from river.datasets import synth  # imported here: river takes seconds to import

    positions = [n * k // len(CONCEPTS) for k in range(1, len(CONCEPTS))]
    bounds = [0, *positions, n]
    columns: dict[str, list] = {f: [] for f in FEATURES}
    ys: list[int] = []
    for k, concept in enumerate(CONCEPTS):
        generator = synth.Agrawal(classification_function=concept, seed=seed + k)
        for x, y in generator.take(bounds[k + 1] - bounds[k]):
            ys.append(int(y))
            for f in FEATURES:
                columns[f].append(x[f])

    ids = [f"agrawal-{i:08d}" for i in range(n)]
    start_us = (START - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    times = pl.Series("event_time", [start_us + i * 1_000_000 for i in range(n)], dtype=pl.Int64)
    times = times.cast(pl.Datetime("us", "UTC"))
    events = pl.DataFrame({"event_id": ids, "event_time": times, "key": ["all"] * n})
    events = events.hstack(
        pl.DataFrame(
            columns,
            schema={
                f: pl.Float64 if f in ("salary", "commission", "hvalue", "loan") else pl.Int64
                for f in FEATURES
            },
        )
    )
    rng = random.Random(seed)
    delays = pl.Series([rng.randint(1, MAX_DELAY_S) * 1_000_000 for _ in range(n)], dtype=pl.Int64)
    labels = pl.DataFrame(
        {
            "event_id": ids,
            "label": pl.Series(ys, dtype=pl.Int64),
            "label_time": times + delays.cast(pl.Duration("us")),
        }
    )

    rows = [
        {
            "scenario": NAME,
            "position": position,
            "event_id": ids[position],
            "event_time": START + timedelta(seconds=position),
            "description": f"Agrawal classification_function {before} -> {after} (abrupt)",
        }
        for position, before, after in zip(positions, CONCEPTS[:-1], CONCEPTS[1:], strict=True)
    ]
    drifts = pl.from_arrow(pa.Table.from_pylist(rows, schema=SCENARIO_DRIFTS))
    return ScenarioFrames(events, labels, drifts)
