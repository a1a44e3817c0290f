"""Any stream, first try: time-scale defaults from the pinned history, said out loud; nothing
discarded without a word; a model that has learned nothing does not call everything positive."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from dataflows.defaults import History, choose
from dataflows.online import replay_job, run_replay
from lake.cli import main as lake_main
from lake.reproduce import reproduce
from lake.table import append, read_table

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = 1_000_000
DAY = 86_400 * S


# --------------------------------------------------------------------------- histories of other shapes


def _card_frames(n: int = 2_000, *, days: float = 60, cards: int = 40, delay_days: tuple[float, float] = (1, 40),
                 label_share: float = 1.0, fraud: float = 0.15, one_class: int | None = None,
                 numeric: bool = True, seed: int = 7) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A card-transaction history: categorical fields with nulls, fraud labels confirmed days later."""
    rng = random.Random(seed)
    times = sorted(rng.uniform(0, days * 86_400) for _ in range(n))
    category = [rng.choice(["grocery", "travel", "online", None]) for _ in range(n)]
    country = [rng.choice(["FR", "DE", "US", None, None]) for _ in range(n)]
    cols = {
        "event_id": [f"t{i:06d}" for i in range(n)],
        "event_time": [T0 + timedelta(seconds=t) for t in times],
        "key": [f"card{rng.randrange(cards)}" for _ in range(n)],
        "offset": list(range(n)),
        "category": category,
        "country": country,
    }
    if numeric:
        cols["amount"] = [round(rng.lognormvariate(3, 1), 2) if rng.random() > 0.1 else None for _ in range(n)]
    events = pl.DataFrame(cols).with_columns(pl.col("event_time").dt.cast_time_unit("us"))
    labelled = [i for i in range(n) if rng.random() < label_share]
    label = [one_class if one_class is not None
             else int(rng.random() < (3 * fraud if category[i] == "online" else fraud / 2)) for i in labelled]
    labels = pl.DataFrame({
        "event_id": [f"t{i:06d}" for i in labelled],
        "label": label,
        "label_time": [T0 + timedelta(seconds=times[i] + rng.uniform(*delay_days) * 86_400) for i in labelled],
    }).with_columns(pl.col("label_time").dt.cast_time_unit("us"))
    return events, labels


def _lake(path, frames: tuple[pl.DataFrame, pl.DataFrame]) -> str:
    lake = str(path)
    events, labels = frames
    append(lake, "events", events, writer_id="test", position=1)
    if labels.height:
        append(lake, "labels", labels, writer_id="test", position=1)
    return lake


def _history(events: pl.DataFrame, labels: pl.DataFrame) -> History:
    ev = events.with_columns(pl.col("event_time").dt.epoch("us"))
    joined = labels.with_columns(pl.col("label_time").dt.epoch("us")).join(ev, on="event_id")
    return History.of(event_times_us=ev["event_time"].to_list(),
                      label_delays_us=(joined["label_time"] - joined["event_time"]).to_list(),
                      labelled_times_us=joined["event_time"].to_list())


def test_daily_rows_over_decades_get_year_scale_windows():
    n = 30 * 365
    rng = np.random.default_rng(1)
    h = History.of(event_times_us=np.arange(n) * DAY, label_delays_us=rng.integers(DAY, 3 * DAY, n))
    c = choose(h)
    assert c["label_ttl"].text == "3d"
    assert c["window"].text == "730d"  # 500 labelled rows wanted: two years of daily rows
    assert c["stats_window"].text == "91d"  # 50 events wanted
    assert c["grace"].text == "3d"
    assert c["label_ttl"].line() == f"label_ttl: 3d (99.9th percentile of observed label delays, {n:,} labels)"


def test_sub_second_bursts_get_sub_second_scales():
    # bursts of 2,000 events within 0.2 s, every 6 hours; labels 10 to 500 ms later
    rng = np.random.default_rng(2)
    t = np.concatenate([b * 6 * 3600 * S + np.sort(rng.integers(0, 200_000, 2_000)) for b in range(20)])
    h = History.of(event_times_us=t, label_delays_us=rng.integers(10_000, 500_000, t.size))
    c = choose(h)
    assert c["window"].us <= S and c["stats_window"].us <= 100_000
    assert c["label_ttl"].text == "1s"  # rounded up to a whole second, never below


