"""Durations: one grammar for every setting that is a length of time.

A duration is a number with a unit, ``us``, ``ms``, ``s``, ``m``, ``h``, ``d`` or ``w``
(``"250ms"``, ``"15m"``, ``"1.5h"``, ``"7d"``); a bare number is seconds. Counts of events
are never durations: settings that count events are separate integer settings
(``sliding`` and ``sliding_events``; :func:`duration_or_events` reads such a pair).
"""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d|w)?\s*$")
_UNIT_US = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000,
            "d": 86_400_000_000, "w": 604_800_000_000}


def parse_duration_us(text: str | int | float) -> int:
    """Microseconds in ``"15m"``, ``"1h"``, ``"1d"``, ``"30s"`` or a number of seconds.

    >>> parse_duration_us("15m"), parse_duration_us(2)
    (900000000, 2000000)
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        return int(text * 1_000_000)
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"duration must look like '30s', '15m', '1h' or '1d', got {text!r}")
    return int(float(m.group(1)) * _UNIT_US[m.group(2) or "s"])


ROUND_DURATIONS: tuple[str, ...] = (
    "1ms", "10ms", "100ms", "1s", "2s", "5s", "10s", "15s", "30s", "1m", "2m", "5m", "10m", "15m", "30m",
    "1h", "2h", "3h", "6h", "12h", "1d", "2d", "7d", "14d", "30d", "91d", "182d", "365d", "730d", "1826d",
    "3652d",
)
"""Candidate window lengths, shortest first (the data-derived windows are chosen among them)."""


OFF = ("", "none", "off")
"""Spellings of "no duration" for settings that may be switched off (a label TTL, a stats window)."""


def parse_optional_us(text: str | int | float | None) -> int | None:
    """:func:`parse_duration_us`, or ``None`` for ``None``, ``""``, ``"none"`` or ``"off"``.

    >>> parse_optional_us("none"), parse_optional_us("2s")
    (None, 2000000)
    """
    if text is None or (isinstance(text, str) and text.strip().lower() in OFF):
        return None
    return parse_duration_us(text)


def parse_timedelta(text: str | int | float) -> timedelta:
    """:func:`parse_duration_us` as a :class:`~datetime.timedelta`.

    >>> parse_timedelta("12h"), parse_timedelta("250ms")
    (datetime.timedelta(seconds=43200), datetime.timedelta(microseconds=250000))
    """
    return timedelta(microseconds=parse_duration_us(text))


def is_duration(text: object) -> bool:
    """Whether ``text`` parses as a duration (a time such as ``"2026-01-01"`` does not).

    >>> is_duration("1d"), is_duration("30"), is_duration("2026-01-01"), is_duration("auto")
    (True, True, False, False)
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        return False
    try:
        parse_duration_us(text)
    except ValueError:
        return False
    return True


UNITS: tuple[tuple[str, int], ...] = (("d", _UNIT_US["d"]), ("h", _UNIT_US["h"]), ("m", _UNIT_US["m"]),
                                      ("s", _UNIT_US["s"]), ("ms", _UNIT_US["ms"]))
"""Units :func:`format_us` writes, largest first (weeks are written as days)."""


def format_us(us: int) -> str:
    """A duration in the largest unit that divides it (``"41d"``, ``"90m"``, ``"1500ms"``): text
    :func:`parse_duration_us` reads back to ``us``.

    >>> format_us(41 * 86_400_000_000), format_us(5_400_000_000), format_us(1_500_000)
    ('41d', '90m', '1500ms')
    >>> parse_duration_us(format_us(1_500_000)) == 1_500_000
    True
    """
    for unit, size in UNITS:
        if us % size == 0:
            return f"{us // size}{unit}"
    return f"{us}us"


def duration_or_events(name: str, duration: str | int | float | None, events: int | None, *,
                       default: str | None = None) -> tuple[str, int]:
    """One of two settings that say how long something lasts: ``name`` (a duration) or
    ``name_events`` (a count of events). ``("events", K)`` when ``events`` is given, else
    ``("us", N)`` for ``duration`` (or ``default`` when that is ``None``); giving both fails.

    >>> duration_or_events("sliding", None, 5000), duration_or_events("sliding", "2h", None)
    (('events', 5000), ('us', 7200000000))
    >>> duration_or_events("sliding", "2h", 5000)
    Traceback (most recent call last):
    ...
    ValueError: give sliding (a duration) or sliding_events (a number of events), not both: got '2h' and 5000
    """
    if events is not None:
        if duration is not None:
            raise ValueError(f"give {name} (a duration) or {name}_events (a number of events), not both: "
                             f"got {duration!r} and {events!r}")
        if isinstance(events, bool) or not isinstance(events, int) or events < 1:
            raise ValueError(f"{name}_events must be a whole number >= 1, got {events!r}")
        return ("events", events)
    text = default if duration is None else duration
    if text is None:
        raise ValueError(f"give {name} (a duration) or {name}_events (a number of events)")
    try:
        us = parse_duration_us(text)
    except ValueError:
        raise ValueError(f"{name} must be a duration such as '12h' or '7d' (a number of events is "
                         f"{name}_events), got {text!r}") from None
    if us <= 0:
        raise ValueError(f"{name} must be > 0, got {text!r}")
    return ("us", us)
