"""Built-in scenarios: flights (real 2013 NYC departures) and agrawal-drift (known drifts)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from lake.errors import IngestError
from lake.ingest import ingest_scenario
from lake.scenarios import SCENARIOS
from lake.scenarios.agrawal import FEATURES, agrawal_drift
from lake.scenarios.flights import PAYLOAD, flights, read_raw
from lake.table import read_table, table_version

ROOT = Path(__file__).resolve().parent.parent
LEAKS = {"dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"}


@pytest.fixture(scope="module")
def first_flights():
    return flights(limit=2000)


def test_flights_events_carry_only_what_is_known_at_departure(first_flights):
    events = first_flights.events
    assert events.height == 2000
    assert events.columns == ["event_id", "event_time", "key", *PAYLOAD]
    assert not LEAKS & set(events.columns)
    assert events["event_id"].is_unique().all()
    assert events["event_id"][0] == "2013-01-01_UA1545_EWR_0515"
    assert events["event_time"][0].isoformat() == "2013-01-01T10:15:00+00:00"  # 05:15 EST
    assert events["event_time"].is_sorted()
    assert (events["key"] == events["carrier"]).all()
    assert events["route"][0] == "EWR-IAH"


def test_flights_labels_arrive_after_departure(first_flights):
    joined = first_flights.labels.join(first_flights.events, on="event_id", how="inner")
    assert joined.height == first_flights.labels.height
    assert (joined["label_time"] >= joined["event_time"] + timedelta(minutes=1)).all()
    # UA1545 EWR->IAH: scheduled 08:19 CST, 11 minutes late -> 14:30 UTC
    first = joined.filter(pl.col("event_id") == "2013-01-01_UA1545_EWR_0515")
    assert first["label_time"][0].isoformat() == "2013-01-01T14:30:00+00:00"
    assert first["label"][0] == 0
    assert 0.1 < first_flights.labels["label"].mean() < 0.5


def test_cancelled_flights_are_events_without_a_label(first_flights):
    raw, _ = read_raw()
    ids = set(first_flights.events["event_id"])
    labelled = set(first_flights.labels["event_id"])
    cancelled = ids - labelled
    assert cancelled  # the first 2,000 departures include cancellations (snow on 2013-01-02..)
    two = pl.col("month"), pl.col("day")
    raw = raw.with_columns(
        pl.format(
            "{}-{}-{}_{}{}_{}_{}",
            "year",
            *(c.cast(pl.String).str.zfill(2) for c in two),
            "carrier",
            "flight",
            "origin",
            pl.col("sched_dep_time").cast(pl.String).str.zfill(4),
        ).alias("event_id")
    )
    no_arrival = set(raw.filter(pl.col("arr_delay").is_null())["event_id"])
    with_arrival = set(raw.filter(pl.col("arr_delay").is_not_null())["event_id"])
    assert cancelled <= no_arrival
    assert labelled <= with_arrival


def test_flights_by_route(tmp_path):
    events = flights(limit=50, key="route").events
    assert (events["key"] == events["route"]).all()
    with pytest.raises(ValueError, match="key must be one of"):
        flights(key="tailnum")


def test_ingest_flights_scenario_and_rerun(tmp_path):
    report = ingest_scenario(tmp_path, "flights", limit=2000)
    assert (report.n_events, report.source) == (2000, "flights")
    events = read_table(tmp_path, "events")
    assert events["offset"].sort().to_list() == list(range(2000))
    assert read_table(tmp_path, "labels").height == report.n_labels
    again = ingest_scenario(tmp_path, "flights", limit=2000)
    assert again.already_ingested
    assert again.events_version == report.events_version


@pytest.mark.slow
def test_full_flights_counts(tmp_path):
    report = ingest_scenario(tmp_path, "flights")
    assert (report.n_events, report.n_labels) == (336_776, 327_346)
    labels = read_table(tmp_path, "labels")
    assert round(labels["label"].mean(), 3) == 0.237
    assert read_table(tmp_path, "events", columns=["event_id"]).height == 336_776


def test_agrawal_is_reproducible_and_drifts_where_it_says():
    a, b = agrawal_drift(n=2000, seed=3), agrawal_drift(n=2000, seed=3)
    assert a.events.equals(b.events) and a.labels.equals(b.labels) and a.drifts.equals(b.drifts)
    assert not agrawal_drift(n=2000, seed=4).events.equals(a.events)
    assert a.events.columns == ["event_id", "event_time", "key", *FEATURES]
    assert a.events["event_id"][1999] == "agrawal-00001999"
    assert a.drifts["position"].to_list() == [500, 1000, 1500]
    assert a.drifts["event_id"].to_list() == [
        "agrawal-00000500",
        "agrawal-00001000",
        "agrawal-00001500",
    ]
    delay = (a.labels["label_time"] - a.events["event_time"]).dt.total_seconds()
    assert delay.min() >= 1 and delay.max() <= 120
    # Concept 0 is "age < 40 or age >= 60"; it holds before the first drift and not after.
    rule = ((pl.col("age") < 40) | (pl.col("age") >= 60)).cast(pl.Int64)
    fits = a.events.select(rule.alias("rule"))["rule"] == a.labels["label"]
    assert fits[:500].all()
    assert fits[500:1000].mean() < 0.7


def test_ingest_agrawal_writes_the_drifts(tmp_path):
    report = ingest_scenario(tmp_path, "agrawal-drift", n=400, seed=1)
    assert (report.n_events, report.n_labels) == (400, 400)
    drifts = read_table(tmp_path, "scenario_drifts").sort("position")
    assert drifts["position"].to_list() == [100, 200, 300]
    assert drifts["scenario"].unique().to_list() == ["agrawal-drift"]
    version = table_version(tmp_path, "scenario_drifts")
    assert ingest_scenario(tmp_path, "agrawal-drift", n=400, seed=1).already_ingested
    assert table_version(tmp_path, "scenario_drifts") == version


def test_scenario_errors(tmp_path):
    assert sorted(SCENARIOS) == ["agrawal-drift", "flights", "friedman-drift", "rbf-drift", "urls"]
    with pytest.raises(IngestError, match="unknown scenario 'nope'"):
        ingest_scenario(tmp_path, "nope")
    with pytest.raises(IngestError, match=r"takes no parameter\(s\) \['n'\]"):
        ingest_scenario(tmp_path, "flights", n=5)
    with pytest.raises(IngestError, match="n must be an integer"):
        ingest_scenario(tmp_path, "agrawal-drift", n=3)


def test_cli_ingests_a_scenario(tmp_path):
    run = [sys.executable, "-m", "lake"]
    lake_dir = str(tmp_path / "lake")
    done = subprocess.run(
        [*run, "ingest", "--lake", lake_dir, "--scenario", "agrawal-drift", "--n", "400"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "400 events, 400 labels" in done.stdout
    wrong = subprocess.run(
        [*run, "ingest", "--lake", lake_dir, "--scenario", "flights", "--seed", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == "error: not an option of --scenario flights: --seed"


def test_flights_repeat_plays_the_year_again_shifted_by_52_weeks():
    from datetime import timedelta

    from lake.scenarios.flights import flights

    once = flights(limit=300)
    twice = flights(limit=300, repeat=2)
    assert twice.events.height == 600 and twice.events["event_id"].is_unique().all()
    assert twice.labels.height == 2 * once.labels.height
    second = twice.events.filter(twice.events["event_id"].str.ends_with("~1"))
    assert (second["event_time"] - once.events["event_time"]).unique().to_list() == [timedelta(days=364)]
    with pytest.raises(ValueError, match="repeat must be a positive integer, got 0"):
        flights(repeat=0)