def test_delays_longer_than_the_history_and_no_labels_at_all():
    t = np.arange(1_000) * 3600 * S  # 42 days
    h = History.of(event_times_us=t, label_delays_us=np.full(1_000, 90 * DAY) + np.arange(1_000))
    assert choose(h)["label_ttl"].text == "91d"  # longer than the history: every label waited for
    none = choose(History.of(event_times_us=t))
    assert none["label_ttl"].us == none["window"].us
    assert "no labels in the history" in none["label_ttl"].reason


def test_explicit_values_win_and_a_window_that_cannot_work_is_refused_in_one_line():
    h = History.of(event_times_us=np.arange(5_000) * DAY, label_delays_us=np.full(5_000, DAY))
    c = choose(h, label_ttl="7d", window="365d", stats_window=None, grace="2d")
    assert [c[k].text for k in ("label_ttl", "window", "stats_window", "grace")] == ["7d", "365d", "none", "2d"]
    assert all(c[k].given for k in c)
    with pytest.raises(ValueError) as err:
        choose(h, window="1h")
    assert "\n" not in str(err.value)
    assert "window='1h' holds a median of 1 labelled events per window" in str(err.value)
    with pytest.raises(ValueError, match="stats_window='1d' holds a median of 1 events"):
        choose(h, stats_window="1d")


def test_detector_warm_up_before_a_drift_action_follows_the_history():
    short = History.of(event_times_us=np.arange(800) * S, label_delays_us=np.full(800, S))
    long = History.of(event_times_us=np.arange(200_000) * S, label_delays_us=np.full(200_000, S))
    assert "action_window" not in choose(short)  # no drift action: nothing to warm up
    assert choose(short, action_window="auto")["action_window"].line() == (
        "action_window: 100 (learns before a drift action: a tenth of the 800 labels, within 100..5,000)")
    assert choose(long, action_window="auto")["action_window"].us == 5_000
    assert choose(short, action_window=300)["action_window"].text == "300"


# --------------------------------------------------------------------------- the replay


def test_labels_confirmed_1_to_40_days_later_are_learned_with_the_default_ttl(tmp_path, capsys):
    """The old fixed 7d TTL dropped most fraud labels without a word; the data-derived TTL keeps them."""
    lake = _lake(tmp_path / "cards", _card_frames())
    n_labels = read_table(lake, "labels").height

    # (expiry is decided between batches: batches of a few days of transactions, as on a long history)
    old = run_replay(lake, "linear", recovery=False, label_ttl="7d", batch_size=100)
    err = capsys.readouterr().err
    # said at the start already
    assert re.search(r"label_ttl: 7d \(given; 1,\d{3} of the 2,000 observed label delays \(8\d\.\d%\) are longer: "
                     r"those labels will not be learned\)", err)
    learned_old = read_table(lake, "learn_log").filter(pl.col("run_id") == old).height
    assert learned_old < 0.3 * n_labels
    # said at the end, on stderr and in the lake
    assert f"run {old} shard 0 ended: 2,000 events predicted, {learned_old:,} of {n_labels:,} labels learned" in err
    assert f"warning: run {old} shard 0: {n_labels - learned_old:,} of {n_labels:,} labels" in err
    summary = read_table(lake, "run_summaries").filter(pl.col("run_id") == old).row(0, named=True)
    assert summary["n_learned"] == learned_old and summary["n_labels"] == n_labels
    assert summary["n_expired_labels"] == n_labels - learned_old == summary["n_labels_lost"]
    assert 0 < summary["n_expired_positive"] < summary["n_expired_labels"]
    assert summary["label_ttl_us"] == 7 * DAY
    assert dict(summary["dead_letters"]) == {"label arrived after its event expired": n_labels - learned_old}
    assert "(label_ttl 7d)" in summary["warning"]

    new = run_replay(lake, "linear", recovery=False, batch_size=100)
    err = capsys.readouterr().err
    assert f"run {new} (events v0, labels v0)" in err
    assert f"label_ttl: 40d (99.9th percentile of observed label delays, {n_labels:,} labels)" in err
    assert "grace: 40d (the longest observed label delay" in err and "window: " in err and "stats_window: " in err
    learned_new = read_table(lake, "learn_log").filter(pl.col("run_id") == new).height
    assert learned_new >= 0.99 * n_labels
    assert "warning:" not in err

    lake_main(["info", "--lake", lake])
    out = capsys.readouterr().out
    assert "run_summaries" in out
    assert f"warning: run {old} shard 0:" in out and f"run {new} shard 0 ended" in out
    assert f"warning: run {new}" not in out


