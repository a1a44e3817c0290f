"""Settings are written once (dataflows.settings) and reach replay, live, the command line,
the environment and the run identity from there; bad values are one line."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import polars as pl
import pytest
from bytewax.testing import run_main

from dataflows import settings as S
from dataflows.online import build_live_flow, replay_job
from dataflows.produce import frame_messages, send
from dataflows.settings import LIVE_AUTO, ModelSettings, RunSettings, SettingsValueError, affects_results, setting
from flows.cli import main as riverlake
from lake.errors import UsageError
from lake.runs import recorded_run
from lake.table import read_table
from tests.synthetic import synthetic_frames
from tests.test_kafka import mock_cluster


class WithWarmup(ModelSettings):
    """The models' settings plus one new setting, declared in this one place only."""

    warmup: int = setting(0, "learns before a model's predictions count", ge=0)


def _recorded_settings(lake: str, run_id: str) -> dict[str, Any]:
    row = recorded_run(lake, run_id)
    assert row is not None, run_id
    return json.loads(row["settings"])


def test_a_setting_added_in_one_place_reaches_replay_live_cli_environment_and_identity(
        synthetic_lake, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(S.GROUPS, "models", WithWarmup)
    # environment: RIVERLAKE_<NAME>, with no code for it
    assert RunSettings.from_env({"RIVERLAKE_WARMUP": "7"}).models.warmup == 7
    with pytest.raises(SettingsValueError, match=r"^RIVERLAKE_WARMUP must be int, got 'soon'$"):
        RunSettings.from_env({"RIVERLAKE_WARMUP": "soon"})
    # replay: keyword argument in, resolved settings and identity out
    job = replay_job(synthetic_lake, "linear", warmup=3, run_id="warm-3")
    assert job.settings.models.warmup == 3
    assert _recorded_settings(synthetic_lake, "warm-3")["warmup"] == 3
    # run identity: another value is another run
    assert replay_job(synthetic_lake, "linear", warmup=5).run_id != replay_job(synthetic_lake, "linear").run_id
    # command line: an option of `riverlake replay`, documented with its variable
    capsys.readouterr()
    assert riverlake(["replay", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "--warmup" in shown and "RIVERLAKE_WARMUP" in shown
    assert riverlake(["live", "--help"]) == 0
    assert "--warmup" in capsys.readouterr().out
    assert riverlake(["replay", "--lake", synthetic_lake, "--no-recovery", "--warmup", "9",
                      "--run-id", "warm-cli"]) == 0
    assert _recorded_settings(synthetic_lake, "warm-cli")["warmup"] == 9
    # live: the same settings objects
    lake = str(tmp_path / "live")
    with mock_cluster() as brokers:
        events, labels = synthetic_frames(100, seed=1)
        send(brokers, "warm", frame_messages(events, labels))
        run_main(build_live_flow(lake, "linear", brokers=brokers, topic="warm", run_id="live-warm", warmup=11,
                                 stop_at_end=True, record=False, flush_seconds=0.5))
    assert _recorded_settings(lake, "live-warm")["warmup"] == 11
    assert read_table(lake, "predictions").height == 100


# Another value for each setting in the identity: a new setting of a new kind must be given one here.
OTHER = {"shards": 2, "balance": True, "exclude": ("x",), "categorical": ("y",), "hash_fields": ("url",),
         "n_buckets": 1024, "model": ("tree",), "seed": 7, "checkpoint_every": 5, "threshold": 0.7,
         "window": "2h", "grace": "3h", "label_ttl": "4h", "drift": ("kswin",), "per_key": True,
         "max_key_models": 9, "stats_window": "5m", "lateness": "1s", "anomaly": "hst", "watch": "score=adwin",
         "drift_action": "reset", "action_window": 50, "task": "regression"}
NOT_RESULTS = {"events_version", "labels_version", "batch_size", "rate", "lake", "run_id", "flush_rows",
               "flush_seconds", "control_interval_s", "colocate", "brokers", "topic", "predictions_topic",
               "stop_at_end", "record", "kafka_config", "trace"}
"""Settings declared as not changing results; the versions, batch size and topic are in the identity itself."""


@pytest.mark.parametrize("kind", ["replay", "live"])
def test_every_setting_that_changes_results_is_in_the_run_identity(kind):
    base = RunSettings.build(kind)
    marked = {name for name, info, _ in S.fields_of(kind) if not affects_results(info)}
    assert marked == NOT_RESULTS & {name for name, _, _ in S.fields_of(kind)}
    for name, _, _ in S.fields_of(kind):
        other = base.update(**{name: OTHER.get(name, "changed")}) if name not in NOT_RESULTS else None
        if other is None:
            continue
        assert name in base.identity(), f"{name} is not in the run identity"
        assert other.identity() != base.identity(), f"changing {name} does not change the run identity"
    # what does not change results does not change the identity either
    pace = {"rate": 50.0} if kind == "replay" else {"brokers": "elsewhere:9092"}
    assert base.update(flush_rows=10, flush_seconds=1.0, control_interval_s=9.0, **pace).identity() == base.identity()


def test_live_and_replay_share_every_setting_but_their_source():
    replay, live = RunSettings.build("replay"), RunSettings.build("live")
    for group in ("featurizer", "models", "monitoring", "sinks"):
        assert getattr(replay, group) == getattr(live, group), group
    # the settings the live flow used to lack are there, with the replay's defaults
    assert live.models.threshold == 0.5 and live.featurizer.categorical == () and live.featurizer.n_buckets == 2**20
    assert live.monitoring.stats_window == replay.monitoring.stats_window == "auto"


def test_a_live_run_reads_auto_as_its_fixed_time_scales_and_takes_the_threshold(tmp_path):
    lake = str(tmp_path / "lake")
    with mock_cluster() as brokers:
        events, labels = synthetic_frames(50, seed=2)
        send(brokers, "t", frame_messages(events, labels))
        run_main(build_live_flow(lake, "linear", brokers=brokers, topic="t", run_id="l", threshold=0.7,
                                 categorical="key", stop_at_end=True, record=False, flush_seconds=0.5))
    recorded = _recorded_settings(lake, "l")
    assert {k: recorded[k] for k in LIVE_AUTO} == LIVE_AUTO
    assert recorded["threshold"] == 0.7 and recorded["categorical"] == ["key"]


def test_riverlake_live_runs_a_topic_with_the_settings_as_options(tmp_path):
    lake = str(tmp_path / "lake")
    with mock_cluster() as brokers:
        events, labels = synthetic_frames(80, seed=3)
        send(brokers, "cli", frame_messages(events, labels))
        assert riverlake(["live", "--lake", lake, "--brokers", brokers, "--topic", "cli", "--run-id", "lcli",
                          "--stop-at-end", "--no-record", "--flush-seconds", "0.5", "--threshold", "0.6",
                          "--kafka-config", '{"client.id": "riverlake-test"}']) == 0
    assert read_table(lake, "predictions").filter(pl.col("run_id") == "lcli").height == 80
    assert _recorded_settings(lake, "lcli")["threshold"] == 0.6
    with pytest.raises(UsageError, match=r"^kafka_config: must be a JSON object"):
        riverlake(["live", "--lake", lake, "--kafka-config", "{nope"])


def test_bad_values_are_one_line_naming_the_setting_and_the_value():
    with pytest.raises(SettingsValueError, match=r"^shards must be >= 1, got 0$"):
        RunSettings.replay(shards=0)
    with pytest.raises(SettingsValueError, match=r"^RIVERLAKE_THRESHOLD must be float, got 'high'$"):
        RunSettings.from_env({"RIVERLAKE_THRESHOLD": "high"})
    with pytest.raises(SettingsValueError, match=r"^RIVERLAKE_STATS_WINDOW: duration must look like .*'soon'$"):
        RunSettings.from_env({"RIVERLAKE_STATS_WINDOW": "soon"})
    with pytest.raises(SettingsValueError, match=r"^unknown setting 'shard' for a replay run$"):
        RunSettings.replay(shard=2)
    with pytest.raises(SettingsValueError, match=r"^model: unknown model 'nope'"):
        RunSettings.replay(model="linear,nope")
    with pytest.raises(SettingsValueError, match=r"^anomaly: unknown anomaly scorer 'nope'"):
        RunSettings.live(anomaly="nope")
    with pytest.raises(UsageError, match=r"^riverlake replay: Invalid value for '--shards'"):
        riverlake(["replay", "--shards", "two"])


def test_a_bad_monitoring_spec_is_refused_before_the_run_is_recorded(synthetic_lake):
    with pytest.raises(SettingsValueError, match=r"^watch: unknown drift detector 'zzz'"):
        replay_job(synthetic_lake, "linear", watch="score=zzz", run_id="bad-watch")
    assert recorded_run(synthetic_lake, "bad-watch") is None


def test_the_environment_sets_every_setting_and_keywords_win():
    env = {"RIVERLAKE_SHARDS": "3", "RIVERLAKE_MODELS": "tree", "RIVERLAKE_EXCLUDE": "a, b",
           "RIVERLAKE_FLUSH_ROWS": "100", "RIVERLAKE_PER_KEY": "yes", "RIVERLAKE_THRESHOLD": "0.6"}
    s = RunSettings.from_env(env, shards=5)
    assert (s.source.shards, s.models.model, s.featurizer.exclude, s.sinks.flush_rows) == (5, ("tree",),
                                                                                           ("a", "b"), 100)
    assert s.models.per_key is True and s.models.threshold == 0.6
    live = RunSettings.from_env({"RIVERLAKE_BROKERS": "k:9092", "RIVERLAKE_KAFKA_CONFIG": '{"acks": "all"}'},
                                kind="live")
    assert live.source.brokers == "k:9092" and live.source.kafka_config == {"acks": "all"}
    # keyword-built settings never read the environment behind the caller's back
    assert RunSettings.replay().source.shards == 1


def test_riverlake_takes_the_lake_from_the_flag_else_the_environment(synthetic_lake, monkeypatch, capsys,
                                                                     subprocess_env):
    monkeypatch.setenv("RIVERLAKE_LAKE", synthetic_lake)
    assert riverlake(["info"]) == 0
    assert "events" in capsys.readouterr().out
    assert riverlake(["info", "--lake", synthetic_lake + "-missing"]) == 0
    assert "no tables in" in capsys.readouterr().out
    # python -m flows.cli is the command; a bad environment value is one line, exit status 2
    env = {**subprocess_env, "RIVERLAKE_LAKE": synthetic_lake, "RIVERLAKE_SHARDS": "two"}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "replay", "--no-recovery"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: RIVERLAKE_SHARDS must be int, got 'two'"
    env["RIVERLAKE_SHARDS"] = "2"
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "replay", "--no-recovery", "--run-id", "env"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    preds = read_table(synthetic_lake, "predictions").filter(pl.col("run_id") == "env")
    assert preds.height == 3_000 and preds["shard"].n_unique() == 2
