"""Monitoring inside the running dataflow: window statistics, late events, anomaly scores,
label-free detectors and drift actions, written to the lake by the real pipeline."""

from __future__ import annotations

import polars as pl
import pytest
from bytewax.testing import run_main

from dataflows.bench.monitoring_latency import LiveGenerator
from dataflows.items import EVENT, Batch
from dataflows.learner import RunConfig, ShardLearner
from dataflows.online import make_flow, run_replay
from dataflows.sinks import URGENT_TABLES, DeltaSink
from dataflows.validate import validate_batch
from lake.errors import UsageError
from lake.ingest import ingest_scenario
from lake.table import open_table, read_table
from monitoring.stream import MonitorConfig

S = 1_000_000


def test_monitor_config_is_validated_with_clear_errors():
    with pytest.raises(ValueError, match="watched per model"):
        MonitorConfig(watch="error=adwin")
    with pytest.raises(ValueError, match="unknown anomaly scorer 'lof'"):
        MonitorConfig(anomaly="lof")
    with pytest.raises(ValueError, match="drift_action must be one of none, reset, retrain"):
        MonitorConfig(drift_action="panic")
    with pytest.raises(ValueError, match="unknown drift detector .nope."):
        MonitorConfig(watch="feature:x=nope")
    with pytest.raises(ValueError, match="stats_window_us"):
        MonitorConfig(stats_window_us=0)
    cfg = MonitorConfig.from_settings(stats_window="15s", lateness="2s", anomaly="none", watch="score=adwin")
    assert (cfg.stats_window_us, cfg.lateness_us, cfg.anomaly) == (15 * S, 2 * S, None)


def _events(seq0, t0, n, step_s=1.0):
    return [(seq0 + i, EVENT, f"e{seq0 + i}", int((t0 + i * step_s) * S), "k", {"x": float(i % 5)})
            for i in range(n)]


def test_window_statistics_close_on_the_watermark_and_late_events_are_kept():
    cfg = RunConfig(run_id="r", monitor=MonitorConfig(stats_window_us=10 * S, lateness_us=2 * S, anomaly=None))
    learner = ShardLearner(cfg, shard=0)
    out = learner.process(validate_batch(Batch(0, _events(0, 0, 10))))  # t = 0..9 s: window [0, 10) open
    assert "window_stats" not in out.tables
    # t = 12 s moves the watermark to 10 s and closes [0, 10); an event at t = 5 s then is late
    late = (11, EVENT, "late", 5 * S, "k", {"x": 100.0})
    out = learner.process(validate_batch(Batch(0, [(10, EVENT, "e10", 12 * S, "k", {"x": 1.0}), late])))
    stats = out.tables["window_stats"].to_pylist()
    assert [(r["n"], dict(r["mean"])["x"], r["seq"]) for r in stats] == [(10, 2.0, 10)]
    lates = out.tables["late_events"].to_pylist()
    assert [(r["event_id"], r["seq"], r["window_start"].timestamp()) for r in lates] == [("late", 11, 0.0)]
    # the late event is still predicted (never dropped) and counted in the next window's row
    assert "late" in out.tables["predictions"].column("event_id").to_pylist()
    final = learner.finish().tables["window_stats"].to_pylist()
    assert [(r["n"], r["n_late"]) for r in final] == [(1, 1)]


def test_anomaly_scores_sit_beside_predictions_and_outliers_are_recorded():
    cfg = RunConfig(run_id="r", models=("linear", "tree"),
                    monitor=MonitorConfig(stats_window_us=None, anomaly="zscore(block=50, threshold=6.0)"))
    learner = ShardLearner(cfg, shard=0)
    items = _events(0, 0, 300)
    items.append((300, EVENT, "odd", 300 * S, "k", {"x": 1_000.0}))
    out = learner.process(validate_batch(Batch(0, items)))
    preds = pl.from_arrow(out.tables["predictions"].arrow())
    per_model = preds.group_by("model").agg(pl.col("anomaly_score").null_count().alias("warming"))
    assert sorted(per_model.rows()) == [("linear", 50), ("tree", 50)]  # the first block has no reference yet
    odd = preds.filter(pl.col("event_id") == "odd")["anomaly_score"].to_list()
    assert odd[0] == odd[1] and odd[0] > 100
    assert out.tables["anomalies"].column("event_id").to_pylist() == ["odd"]


