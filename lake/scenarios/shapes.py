"""Stream shapes unlike the shipped scenarios, written as the CSV file a user would ingest.

Each shape is seeded and small (50 to ~15,000 rows; ``many-keys`` is 100,000 rows with a
key each) and checks that the commands' defaults hold on histories nobody tuned them
for. Every file has the same columns, so one ingest command line fits all::

    id,time,key,<payload...>,label,label_time

    python -m lake ingest --lake L --file shape.csv --id-col id --time-col time --key-col key \\
        --label-col label --label-time-col label_time

>>> sorted(SHAPES)[:3]
['all-one-class', 'categorical-only', 'daily-decades']
>>> rows = shape_rows("tiny", seed=1)
>>> len(rows), list(rows[0])
(50, ['id', 'time', 'key', 'colour', 'channel', 'amount', 'count', 'label', 'label_time'])
>>> {r["label"] for r in shape_rows("labels-never-come", n=20)}
{None}
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

T0 = datetime(2026, 1, 1, tzinfo=UTC)
INGEST_ARGS = ("--id-col", "id", "--time-col", "time", "--key-col", "key", "--label-col", "label",
               "--label-time-col", "label_time")
"""The ``python -m lake ingest`` options that read a shape's file."""

Row = dict[str, object]


@dataclass(frozen=True)
class Shape:
    """A stream shape: what it is, its default size, and its row generator ``(rng, n) -> rows``."""

    name: str
    description: str
    n: int
    rows: Callable[[random.Random, int], list[Row]]
    slow: bool = False
    one_class: bool = False
    """Every label is the same (regression: 1.0, multiclass: the class ``"1"``)."""


def _payload(rng: random.Random, *, numeric: bool = True, null_share: float = 0.0) -> dict[str, object]:
    """A small mixed payload: a float, an integer count, two categories (``null_share`` of each missing)."""
    def maybe(value: object) -> object:
        return None if null_share and rng.random() < null_share else value

    out: dict[str, object] = {"colour": maybe(rng.choice(["red", "green", "blue"])),
                              "channel": maybe(rng.choice(["web", "shop", "phone", "mail"]))}
    if numeric:
        out["amount"] = maybe(round(rng.lognormvariate(3.0, 1.0), 2))
        out["count"] = maybe(rng.randrange(0, 20))
    return out


def _signal(payload: dict[str, object]) -> float:
    """What the payload says about the label (so models have something to learn)."""
    z = -1.2 + (1.0 if payload.get("colour") == "red" else 0.0) + (0.6 if payload.get("channel") == "web" else 0.0)
    amount = payload.get("amount")
    if isinstance(amount, float):
        z += 0.3 * (math.log(amount) - 3.0)
    return z


def _label(rng: random.Random, payload: dict[str, object]) -> int:
    """A 0/1 label, 1 with probability sigmoid(signal)."""
    return int(rng.random() < 1.0 / (1.0 + math.exp(-_signal(payload))))


CLASSES = ("low", "mid", "high")
"""The classes of a shape's multiclass labels."""


def _task_label(rng: random.Random, payload: dict[str, object], task: str) -> object:
    """A label of ``task`` from the payload's signal: a float (signal x 10 plus noise) or a class."""
    noisy = _signal(payload) + rng.gauss(0.0, 1.0)
    if task == "regression":
        return round(10.0 * noisy, 3)
    return CLASSES[0] if noisy < -1.0 else CLASSES[1] if noisy < 0.0 else CLASSES[2]


def _stream(rng: random.Random, times: list[datetime], *, keys: Callable[[int], str],
            delay: Callable[[], timedelta] | None, numeric: bool = True, null_share: float = 0.0,
            one_class: int | None = None, label_share: float = 1.0) -> list[Row]:
    """Rows at ``times`` (sorted here): payload, key, and a label ``delay()`` later (``None``: no labels)."""
    rows = []
    for i, t in enumerate(sorted(times)):
        payload = _payload(rng, numeric=numeric, null_share=null_share)
        label = _label(rng, payload) if one_class is None else one_class
        labelled = delay is not None and rng.random() < label_share
        rows.append({"id": f"e{i:06d}", "time": t, "key": keys(i), **payload,
                     "label": label if labelled else None,
                     "label_time": t + delay() if labelled and delay is not None else None})
    return rows


def _uniform(rng: random.Random, n: int, *, days: float) -> list[datetime]:
    return [T0 + timedelta(seconds=rng.uniform(0, days * 86_400)) for _ in range(n)]


def _hours(rng: random.Random, lo: float, hi: float) -> Callable[[], timedelta]:
    return lambda: timedelta(hours=rng.uniform(lo, hi))


def _daily_decades(rng: random.Random, n: int) -> list[Row]:
    start = datetime(1986, 1, 1, 6, tzinfo=UTC)
    return _stream(rng, [start + timedelta(days=d) for d in range(n)], keys=lambda i: f"site{i % 3}",
                   delay=lambda: timedelta(days=1))


