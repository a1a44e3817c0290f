"""Windows of the lake for drift reports: parse them, choose them from the data, load their rows.

A window is a span of event time (``"2026-01-01T00:00/2026-01-02T00:00"``, or
``"2026-01-01/1d"``: durations follow :mod:`lake.durations`) or the rows added by a range
of Delta versions of ``events`` (``"3"``, ``"3-5"``). :func:`choose_windows` picks the last
window and the one before it from the data; :func:`load_window` reads a window's events
and joins the champion's ``score``/``prediction`` and, where it has arrived, the ``label``.
Split from :mod:`monitoring.evidently_report`, which re-exports these names.

>>> parse_window("2026-01-01/1d", by="time").end.isoformat()
'2026-01-02T00:00:00+00:00'
>>> parse_window("3-5", by="version")[3:]
(3, 5)
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

import polars as pl

from lake.durations import is_duration, parse_timedelta

By = Literal["time", "version"]
FIXED = ("event_id", "event_time", "key", "offset")
"""Columns of ``events`` that are not features."""
JOINED = ("score", "prediction", "label")
"""Columns joined from ``predictions`` and ``labels``."""


def parse_time(text: str | datetime) -> datetime:
    """An ISO 8601 time (naive ones taken as UTC) as an aware UTC datetime."""
    if isinstance(text, datetime):
        value = text
    else:
        try:
            value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"expected an ISO 8601 time such as 2026-01-01T00:00, got {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Window(NamedTuple):
    """A window of the lake: ``[start, end)`` of event time, or the rows added by versions ``first..last``."""

    label: str
    start: datetime | None
    end: datetime | None
    first: int | None
    last: int | None


def parse_window(spec: str | tuple[Any, Any], *, by: By) -> Window:
    """Parse a window: by time ``START/END`` (either side may be a duration from the other), by
    version ``N`` or ``A-B`` (rows added by those commits of ``events``)."""
    if by == "version":
        text = str(spec).strip()
        m = re.match(r"^(\d+)(?:\s*(?:-|\.\.)\s*(\d+))?$", text)
        if not m:
            raise ValueError(f"a version window must look like '3' or '3-5', got {spec!r}")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if last < first:
            raise ValueError(f"a version window must not end before it starts, got {spec!r}")
        return Window(f"v{first}" if first == last else f"v{first}-{last}", None, None, first, last)
    if by != "time":
        raise ValueError(f"by must be 'time' or 'version', got {by!r}")
    if isinstance(spec, tuple):
        a, b = spec
    else:
        a, sep, b = str(spec).partition("/")
        if not sep:
            raise ValueError(f"a time window must look like START/END (ISO times or a duration), got {spec!r}")
    da = parse_timedelta(a) if isinstance(a, str) and is_duration(a) else None
    db = parse_timedelta(b) if isinstance(b, str) and is_duration(b) else None
    if da and db:
        raise ValueError(f"a time window needs at least one time, got {spec!r}")
    start = parse_time(b) - da if da else parse_time(a)
    end = start + db if db else parse_time(b)
    if end <= start:
        raise ValueError(f"a time window must end after it starts, got {spec!r}")
    return Window(f"{start.isoformat()}/{end.isoformat()}", start, end, None, None)


AUTO_DURATIONS = ("1h", "6h", "1d", "7d", "28d")
"""Time windows ``window="auto"`` tries, shortest first."""
MIN_WINDOW_EVENTS = 1_000
"""Events each time window must hold for ``window="auto"`` to pick it."""
COUNT_WINDOW_EVENTS = 2_000
"""Events in each window when ``window="auto"`` falls back to counting events."""


@dataclass(frozen=True)
class WindowChoice:
    """The two windows of a last-vs-previous report, what they hold and why they were chosen.

    ``str(choice)`` is the line the drift flow prints: ``drift windows: last 2,000 events vs
    the 2,000 before (...)``.
    """

    reference: str
    current: str
    reference_rows: int
    current_rows: int
    description: str
    reason: str

    def __str__(self) -> str:
        return f"drift windows: {self.description} ({self.reason})"


def _iso(us: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))).isoformat()


def _event_times(lake: str) -> Any:
    """Event times of ``events`` as sorted int64 microseconds (a :class:`TableNotFoundError` without it)."""
    import numpy as np

    from lake.table import scan_table

    col = scan_table(lake, "events").select(pl.col("event_time").dt.epoch("us")).collect()
    return np.sort(col.get_column("event_time").drop_nulls().to_numpy())


def choose_windows(lake: str, window: str = "auto", *, events: int | None = None,
                   min_events: int = MIN_WINDOW_EVENTS, count: int = COUNT_WINDOW_EVENTS) -> WindowChoice:
    """The last window of ``events`` and the one before it, chosen before any report is built.

    ``window``: a duration (``"1d"``: the last day of event time against the day before; the
    grammar of :mod:`lake.durations`, where a bare number is seconds), or
    ``"auto"``: the shortest of :data:`AUTO_DURATIONS` whose two windows each hold
    ``min_events``, else the last ``count`` events against the ``count`` before (half the
    events each when there are fewer). ``events`` (with ``window="auto"``) counts instead:
    ``events=2000`` is the last 2,000 events against the 2,000 before. A window that cannot work (fewer than 2 events on
    either side) raises :class:`~lake.errors.UsageError` naming what the lake holds.
    """
    import numpy as np

    from lake.errors import UsageError
    from lake.summary import span_text

    text = str(window).strip()
    duration = None
    if events is not None and (isinstance(events, bool) or not isinstance(events, int) or text != "auto"):
        raise UsageError(f"events must be a whole number given with window 'auto', got events={events!r} "
                         f"and window={window!r}")
    if text != "auto":
        try:
            duration = parse_timedelta(text)
        except ValueError:
            raise UsageError(f"window must be 'auto' or a duration such as '1d' (a count of events is the "
                             f"separate events setting), got {window!r}") from None
    t = _event_times(lake)
    n = len(t)
    if n < 4:
        raise UsageError(f"{lake}: events holds {n} event(s); a drift report needs at least 2 in each window")
    end = int(t[-1]) + 1
    where = f"{n:,} events over {span_text(int(t[-1] - t[0]))}"

    def by_time(span: timedelta) -> tuple[int, int, int, int]:
        us = span // timedelta(microseconds=1)
        a, b = np.searchsorted(t, [end - 2 * us, end - us], side="left").tolist()
        return end - 2 * us, end - us, b - a, n - b

    def by_count(k: int, reason: str) -> WindowChoice:
        ref_start, cur_start = int(t[n - 2 * k]), int(t[n - k])
        a, b = np.searchsorted(t, [ref_start, cur_start], side="left").tolist()
        if b - a < 2 or n - b < 2:
            raise UsageError(f"{lake}: the last {2 * k:,} events share too few event times to split in two "
                             f"windows ({where})")
        return WindowChoice(f"{_iso(ref_start)}/{_iso(cur_start)}", f"{_iso(cur_start)}/{_iso(end)}", b - a, n - b,
                            f"last {n - b:,} events vs the {b - a:,} before", reason)

    if events is not None:
        k = events
        if k < 2 or 2 * k > n:
            raise UsageError(f"window {k:,} events: needs 2 to {n // 2:,} here ({where})")
        return by_count(k, "as asked")
    if duration is not None:
        ref_start, cur_start, ref_n, cur_n = by_time(duration)
        if ref_n < 2 or cur_n < 2:
            raise UsageError(f"window {text}: the last {text} of event time holds {cur_n} event(s) and the {text} "
                             f"before {ref_n} ({where}); a drift report needs at least 2 in each: try "
                             f"--window auto or a number of events (--window-events)")
        return WindowChoice(f"{_iso(ref_start)}/{_iso(cur_start)}", f"{_iso(cur_start)}/{_iso(end)}", ref_n, cur_n,
                            f"the last {text} of event time ({cur_n:,} events) vs the {text} before ({ref_n:,})",
                            "as asked")
    for name in AUTO_DURATIONS:
        ref_start, cur_start, ref_n, cur_n = by_time(parse_timedelta(name))
        if min(ref_n, cur_n) >= min_events:
            return WindowChoice(
                f"{_iso(ref_start)}/{_iso(cur_start)}", f"{_iso(cur_start)}/{_iso(end)}", ref_n, cur_n,
                f"the last {name} of event time ({cur_n:,} events) vs the {name} before ({ref_n:,})",
                f"auto: the shortest of {', '.join(AUTO_DURATIONS)} holding {min_events:,} events on each side")
    longest = AUTO_DURATIONS[-1]
    _, _, ref_n, cur_n = by_time(parse_timedelta(longest))
    return by_count(min(count, n // 2),
                    f"auto: {where}; the last {longest} holds {cur_n:,} and the {longest} before {ref_n:,}, "
                    f"fewer than {min_events:,}")


def last_vs_previous_windows(lake: str, window: str = "1d", *, events: int | None = None) -> tuple[str, str]:
    """``(reference, current)``: the windows :func:`choose_windows` picks for ``window`` (or ``events``)."""
    choice = choose_windows(lake, window, events=events)
    return choice.reference, choice.current


def check_windows(lake: str, reference: str | tuple[Any, Any], current: str | tuple[Any, Any], *,
                  by: By = "time") -> tuple[int, int]:
    """Rows in each window, checked before a report is built: a :class:`~lake.errors.UsageError` when
    either holds fewer than 2 events (or a window does not parse)."""
    from lake.entry import settings
    from lake.errors import UsageError
    from lake.table import table_version

    with settings():
        windows = (parse_window(reference, by=by), parse_window(current, by=by))
    version = table_version(lake, "events") if by == "time" else None
    counts = []
    for w in windows:
        rows = scan_window(lake, w, events_version=version).select(pl.len()).collect().item()
        if rows < 2:
            raise UsageError(f"window {w.label} holds {rows} event(s) in {lake}: need at least 2")
        counts.append(rows)
    return counts[0], counts[1]


# --------------------------------------------------------------------------------------- loading


def scan_window(lake: str, window: Window, *, events_version: int | None = None) -> pl.LazyFrame:
    """The ``events`` rows of ``window`` (all their columns), lazily."""
    from lake.errors import UsageError
    from lake.table import open_table, scan_table

    if window.first is None:
        return scan_table(lake, "events", version=events_version).filter(
            (pl.col("event_time") >= window.start) & (pl.col("event_time") < window.end))
    latest = open_table(lake, "events").version()
    if window.last > latest:
        raise UsageError(f"events has no version {window.last} (latest {latest})")
    rows = scan_table(lake, "events", version=window.last)
    if window.first > 0:
        before = scan_table(lake, "events", version=window.first - 1, columns=["event_id"])
        rows = rows.join(before, on="event_id", how="anti")
    return rows


def load_window(lake: str, window: Window, *, events_version: int | None = None) -> pl.DataFrame:
    """The ``events`` rows of ``window`` (all their columns)."""
    return scan_window(lake, window, events_version=events_version).collect()


def attach_predictions(lake: str, frame: pl.DataFrame, *, run_id: str | None = None, model: str | None = None,
                       features: bool = False) -> tuple[pl.DataFrame, str | None, str | None]:
    """Join each event's champion ``score`` and ``prediction`` (and its ``features`` map when asked).

    Without ``run_id`` the run with the most champion predictions among these events is used;
    ``model`` picks that model's rows instead of the champion's. Returns ``(frame, run_id, model)``.
    """
    from lake.table import exists, scan_table

    if frame.height == 0 or not exists(lake, "predictions"):
        return frame, run_id, model
    lo, hi = frame["event_time"].min(), frame["event_time"].max()
    cols = ["run_id", "event_id", "model", "role", "score", "prediction"] + (["features"] if features else [])
    scan = (scan_table(lake, "predictions")
            .filter((pl.col("event_time") >= lo) & (pl.col("event_time") <= hi))
            .filter(pl.col("model") == model if model else pl.col("role") == "champion"))
    if run_id:
        scan = scan.filter(pl.col("run_id") == run_id)
    preds = scan.select(cols).join(frame.select("event_id").lazy(), on="event_id", how="semi").collect()
    if preds.height == 0:
        return frame, run_id, model
    if run_id is None:
        run_id = (preds.group_by("run_id").len().sort(["len", "run_id"], descending=True)["run_id"][0])
        preds = preds.filter(pl.col("run_id") == run_id)
    preds = preds.unique("event_id", keep="first", maintain_order=True)
    models = preds["model"].unique().sort().to_list()
    used = model or ",".join(models)
    keep = ["event_id", "score", "prediction"] + (["features"] if features else [])
    return frame.join(preds.select(keep), on="event_id", how="left", maintain_order="left"), run_id, used


def attach_labels(lake: str, frame: pl.DataFrame, *, labels_version: int | None = None) -> pl.DataFrame:
    """Join the ``label`` of each event whose label has arrived (null otherwise)."""
    from lake.table import exists, scan_table

    if frame.height == 0 or not exists(lake, "labels"):
        return frame.with_columns(label=pl.lit(None, pl.Int64))
    labels = (scan_table(lake, "labels", version=labels_version).select("event_id", "label")
              .join(frame.select("event_id").lazy(), on="event_id", how="semi")
              .unique("event_id", keep="first").collect())
    return frame.join(labels, on="event_id", how="left", maintain_order="left")