@pytest.mark.parametrize("action", ["reset", "retrain"])
def test_a_drift_alarm_triggers_the_configured_action_and_it_is_recorded(tmp_path, action):
    lake = str(tmp_path / "lake")
    ingest_scenario(lake, "agrawal-drift", n=8_000, seed=3)
    run_id = run_replay(lake, "linear,naive-bayes", recovery=False, window="1h", drift_action=action,
                        action_window=1_000, stats_window=None, anomaly=None)
    acts = read_table(lake, "drift_actions").filter(pl.col("run_id") == run_id).sort("seq")
    assert acts.height >= 1 and set(acts["action"]) == {action}
    alarms = read_table(lake, "drift_events").filter(pl.col("run_id") == run_id)
    for row in acts.iter_rows(named=True):  # every action answers an alarm of that model on that label
        assert alarms.filter((pl.col("model") == row["model"]) & (pl.col("event_id") == row["event_id"])).height
        assert row["model_version"].endswith(f"-{action}")
        assert (row["trained_on"] > 0) == (action == "retrain")
        assert row["trained_on"] <= 1_000
    # actions on one model are at least action_window learns apart, and none before its first action_window
    for _, group in acts.group_by("model"):
        gaps = group["n_learned_before"].diff().drop_nulls()
        assert (gaps >= 1_000).all() and group["n_learned_before"].min() >= 1_000
    # the replaced model is checkpointed, and predictions after the action carry its version
    ckpts = read_table(lake, "checkpoints").filter(pl.col("run_id") == run_id)
    assert set(acts["model_version"]) <= set(ckpts["checkpoint_id"])
    first = acts.row(0, named=True)
    later = read_table(lake, "predictions").filter(
        (pl.col("run_id") == run_id) & (pl.col("model") == first["model"]) & (pl.col("seq") > first["seq"])).sort("seq")
    assert later["model_version"][0] == first["model_version"]


def test_replay_writes_monitoring_tables_once(synthetic_lake):
    run_id = run_replay(synthetic_lake, "linear", recovery=False, stats_window="1h", watch="new_features=adwin")
    events = read_table(synthetic_lake, "events").height
    stats = read_table(synthetic_lake, "window_stats").filter(pl.col("run_id") == run_id)
    late = read_table(synthetic_lake, "late_events") if stats["n_late"].sum() else None
    assert stats["n"].sum() + (0 if late is None else late.height) == events
    assert stats["window_start"].is_unique().all()
    preds = read_table(synthetic_lake, "predictions").filter(pl.col("run_id") == run_id)
    assert preds["anomaly_score"].null_count() < preds.height
    again = run_replay(synthetic_lake, "linear", recovery=False, stats_window="1h", watch="new_features=adwin")
    assert again == run_id
    assert read_table(synthetic_lake, "window_stats").filter(pl.col("run_id") == run_id).height == stats.height


def test_live_generator_windows_and_feature_alarm_reach_the_lake(tmp_path):
    lake = str(tmp_path / "lake")
    config = RunConfig(run_id="live", window_us=60 * S, grace_us=5 * S, label_ttl_us=60 * S,
                       monitor=MonitorConfig(stats_window_us=S, anomaly=None, watch="feature:x0=adwin"))
    source = LiveGenerator(rate=2_000, duration_s=4.0, label_delay_s=0.5, shift_at_s=2.0)
    sink = DeltaSink(lake, run_id="live", flush_seconds=60.0, flush_rows=10**6, urgent_tables=URGENT_TABLES)
    run_main(make_flow(source, sink, config))
    stats = read_table(lake, "window_stats").sort("window_start")
    assert stats.height in (4, 5)  # 4 s of wall clock, windows aligned to whole seconds
    assert stats["n"].sum() == 8_000
    means = [dict(m)["x0"] for m in stats["mean"].to_list()]
    assert means[0] < 1.0 and means[-1] > 2.0  # the shift of x0 at 2 s
    alarms = read_table(lake, "drift_events").filter(pl.col("signal") == "feature:x0")
    assert alarms.height >= 1
    shift_us = stats["window_start"].dt.epoch("us")[0]
    assert alarms["event_time"].dt.epoch("us").min() > shift_us
    assert read_table(lake, "learn_log").height > 0
    # monitoring answers were committed as they came; the bulk tables once, at the end
    assert open_table(lake, "window_stats").version() >= 2
    assert open_table(lake, "predictions").version() == 0


