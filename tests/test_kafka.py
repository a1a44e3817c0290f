"""Kafka in and out against librdkafka's mock cluster (the real protocol on 127.0.0.1)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import confluent_kafka as ck
import polars as pl
import pytest
from bytewax.testing import run_main

from dataflows.online import build_live_flow
from dataflows.produce import produce
from lake.table import read_table


@contextmanager
def mock_cluster() -> Iterator[str]:
    """A one-broker mock cluster on 127.0.0.1, alive while the producer that owns it is; yields its address."""
    owner = ck.Producer({"test.mock.num.brokers": 1, "bootstrap.servers": "unused:1"})
    meta = owner.list_topics(timeout=10)
    yield ",".join(f"{b.host}:{b.port}" for b in meta.brokers.values())
    owner.flush(5)


@pytest.fixture
def mock_kafka():
    """A one-broker mock cluster for the test."""
    with mock_cluster() as brokers:
        yield brokers


def _read_all(brokers: str, topic: str) -> list[dict]:
    c = ck.Consumer({"bootstrap.servers": brokers, "group.id": "check", "enable.partition.eof": True,
                     "auto.offset.reset": "earliest"})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in parts])
    out, eof = [], set()
    while len(eof) < len(parts):
        for m in c.consume(500, 1.0):
            if m.error():
                eof.add(m.partition())
            else:
                out.append(json.loads(m.value()))
    c.close()
    return out


def test_live_kafka_flow_writes_the_lake_and_the_predictions_topic(mock_kafka, tmp_path):
    lake = str(tmp_path / "lake")
    sent = produce(mock_kafka, "events", "flights", limit=1_500)
    garbage = ck.Producer({"bootstrap.servers": mock_kafka})
    for value in (b"not json", b'{"kind": "alien"}', b'{"kind": "event", "event_time": "2013-01-01T00:00:00Z"}'):
        garbage.produce("events", key=b"UA", value=value)
    garbage.flush(10)
    run_main(build_live_flow(lake, "linear", brokers=mock_kafka, topic="events",
                             predictions_topic="predictions", stop_at_end=True, flush_seconds=0.5))
    preds = read_table(lake, "predictions")  # the one run of this lake, its id derived from the topic
    assert preds.height == 1_500 and preds["event_id"].is_unique().all()
    learned = read_table(lake, "learn_log")
    assert learned.height == sent - 1_500  # every label of the slice was learned
    dead = read_table(lake, "dead_letters")
    assert dead.height == 3 and set(dead["step"]) == {"decode"}
    assert any("unknown message kind 'alien'" in r for r in dead["reason"])
    served = _read_all(mock_kafka, "predictions")
    assert len(served) == 1_500 and {m["model"] for m in served} == {"linear"}
    # shards are Kafka partitions, and an event's label landed in its partition
    assert preds["shard"].n_unique() > 1
    joined = learned.join(preds.select("event_id", pl.col("shard").alias("pshard")), on="event_id")
    assert (joined["shard"] == joined["pshard"]).all()
