"""A daily multi-decade history to check that defaults chosen from the data hold on it.

    python -m flows.bench.daily --lake /tmp/weather [--stations 3] [--years 48] [--seed 42]
    python -m flows.benchmark --lake /tmp/weather          # every default chosen from the data, printed

One row per station per day while the station reports: 3 stations over 48 years, each
for its third of the span plus a year of overlap with its neighbours (18,992 events), a seasonal
weather payload (temperature, humidity, pressure, wind, station) and a label "rain
the next day" confirmed one day after the event. Seeded; nothing downloaded. The
stream where fixed defaults fitted to a year of flights fail: weekly retraining means
2,500 retrains, a 28-day window keeps 84 rows, a day holds 3 events.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from lake.entry import ArgumentParser, run_main

START = datetime(1978, 1, 1, tzinfo=UTC)


def daily_frames(*, stations: int = 3, years: int = 48, seed: int = 42, start: datetime = START) -> tuple:
    """``(events, labels)`` polars frames of the daily history (see module doc)."""
    import polars as pl

    if stations < 1 or years < 1:
        raise ValueError(f"stations and years must be >= 1, got {stations!r} and {years!r}")
    rng = random.Random(seed)
    days = int(round(years * 365.25))
    rows: dict[str, list] = {k: [] for k in ("event_id", "event_time", "key", "offset", "temperature", "humidity",
                                            "pressure", "wind", "station")}
    labels: dict[str, list] = {"event_id": [], "label": [], "label_time": []}
    offset = 0
    for s in range(stations):
        base = 8.0 + 4.0 * s
        pressure = 1013.0
        first = max(0, s * days // stations - 365)
        last = min(days, (s + 1) * days // stations + 365)
        for d in range(first, last):
            season = math.sin(2 * math.pi * (d % 365.25) / 365.25 - math.pi / 2)
            trend = 1.5 * d / days  # a slow warming: the concept moves over decades
            pressure = 1013.0 + 0.8 * (pressure - 1013.0) + rng.gauss(0.0, 5.0)
            temp = base + 9.0 * season + trend + rng.gauss(0.0, 3.0)
            humidity = min(100.0, max(10.0, 70.0 - 0.6 * (pressure - 1013.0) + rng.gauss(0.0, 10.0)))
            wind = abs(rng.gauss(4.0 - 0.1 * (pressure - 1013.0), 2.0))
            z = -1.6 + 0.05 * (humidity - 70.0) - 0.12 * (pressure - 1013.0) + 0.1 * wind - 0.02 * temp
            t = start + timedelta(days=d, hours=6 + s)
            eid = f"st{s}-{d:05d}"
            rows["event_id"].append(eid)
            rows["event_time"].append(t)
            rows["key"].append(f"station-{s}")
            rows["offset"].append(offset)
            rows["temperature"].append(round(temp, 2))
            rows["humidity"].append(round(humidity, 1))
            rows["pressure"].append(round(pressure, 1))
            rows["wind"].append(round(wind, 2))
            rows["station"].append(f"station-{s}")
            labels["event_id"].append(eid)
            labels["label"].append(int(rng.random() < 1.0 / (1.0 + math.exp(-z))))
            labels["label_time"].append(t + timedelta(days=1))
            offset += 1
    events = pl.DataFrame(rows).with_columns(pl.col("event_time").dt.cast_time_unit("us"))
    return events, pl.DataFrame(labels).with_columns(pl.col("label_time").dt.cast_time_unit("us"))


def write_daily_history(lake: str, **kwargs) -> int:
    """Append the history to ``lake``'s ``events`` and ``labels`` (idempotent); returns the events written."""
    from lake.table import append

    events, labels = daily_frames(**kwargs)
    written = append(lake, "events", events, writer_id="bench-daily", position=1)
    append(lake, "labels", labels, writer_id="bench-daily", position=1)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.bench.daily", description=__doc__.split("\n")[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--stations", type=int, default=3)
    parser.add_argument("--years", type=int, default=48)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    from lake.entry import settings

    with settings():
        n = write_daily_history(args.lake, stations=args.stations, years=args.years, seed=args.seed)
    print(f"{args.lake}: {n:,} events written ({args.stations} stations x {args.years} years, daily)")
    return 0


if __name__ == "__main__":
    run_main(main)
