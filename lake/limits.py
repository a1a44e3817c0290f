"""Limits every way into the lake applies alike: ingest refuses what the dataflow would dead-letter."""

from __future__ import annotations

MAX_ID_LENGTH = 512
"""Characters in an event id (and, at ingest, in an entity key)."""

# Times outside 1900..2200 are almost surely unit mistakes (ms or ns taken for s), and
# readers cannot hold years past 9999: they are rejected, not stored.
MIN_TIME_US = -2_208_988_800_000_000
"""1900-01-01T00:00:00Z in microseconds since the Unix epoch."""
MAX_TIME_US = 7_258_118_400_000_000
"""2200-01-01T00:00:00Z in microseconds since the Unix epoch (excluded)."""
