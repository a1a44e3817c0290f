"""Small seeded synthetic lakes for unit and dataflow tests."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import polars as pl

from lake.table import append

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def synthetic_frames(n: int, *, seed: int = 1, keys: str = "abcd", max_delay_s: int = 30,
                     label_share: float = 1.0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``n`` events one second apart with a learnable label and labels arriving 1..max_delay_s later."""
    rng = random.Random(seed)
    x1 = [rng.random() for _ in range(n)]
    x2 = [rng.gauss(0.0, 1.0) for _ in range(n)]
    events = pl.DataFrame({
        "event_id": [f"e{i:06d}" for i in range(n)],
        "event_time": [T0 + timedelta(seconds=i) for i in range(n)],
        "key": [rng.choice(keys) for _ in range(n)],
        "offset": list(range(n)),
        "x1": x1,
        "x2": x2,
        "colour": [rng.choice(["red", "green", "blue"]) for _ in range(n)],
    }).with_columns(pl.col("event_time").dt.cast_time_unit("us"))
    labelled = [i for i in range(n) if rng.random() < label_share]
    labels = pl.DataFrame({
        "event_id": [f"e{i:06d}" for i in labelled],
        "label": [int(x1[i] + 0.3 * x2[i] > 0.5) for i in labelled],
        "label_time": [T0 + timedelta(seconds=i + rng.randint(1, max_delay_s)) for i in labelled],
    }).with_columns(pl.col("label_time").dt.cast_time_unit("us"))
    return events, labels


def make_lake(lake: str, n: int = 2_000, **kwargs) -> str:
    events, labels = synthetic_frames(n, **kwargs)
    append(lake, "events", events, writer_id="synthetic", position=1)
    append(lake, "labels", labels, writer_id="synthetic", position=1)
    return lake