@pytest.mark.parametrize("shape", ["one key, categorical only", "delays longer than the history",
                                   "labels that never come", "all labels one class"])
def test_other_shapes_replay_with_defaults_and_lose_no_label(tmp_path, capsys, shape):
    kwargs = {
        "one key, categorical only": {"cards": 1, "numeric": False},
        "delays longer than the history": {"days": 10, "delay_days": (20, 30)},
        "labels that never come": {"label_share": 0.6, "delay_days": (0.5, 2)},
        "all labels one class": {"one_class": 1},
    }[shape]
    lake = _lake(tmp_path / "lake", _card_frames(800, **kwargs))
    run_id = run_replay(lake, "linear,tree", recovery=False)
    err = capsys.readouterr().err
    n_labels = read_table(lake, "labels").height
    row = read_table(lake, "run_summaries").row(0, named=True)
    assert row["run_id"] == run_id and row["n_events"] == 800
    assert row["n_learned"] == n_labels and row["warning"] is None
    assert "warning:" not in err
    if shape == "labels that never come":
        assert row["n_expired"] > 0 and row["n_expired_labels"] == 0  # unlabelled events gave up on, no label lost


def test_the_chosen_defaults_are_part_of_the_run_identity(tmp_path):
    lake = _lake(tmp_path / "cards", _card_frames(500))
    auto = replay_job(lake)
    assert replay_job(lake, label_ttl="7d").run_id != auto.run_id
    same = replay_job(lake, label_ttl=f"{auto.config.label_ttl_us}us", window=f"{auto.config.window_us}us",
                      grace=f"{auto.config.grace_us}us",
                      stats_window=f"{auto.config.monitor.stats_window_us}us")
    assert same.run_id == auto.run_id  # the same values given explicitly: the same run


def test_progress_and_defaults_are_printed_under_bytewax_run(tmp_path, subprocess_env):
    lake = _lake(tmp_path / "cards", _card_frames(1_500))
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", f"dataflows.online:build_flow(lake={lake!r}, batch_size=100)"],
        capture_output=True, text=True, env=subprocess_env, timeout=300, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stderr[-2000:]
    err = proc.stderr
    assert "label_ttl: 40d (99.9th percentile" in err
    progress = [line for line in err.splitlines() if "items/s" in line]
    assert progress and progress[-1].split(": ", 1)[1].startswith("1,500/1,500 events")
    assert "ETA" in progress[0] and progress[-1].rstrip().split(", ")[-1].startswith("done")
    assert "shard 0 ended: 1,500 events predicted" in err


# --------------------------------------------------------------------------- cold start


def test_a_model_that_has_learned_nothing_serves_the_prior_not_a_tie(tmp_path, capsys):
    """Before the first label every prediction was 0.5 → "positive"; now 0.0, the prior of no labels."""
    lake = _lake(tmp_path / "cards", _card_frames(600))
    run_id = run_replay(lake, "linear,tree", recovery=False, batch_size=64)
    capsys.readouterr()
    preds = read_table(lake, "predictions").filter(pl.col("run_id") == run_id)
    first_label = read_table(lake, "learn_log").filter(pl.col("run_id") == run_id)["seq"].min()
    cold = preds.filter(pl.col("seq") < first_label)
    assert cold.height >= 2 * 20  # both models, the first weeks of transactions
    assert cold["score"].unique().to_list() == [0.0] and cold["prediction"].sum() == 0
    warm = preds.filter(pl.col("seq") > first_label)
    assert warm["score"].n_unique() > 10
    # the lake still rebuilds those scores bit for bit
    first = cold.sort("seq")["event_id"][0]
    assert all(r.bit_equal and r.reproduced_score == 0.0 for r in reproduce(lake, first, run_id=run_id))