def _bursts(rng: random.Random, n: int) -> list[Row]:
    times: list[datetime] = []
    t = T0
    while len(times) < n:  # bursts of 50-300 events 0.1-5 ms apart, a few minutes between bursts
        t += timedelta(seconds=rng.uniform(60, 600))
        u = t
        for _ in range(min(n - len(times), rng.randrange(50, 300))):
            u += timedelta(microseconds=rng.randrange(100, 5_000))
            times.append(u)
    return _stream(rng, times, keys=lambda i: f"dev{rng.randrange(20)}",
                   delay=lambda: timedelta(milliseconds=rng.uniform(5, 2_000)))


def _month_gaps(rng: random.Random, n: int) -> list[Row]:
    times: list[datetime] = []
    t = T0
    while len(times) < n:  # a day of activity, then silence for 1 to 6 months
        times += [t + timedelta(seconds=rng.uniform(0, 86_400)) for _ in range(min(n - len(times), 150))]
        t += timedelta(days=rng.uniform(30, 180))
    return _stream(rng, times, keys=lambda i: f"shop{rng.randrange(10)}", delay=_hours(rng, 1, 12))


def _long_delays(rng: random.Random, n: int) -> list[Row]:
    # the history spans 10 days; every label comes 20 to 60 days after its event
    return _stream(rng, _uniform(rng, n, days=10), keys=lambda i: f"k{rng.randrange(50)}",
                   delay=lambda: timedelta(days=rng.uniform(20, 60)))


def _many_keys(rng: random.Random, n: int) -> list[Row]:
    return _stream(rng, _uniform(rng, n, days=30), keys=lambda i: f"user{i:06d}", delay=_hours(rng, 1, 12))


def _with(**kwargs) -> Callable[[random.Random, int], list[Row]]:
    def rows(rng: random.Random, n: int) -> list[Row]:
        days = kwargs.get("days", 60)
        keys = kwargs.get("keys", 50)
        rest = {k: v for k, v in kwargs.items() if k not in ("days", "keys")}
        return _stream(rng, _uniform(rng, n, days=days), keys=lambda i: f"k{rng.randrange(keys)}",
                       delay=None if rest.pop("no_labels", False) else _hours(rng, 1, 12), **rest)
    return rows


SHAPES: dict[str, Shape] = {s.name: s for s in (
    Shape("daily-decades", "one row a day for 40 years, 3 sites, label a day later", 14_610, _daily_decades),
    Shape("subsecond-bursts", "bursts of 50-300 events 0.1-5 ms apart, minutes apart; labels 5 ms-2 s later",
          5_000, _bursts),
    Shape("one-key", "every event of one key, 60 days", 3_000, _with(keys=1)),
    Shape("many-keys", "100,000 keys, one event each, 30 days", 100_000, _many_keys, slow=True),
    Shape("tiny", "50 rows over 60 days", 50, _with()),
    Shape("month-gaps", "a day of activity, then 1-6 months of silence, over ~7 years", 2_000, _month_gaps),
    Shape("long-delays", "10 days of events, labels 20-60 days later (after the history ends)", 2_000,
          _long_delays),
    Shape("labels-never-come", "no label at all (the label columns are empty)", 2_000, _with(no_labels=True)),
    Shape("some-labels-never-come", "40% of the events never get a label", 2_000, _with(label_share=0.6)),
    Shape("all-one-class", "every label is 1", 2_000, _with(one_class=1), one_class=True),
    Shape("categorical-only", "payload of two category columns, no number", 2_000, _with(numeric=False)),
    Shape("nulls-everywhere", "30% of every payload value missing, a third of the labels missing", 2_000,
          _with(null_share=0.3, label_share=0.67)),
)}
"""Shape name -> :class:`Shape`."""


TASKS = ("binary", "multiclass", "regression")


def shape_rows(name: str, *, seed: int = 42, n: int | None = None, task: str = "binary") -> list[Row]:
    """The rows of shape ``name`` (``n`` overrides its size), seeded.

    ``task`` picks the labels (:mod:`lake.tasks`): 0/1 (``binary``), a float that the payload
    explains in part (``regression``) or one of :data:`CLASSES` (``multiclass``); the same
    events, keys and label times for every task.

    >>> [r["label"] for r in shape_rows("tiny", n=3, task="regression")]
    [-4.031, -10.543, -13.373]
    >>> sorted({r["label"] for r in shape_rows("tiny", task="multiclass")})
    ['high', 'low', 'mid']
    """
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; known: {', '.join(SHAPES)}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    shape = SHAPES[name]
    size = shape.n if n is None else n
    if size < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    rows = shape.rows(random.Random(f"{name}/{seed}"), size)
    if task != "binary":
        rng = random.Random(f"{name}/{seed}/{task}")
        for row in rows:
            if row["label"] is not None:
                row["label"] = ((1.0 if task == "regression" else "1") if shape.one_class
                                else _task_label(rng, row, task))
    return rows


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return str(value)


def write_shape(name: str, path: str | Path, *, seed: int = 42, n: int | None = None,
                task: str = "binary") -> Path:
    """Write shape ``name`` with ``task``'s labels as a CSV file at ``path`` (see the module doc for its
    columns); returns the path."""
    rows = shape_rows(name, seed=seed, n=n, task=task)
    columns = ["id", "time", "key", "amount", "count", "colour", "channel", "label", "label_time"]
    present = [c for c in columns if any(c in r for r in rows)]
    out = Path(path)
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(present)
        for r in rows:
            writer.writerow([_cell(r.get(c)) for c in present])
    return out
