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
    dead = read_table(lake, "dead_letters")
    # every label of the slice was learned, or came after the label TTL chosen from the topic (99.9th
    # percentile of its label delays) and is a dead letter: none is lost
    late = dead.filter(pl.col("reason") == "label arrived after its event expired")
    assert learned.height + late.height == sent - 1_500 and late.height <= 0.002 * (sent - 1_500)
    assert set(learned["event_id"]).isdisjoint(late["event_id"])
    dead = dead.filter(pl.col("reason") != "label arrived after its event expired")
    assert dead.height == 3 and set(dead["step"]) == {"decode"}
    assert any("unknown message kind 'alien'" in r for r in dead["reason"])
    served = _read_all(mock_kafka, "predictions")
    assert len(served) == 1_500 and {m["model"] for m in served} == {"linear"}
    # shards are Kafka partitions, and an event's label landed in its partition
    assert preds["shard"].n_unique() > 1
    joined = learned.join(preds.select("event_id", pl.col("shard").alias("pshard")), on="event_id")
    assert (joined["shard"] == joined["pshard"]).all()


def _served_outputs(n: int) -> list:
    """The Output of a linear (champion) + tree (challenger) learner on ``n`` events."""
    from dataflows.items import EVENT, Batch
    from dataflows.learner import RunConfig, ShardLearner
    from dataflows.validate import validate_batch

    items = [(i, EVENT, f"e{i}", i * 1_000_000, f"k{i % 3}", {"x": float(i)}) for i in range(n)]
    return [ShardLearner(RunConfig(run_id="k", models=("linear", "tree")), shard=0).process(
        validate_batch(Batch(0, items)))]


def test_predictions_are_acknowledged_before_the_epochs_snapshot_not_after_every_batch(mock_kafka):
    from dataflows.kafka import KafkaPredictionsSink

    # a long linger: without waiting for the brokers the messages would sit in the producer for 60 s
    sink = KafkaPredictionsSink(mock_kafka, "served", config={"linger.ms": 60_000})
    part = sink.build_part("s", sink.list_parts()[0], None)
    part.write_batch(_served_outputs(40))
    assert len(sink.producer()) == 40, "a batch does not wait for the brokers (the prediction path goes on)"
    assert part.snapshot() is None  # Bytewax snapshots the partition before it commits the epoch
    assert len(sink.producer()) == 0
    served = _read_all(mock_kafka, "served")  # the sink is still open: nothing flushed at close
    assert sorted(m["event_id"] for m in served) == sorted(f"e{i}" for i in range(40))
    assert {m["model"] for m in served} == {"linear"}
    part.close()


def test_the_partitions_of_a_process_share_one_producer_and_take_their_shard(mock_kafka):
    from dataflows.kafka import KafkaPredictionsSink

    sink = KafkaPredictionsSink(mock_kafka, "served", partitions=4, part_names=[f"p{i}" for i in range(4)])
    a, b = (sink.build_part("s", name, None) for name in ("p0", "p1"))
    assert a._producer is b._producer
    assert [sink.part_fn(str(shard)) for shard in range(6)] == [0, 1, 2, 3, 0, 1]
    with pytest.raises(ValueError, match="part_names must name 4 partitions"):
        KafkaPredictionsSink(mock_kafka, "served", partitions=4, part_names=["p0"])


def test_an_undelivered_prediction_stops_the_dataflow_before_its_snapshot():
    from dataflows.kafka import DeliveryError, KafkaPredictionsSink

    # nothing listens on port 1: every message times out after 1 s
    sink = KafkaPredictionsSink("127.0.0.1:1", "served", config={"message.timeout.ms": 1_000}, timeout_s=10)
    part = sink.build_part("s", sink.list_parts()[0], None)
    part.write_batch(_served_outputs(5))  # sent, not yet acknowledged: the batch goes on
    with pytest.raises(DeliveryError, match=r"predictions topic 'served': 5 failed \(.*timed out.*\)"):
        part.snapshot()
