"""A live run's "auto" time scales come from the first messages on its topic (dataflows.live_defaults):
printed, recorded with the run, kept by a resumed run, and what its window rows are written with."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
from bytewax.testing import run_main

from dataflows.defaults import History
from dataflows.live_defaults import MIN_EVENTS, Sample, choose_live, sample_of
from dataflows.online import build_live_flow
from dataflows.produce import frame_messages, send
from dataflows.settings import LIVE_AUTO
from lake.durations import parse_duration_us
from lake.runs import recorded_run
from lake.table import read_table
from tests.test_kafka import mock_cluster

T0 = datetime(1990, 1, 1, tzinfo=UTC)
S, H, D = 1_000_000, 3_600_000_000, 86_400_000_000


def _text(chosen):
    return {name: c.text for name, c in chosen.items()}


def _messages(n: int, step: timedelta, delay: timedelta, *, labelled=lambda i: True, start: int = 0):
    out = []
    for i in range(start, start + n):
        t = T0 + i * step
        out.append((t, 0, {"kind": "event", "event_id": f"e{i}", "event_time": t.isoformat(), "key": "k",
                           "x": float(i % 7)}))
        if labelled(i):
            out.append((t + delay, 1, {"kind": "label", "event_id": f"e{i}", "label": i % 2,
                                       "label_time": (t + delay).isoformat()}))
    return [m for _, _, m in sorted(out, key=lambda m: (m[0], m[1]))]


def test_daily_rows_lengthen_every_window_and_their_labels_set_the_ttl():
    sample = sample_of(_messages(1_000, timedelta(days=1), timedelta(hours=20)))
    chosen = choose_live(sample)
    assert _text(chosen) == {"window": "730d", "grace": "20h", "label_ttl": "20h", "stats_window": "91d"}
    assert "median 91 events per window" in chosen["stats_window"].reason


def test_a_busy_stream_keeps_the_live_windows_they_are_a_floor():
    # 20 events a second: the replay's rule would take 10 s statistics windows; a live run writes no more rows
    # than one a minute, and its labels (2 s late, all seen) set the TTL
    sample = sample_of(_messages(4_000, timedelta(milliseconds=50), timedelta(seconds=2)))
    chosen = choose_live(sample)
    assert _text(chosen) == {"window": LIVE_AUTO["window"], "grace": "2s", "label_ttl": "2s",
                             "stats_window": LIVE_AUTO["stats_window"]}


def test_the_windows_are_a_shards_the_events_spread_over_the_partitions():
    msgs = _messages(2_000, timedelta(hours=1), timedelta(hours=1))
    one = choose_live(sample_of(msgs))
    # the same stream over four partitions (by event): each shard's windows hold a quarter as many
    parts = [int(m["event_id"][1:]) % 4 for m in msgs]
    four = choose_live(sample_of(msgs, parts))
    assert (one["stats_window"].text, four["stats_window"].text) == ("7d", "14d")
    assert "median 84 events per window of a shard" in four["stats_window"].reason
    assert (one["window"].text, four["window"].text) == ("30d", "91d")


def test_label_delays_a_sample_cannot_show_keep_the_live_default():
    # a third of the events have no label by the sample's end: late ones, or ones that never come; either
    # way a TTL from the labels seen would drop the late ones, so the default stays, and says why
    sample = sample_of(_messages(1_000, timedelta(hours=1), timedelta(hours=2), labelled=lambda i: i % 3 != 0))
    chosen = choose_live(sample)
    assert chosen["label_ttl"].text == LIVE_AUTO["label_ttl"] and chosen["grace"].text == LIVE_AUTO["grace"]
    assert "33% of the events" in chosen["label_ttl"].reason and "live default" in chosen["label_ttl"].reason
    # labels that all come, 30 days after events of 10 days: seen once the sample holds them, and taken
    late = _messages(300, timedelta(hours=1), timedelta(days=30))
    assert choose_live(sample_of(late[:300]))["label_ttl"].text == LIVE_AUTO["label_ttl"]  # (events only so far)
    assert choose_live(sample_of(late))["label_ttl"].text == "30d"


def test_too_few_events_take_the_live_defaults_and_given_values_are_left_alone():
    chosen = choose_live(sample_of(_messages(MIN_EVENTS - 1, timedelta(days=1), timedelta(hours=1))),
                         label_ttl="3h")
    assert _text(chosen) == {k: LIVE_AUTO[k] for k in ("window", "grace", "stats_window")}
    assert f"{MIN_EVENTS - 1} events on the topic at start" in chosen["window"].reason
    assert _text(choose_live(None, stats_window=None)) == {k: LIVE_AUTO[k] for k in ("window", "grace", "label_ttl")}


def test_a_sample_leaves_out_what_the_source_would_dead_letter():
    good = _messages(300, timedelta(hours=1), timedelta(hours=1))
    bad = [b"not json", b"[1, 2]", {"kind": "other", "event_id": "x"}, {"kind": "event", "event_id": "y",
           "event_time": "not a time"}, {"kind": "label", "event_id": "e1", "label_time": None}, 7]
    sample = sample_of([*bad, *good, *[json.dumps(m).encode() for m in good[:10]]])  # (repeats count once)
    assert sample.events == 300 and sample.history.label_delays_us.size == 300
    assert set(sample.history.label_delays_us.tolist()) == {H}
    # a label before its event: a delay of zero for the TTL, not a negative one
    h = History.of(event_times_us=[i * H for i in range(300)], label_delays_us=[-S] * 300)
    assert choose_live(Sample(h, messages=600, partitions=1))["label_ttl"].text == "1s"


def _frames(n: int, *, start: datetime = T0, step: timedelta = timedelta(days=1)):
    """``n`` events ``step`` apart from ``start`` with labels 20 hours later, as the lake lays them out."""
    times = [start + i * step for i in range(n)]
    ids = [f"{start:%Y%m%d}-{i}" for i in range(n)]
    events = pl.DataFrame({"event_id": ids, "event_time": times, "key": ["site"] * n,
                           "x1": [float(i % 11) for i in range(n)]})
    labels = pl.DataFrame({"event_id": ids, "label": [i % 2 for i in range(n)],
                           "label_time": [t + timedelta(hours=20) for t in times]})
    return (events.with_columns(pl.col("event_time").dt.cast_time_unit("us")),
            labels.with_columns(pl.col("label_time").dt.cast_time_unit("us")))


def test_a_live_run_on_daily_rows_writes_its_windows_at_the_chosen_length_and_a_restart_keeps_them(
        tmp_path, capsys):
    lake = str(tmp_path / "lake")
    with mock_cluster() as brokers:
        send(brokers, "daily", frame_messages(*_frames(600)))
        run_main(build_live_flow(lake, "linear", brokers=brokers, topic="daily", stop_at_end=True, record=False,
                                 flush_seconds=0.5))
        said = capsys.readouterr().err
        assert "(1,200 messages read from the start of 4 partition(s): 600 events)" in said
        assert "stats_window: 91d (median 91 events per window" in said and "label_ttl: 20h (99.9th" in said
        run_id = read_table(lake, "predictions").get_column("run_id").unique().to_list()
        assert len(run_id) == 1 and run_id[0].startswith("live-")
        recorded = json.loads(recorded_run(lake, run_id[0])["settings"])
        assert {k: recorded[k] for k in ("window", "grace", "label_ttl", "stats_window")} == {
            "window": "730d", "grace": "20h", "label_ttl": "20h", "stats_window": "91d"}
        stats = read_table(lake, "window_stats").filter(pl.col("run_id") == run_id[0])
        assert stats.height >= 5
        lengths = (stats.get_column("window_end") - stats.get_column("window_start")).dt.total_microseconds()
        assert set(lengths.to_list()) == {parse_duration_us("91d")}
        # the topic goes on at another pace (a minute apart); a restart is the same run with the same scales
        send(brokers, "daily", frame_messages(*_frames(2_000, start=T0 + timedelta(days=700),
                                                       step=timedelta(minutes=1))))
        build_live_flow(lake, "linear", brokers=brokers, topic="daily", stop_at_end=True, record=False,
                        flush_seconds=0.5)
        said = capsys.readouterr().err
        assert f"live run {run_id[0]} on daily: time scales as its first start chose them" in said
        assert "  stats_window: 91d" in said


def test_a_run_id_first_used_with_given_scales_is_not_resumed_with_chosen_ones(tmp_path):
    import pytest

    from lake.errors import RunIdentityError

    lake = str(tmp_path / "lake")
    with mock_cluster() as brokers:
        send(brokers, "daily", frame_messages(*_frames(300)))
        build_live_flow(lake, "linear", brokers=brokers, topic="daily", run_id="mine", stats_window=None,
                        label_ttl="3d", record=False)
        with pytest.raises(RunIdentityError, match="stats_window None -> 'auto'"):
            build_live_flow(lake, "linear", brokers=brokers, topic="daily", run_id="mine", label_ttl="3d",
                            record=False)
        # the same given values resume it, with what its first start chose for the others
        build_live_flow(lake, "linear", brokers=brokers, topic="daily", run_id="mine", stats_window=None,
                        label_ttl="3d", record=False)
    recorded = json.loads(recorded_run(lake, "mine")["settings"])
    assert recorded["stats_window"] is None and recorded["label_ttl"] == "3d" and recorded["window"] == "730d"