def test_cold_start_on_the_columnar_path(tmp_path, capsys):
    """The columnar path (linear-hash) serves the same prior before the first label."""
    lake = _lake(tmp_path / "cards", _card_frames(600, numeric=False))
    run_id = run_replay(lake, "linear-hash", recovery=False, hash_fields="category,country", anomaly=None,
                        batch_size=64)
    capsys.readouterr()
    preds = read_table(lake, "predictions").filter(pl.col("run_id") == run_id)
    first_label = read_table(lake, "learn_log").filter(pl.col("run_id") == run_id)["seq"].min()
    assert preds.filter(pl.col("seq") < first_label)["score"].unique().to_list() == [0.0]
    assert preds.filter(pl.col("seq") > first_label)["score"].n_unique() > 3


def test_a_key_without_a_model_of_its_own_is_not_called_positive(tmp_path, capsys):
    lake = _lake(tmp_path / "cards", _card_frames(600, cards=200))
    run_id = run_replay(lake, "linear", recovery=False, per_key=True)
    capsys.readouterr()
    preds = read_table(lake, "predictions").filter(pl.col("run_id") == run_id).sort("seq")
    learns = read_table(lake, "learn_log").filter(pl.col("run_id") == run_id)
    keys = dict(read_table(lake, "events").select("event_id", "key").iter_rows())
    learned_key_at = {}
    for seq, event_id in learns.sort("seq").select("seq", "event_id").iter_rows():
        learned_key_at.setdefault(keys[event_id], seq)
    unseen = preds.filter(pl.col("seq") < pl.col("key").replace_strict(learned_key_at, default=2**62))
    assert unseen.height > 100 and unseen["score"].unique().to_list() == [0.0]
    r = reproduce(lake, unseen["event_id"][-1], run_id=run_id)[0]
    assert r.bit_equal


def test_a_reset_model_serves_the_prior_of_the_labels_so_far_until_it_learns(tmp_path, capsys):
    from lake.ingest import ingest_scenario

    lake = str(tmp_path / "lake")
    ingest_scenario(lake, "agrawal-drift", n=8_000, seed=3)
    run_id = run_replay(lake, "linear,naive-bayes", recovery=False, window="1h", drift_action="reset",
                        action_window=1_000, stats_window=None, anomaly=None)
    capsys.readouterr()
    act = read_table(lake, "drift_actions").filter(pl.col("run_id") == run_id).sort("seq").row(0, named=True)
    learns = read_table(lake, "learn_log").filter((pl.col("run_id") == run_id) & (pl.col("model") == act["model"]))
    before = learns.filter(pl.col("seq") <= act["seq"])
    prior = before["label"].sum() / before.height
    assert 0.05 < prior < 0.95
    next_learn = learns.filter(pl.col("seq") > act["seq"])["seq"].min()
    served = read_table(lake, "predictions").filter(
        (pl.col("run_id") == run_id) & (pl.col("model") == act["model"]) & (pl.col("seq") > act["seq"])
        & (pl.col("seq") < next_learn))
    assert served.height >= 1 and served["score"].unique().to_list() == [prior]
    r = reproduce(lake, served["event_id"][0], run_id=run_id, model=act["model"])[0]
    assert r.bit_equal and r.model_version == act["model_version"]


def test_the_command_refuses_a_window_the_history_cannot_fill_in_one_line(tmp_path, subprocess_env):
    lake = _lake(tmp_path / "cards", _card_frames(300))
    proc = subprocess.run([sys.executable, "-m", "dataflows.online", "--lake", lake, "--window", "1m",
                           "--no-recovery"], capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: window='1m' holds a median of 1 labelled events per window in this history; at least 10 are "
        "needed: give a longer window, or leave it out to let the data choose"]
    assert not (tmp_path / "cards" / "predictions").exists()  # refused before any work