def test_the_command_line_takes_the_monitoring_settings(synthetic_lake, capsys):
    from flows.cli import replay_main as main

    assert main(["--lake", synthetic_lake, "--no-recovery", "--stats-window", "30m", "--anomaly", "none",
                 "--watch", "score=adwin", "--drift-action", "reset", "--action-window", "500"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    stats = read_table(synthetic_lake, "window_stats").filter(pl.col("run_id") == run_id)
    spans = (stats["window_end"] - stats["window_start"]).dt.total_seconds().unique().to_list()
    assert stats.height > 1 and spans == [1_800]
    preds = read_table(synthetic_lake, "predictions").filter(pl.col("run_id") == run_id)
    assert preds["anomaly_score"].null_count() == preds.height
    # an unknown action is refused, naming the choices (python -m shows it as one line, exit status 2)
    with pytest.raises(UsageError, match=r"invalid choice: 'panic' \(choose from 'none', 'reset', 'retrain'\)"):
        main(["--lake", synthetic_lake, "--drift-action", "panic"])



def _feed(mon, step_s, n_batches: int = 120, size: int = 5) -> None:
    """Batches of ``size`` events, ``step_s`` seconds of event time apart."""
    import random

    rng, t = random.Random(3), 0
    for b in range(n_batches):
        times = []
        for _ in range(size):
            t += step_s * S
            times.append(t)
        mon.on_events(list(range(size)), [f"e{b}.{i}" for i in range(size)], times,
                      [{"x": rng.random(), "city": "x"} for _ in times], [0.5] * size, champion="m")


def _told(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "monitoring.stream"]


def test_a_statistics_window_too_short_for_the_stream_is_told_once_with_the_window_that_fits(caplog):
    # A live run's one-minute windows on a history replayed at months a minute hold one event or two: the shard
    # says so once, in one line, with the round window that would hold ~50 events at the stream's rate.
    import pickle
    import re

    from monitoring.stream import SPARSE_CHECK, StreamMonitor

    mon = StreamMonitor(MonitorConfig(stats_window_us=60 * S, anomaly=None), run_id="r", shard=2)
    with caplog.at_level("WARNING", logger="monitoring.stream"):
        _feed(mon, step_s=45, n_batches=30)  # (4/3 events a minute: 50 events take ~38 minutes)
        assert not _told(caplog) and len(mon._density) < SPARSE_CHECK, "fewer windows than the check needs: quiet"
        _feed(mon, step_s=45, n_batches=60)
    told = _told(caplog)
    assert len(told) == 1 and mon._density is None
    assert "shard 2" in told[0] and "held a median of 1 event" in told[0]
    # (an event every 45 s: 30 minutes hold 40 of them, an hour 80)
    assert re.search(r"stats_window=1h would have held a median of (79\.5|80) of their events \(50 wanted\)", told[0])
    assert int(re.search(r"(\d+) windows of 1m", told[0]).group(1)) >= SPARSE_CHECK
    # Told once per shard, also across a snapshot: the check is not made again.
    caplog.clear()
    resumed = pickle.loads(pickle.dumps(mon))
    with caplog.at_level("WARNING", logger="monitoring.stream"):
        _feed(resumed, step_s=45, n_batches=60)
    assert not _told(caplog)


def test_statistics_windows_that_fill_are_not_flagged(caplog):
    from monitoring.stream import StreamMonitor

    mon = StreamMonitor(MonitorConfig(stats_window_us=60 * S, anomaly=None), run_id="r", shard=0)
    with caplog.at_level("WARNING", logger="monitoring.stream"):
        _feed(mon, step_s=2, n_batches=2_600)  # (30 events a minute: 217 windows closed)
    assert mon.__dict__["_density"] is None and not _told(caplog), "looked at once, nothing to tell"


def test_a_live_run_on_a_replayed_history_says_its_statistics_windows_are_too_short(tmp_path, caplog):
    # Flights sent through Kafka with their own times (a year's schedule at a few thousand messages a second) into
    # a live run with one-minute statistics windows (the live default; a topic empty at start keeps it): they
    # hold one event each, and the run says so, naming a window; with that window it has nothing to say and its
    # windows hold a few dozen events each. A run left to its defaults chooses such a window from the topic.
    import re

    from dataflows.online import build_live_flow
    from dataflows.produce import produce
    from tests.test_kafka import mock_cluster

    lakes = {}
    with mock_cluster() as brokers, caplog.at_level("WARNING", logger="monitoring.stream"):
        produce(brokers, "events", "flights", limit=6_000)
        lakes["default"] = str(tmp_path / "default")
        run_main(build_live_flow(lakes["default"], "linear", brokers=brokers, topic="events", stop_at_end=True,
                                 flush_seconds=0.5, stats_window="1m"))
        told = [r.getMessage() for r in caplog.records if r.name == "monitoring.stream"]
        assert told and all("held a median of 1 event" in line for line in told), told
        suggested = re.search(r"stats_window=(\S+) would have held", told[0]).group(1)
        for name, window in (("suggested", suggested), ("auto", "auto")):
            caplog.clear()
            lakes[name] = str(tmp_path / name)
            run_main(build_live_flow(lakes[name], "linear", brokers=brokers, topic="events", stop_at_end=True,
                                     flush_seconds=0.5, stats_window=window))
            assert not [r for r in caplog.records if r.name == "monitoring.stream"], name
    auto = read_table(lakes["auto"], "window_stats")
    assert auto["n"].median() >= 10 and auto.height < read_table(lakes["default"], "window_stats").height / 10
    default, fits = (read_table(lakes[k], "window_stats") for k in ("default", "suggested"))
    assert default["n"].median() == 1 and fits["n"].median() >= 10 and fits.height < default.height / 10
