"""Durations written as text: ``"15m"``, ``"1h"``, ``"1d"``, ``"30s"``, or a number of seconds.

The one duration parser of the packages above (settings, windows, time-to-live).
"""

from __future__ import annotations

import re

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