def test_the_defaults_from_the_replay_plan_are_those_of_the_tables(tmp_path, capsys):
    """A one-shard replay reads the history once (its plan gives the defaults their history); a two-shard replay
    reads the tables for them: the same history, the same defaults, also with labels of unknown events, labels
    given twice and an older version pinned."""
    from dataflows.replay import ReplayPlan, pin_versions

    events, labels = _card_frames(1_200, delay_days=(0.01, 3))
    lake = _lake(tmp_path / "cards", (events, labels))
    orphans = labels.head(30).with_columns(pl.format("gone{}", pl.col("event_id")).alias("event_id"))
    append(lake, "labels", pl.concat([orphans, labels.slice(100, 40)]), writer_id="test", position=2)
    append(lake, "events", _card_frames(300, seed=9)[0].with_columns(pl.format("new{}", pl.col("event_id"))
                                                                      .alias("event_id")), writer_id="test", position=2)
    for events_version in (0, 1):
        pin = pin_versions(lake, events_version=events_version)
        read = History.read(lake, events_version=pin.events, labels_version=pin.labels)
        planned = ReplayPlan(lake, pin=pin).history()
        for field in ("event_times_us", "label_delays_us", "labelled_times_us"):
            a, b = getattr(read, field), getattr(planned, field)
            assert a.dtype == b.dtype and np.array_equal(np.sort(a), np.sort(b)), field
        assert planned.label_delays_us.size == labels.height + 40  # (orphans left out, repeated labels kept)
        jobs = [replay_job(lake, events_version=events_version, shards=shards) for shards in (1, 2)]
        assert [job.config.window_us for job in jobs] == [jobs[0].config.window_us] * 2
        assert jobs[0].settings.values()["label_ttl"] == jobs[1].settings.values()["label_ttl"]
        assert jobs[0].settings.identity() != jobs[1].settings.identity()  # (shards differ: a check that can fail)
    printed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("  ")]
    assert printed[:4] == printed[4:8] and "label_ttl: 3d" in printed[1]


def test_the_window_search_gives_the_shortest_round_window_that_holds_the_median():
    from dataflows.defaults import ROUND_DURATIONS, _median_per_window, _window
    from lake.durations import parse_duration_us

    rng = np.random.default_rng(5)
    shapes = [np.cumsum(rng.exponential(60 * S, 20_000)).astype(np.int64),  # steady, a row a minute
              np.sort(np.concatenate([rng.integers(0, 5 * S, 5_000), rng.integers(0, 400 * DAY, 500)])),  # a burst
              np.sort(rng.integers(-10 * DAY, 10 * DAY, 3_000)),  # before 1970 too
              np.repeat(np.int64(7 * S), 700), np.zeros(0, np.int64),
              # seconds holding 50 rows and seconds holding 17, the former a bare majority: the median is 50
              np.concatenate([s * S + np.arange(n) * (S // n) for s, n in enumerate([50, 17] * 40 + [50] * 2)])]
    for times in shapes:
        for want in (2, 10, 50, 500):
            chosen = _window("w", times, want=want, what="rows")
            first = next((parse_duration_us(d) for d in ROUND_DURATIONS
                          if _median_per_window(times, parse_duration_us(d)) >= want), None)
            assert chosen.us == (first if first is not None else parse_duration_us(ROUND_DURATIONS[-1]))


def test_a_one_shard_replay_reads_the_tables_once(tmp_path, capsys):
    """The defaults' read is the replay's read: once the run is set up, the tables are not read again (here:
    gone), and every event is still predicted."""
    import shutil

    from bytewax.testing import run_main

    lake = _lake(tmp_path / "cards", _card_frames(600))
    job = replay_job(lake, run_id="once")
    shutil.rmtree(os.path.join(lake, "events"))
    run_main(job.flow())
    assert read_table(lake, "predictions").filter(pl.col("run_id") == "once").height == 600


def test_a_replay_builds_arrow_with_the_system_allocator(tmp_path):
    """A replay (like a live run) allocates Arrow with the C library's allocator: with pyarrow's default
    (mimalloc) the learner's thread spent ~1 s more of system CPU per 1M events on the pages it purges."""
    lake = _lake(tmp_path / "cards", _card_frames(200))
    code = ("import pyarrow as pa; from dataflows.online import replay_job; "
            f"replay_job({os.fspath(lake)!r}, run_id='pool'); print(pa.default_memory_pool().backend_name)")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "system"
