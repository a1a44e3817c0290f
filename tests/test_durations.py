"""One duration grammar (lake.durations) behind every setting that is a length of time."""

from datetime import timedelta

import pytest

from flows.bench.plan import parse_budget
from flows.bench.strategies import BenchConfig
from lake.durations import format_us, parse_duration_us, parse_optional_us, parse_timedelta
from monitoring.evidently_report import parse_window
from monitoring.stream import MonitorConfig


@pytest.mark.parametrize(("text", "us"), [("250us", 250), ("100ms", 100_000), ("30s", 30_000_000),
                                          ("15m", 900_000_000), ("1.5h", 5_400_000_000), ("2d", 172_800_000_000),
                                          ("1w", 604_800_000_000), ("30", 30_000_000), (2, 2_000_000)])
def test_one_grammar_with_a_bare_number_as_seconds(text, us):
    assert parse_duration_us(text) == us
    assert parse_timedelta(text) == timedelta(microseconds=us)


def test_every_user_reads_the_same_grammar():
    # the drift report's time windows, the stream monitor and the benchmark budget all take ms and bare seconds
    assert parse_window("2026-01-01T00:00/90", by="time").end.isoformat() == "2026-01-01T00:01:30+00:00"
    assert parse_window("2026-01-01T00:00/500ms", by="time").end.isoformat() == "2026-01-01T00:00:00.500000+00:00"
    assert MonitorConfig.from_settings(stats_window="500ms", lateness="none").stats_window_us == 500_000
    assert parse_budget("1.5h") == 5_400.0 and parse_budget("600") == 600.0 and parse_budget("off") is None
    assert BenchConfig(retrain_every="250ms").cadence() == ("us", 250_000)


def test_switched_off_and_round_trip():
    assert [parse_optional_us(v) for v in (None, "", "none", "OFF")] == [None] * 4
    for us in (1_500_000, 5_400_000_000, 41 * 86_400_000_000, 7):
        assert parse_duration_us(format_us(us)) == us


def test_event_counts_are_not_durations():
    # a count of events is its own setting; a bare number in a duration setting is seconds
    assert BenchConfig(retrain_every="5000", sliding_events=900).cadence() == ("us", 5_000_000_000)
    assert BenchConfig(retrain_every_events=5000).cadence() == ("events", 5000)
    assert BenchConfig(sliding_events=900).window() == ("events", 900)
    with pytest.raises(ValueError, match="give sliding .* or sliding_events .*, not both"):
        BenchConfig(sliding="2h", sliding_events=900)
    with pytest.raises(ValueError, match="retrain_every must be a duration .* is retrain_every_events"):
        BenchConfig(retrain_every="weekly")
    with pytest.raises(ValueError, match="duration must look like '30s'"):
        parse_duration_us("7x")
