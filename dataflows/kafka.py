"""Kafka in and out: a live source of events and labels, and a sink for served predictions.

One topic carries both kinds of message (JSON objects with ``"kind": "event"`` or
``"label"``; events: ``event_id``, ``event_time`` (ISO or epoch seconds), ``key``
and the payload fields; labels: ``event_id``, ``label``, ``label_time``). A
producer keys both by the entity key, so an event and its label land in the same
partition; partition ``p`` is shard ``p``. The Kafka offset is the item's ``seq``:
the recovery snapshot holds the next offset per partition, so a restart neither
skips nor repeats a message, and the lake's idempotent writers drop rows of
offsets already committed. (Two separate topics would interleave differently
after a restart, and ``seq`` would stop meaning the same message.)

Undecodable messages and messages of an unknown kind become dead letters.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC
from typing import Any

import confluent_kafka as ck
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.decode import decode_event, decode_label
from dataflows.items import Batch, Output, raw_json

log = logging.getLogger(__name__)


def _consumer(brokers: str, extra: dict[str, Any] | None) -> ck.Consumer:
    return ck.Consumer({
        "bootstrap.servers": brokers,
        "group.id": "riverlake",  # offsets live in the recovery state, not in the group
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        **(extra or {}),
    })


class _KafkaPartition(StatefulSourcePartition[Batch, int]):
    def __init__(self, brokers: str, topic: str, partition: int, *, start: int | None, batch_size: int,
                 poll_timeout_s: float, stop_at_end: bool, config: dict[str, Any] | None) -> None:
        self._topic, self._partition = topic, partition
        self._batch_size, self._timeout, self._stop_at_end = batch_size, poll_timeout_s, stop_at_end
        self._next = start
        self._at_end = False  # librdkafka reports a partition's end once, when reached
        self._consumer = _consumer(brokers, config)
        offset = start if start is not None else ck.OFFSET_BEGINNING
        self._consumer.assign([ck.TopicPartition(topic, partition, offset)])
        self._source = f"kafka:{topic}/{partition}"

    def next_batch(self) -> list[Batch]:
        items: list[tuple] = []
        dead: list[tuple] = []
        for msg in self._consumer.consume(self._batch_size, self._timeout):
            err = msg.error()
            if err is not None:
                if err.code() == ck.KafkaError._PARTITION_EOF:
                    self._at_end = True
                else:
                    log.warning("%s: %s", self._source, err)
                continue
            self._at_end = False
            offset = msg.offset()
            self._next = offset + 1
            item, bad = self._decode(msg.value(), offset)
            if item is not None:
                items.append(item)
            else:
                dead.append(bad)
        if self._at_end and self._stop_at_end and not items and not dead:
            raise StopIteration
        if not items and not dead:
            return []
        return [Batch(self._partition, items, source=self._source, dead=dead)]

    @staticmethod
    def _decode(value: bytes | None, offset: int) -> tuple[tuple | None, tuple | None]:
        try:
            obj = json.loads(value) if value is not None else None
        except (ValueError, UnicodeDecodeError):
            obj = None
        if not isinstance(obj, dict):
            return decode_event(value if value is not None else b"", seq=offset)
        kind = obj.get("kind", "event")
        if kind == "event":
            return decode_event({k: v for k, v in obj.items() if k != "kind"}, seq=offset)
        if kind == "label":
            return decode_label(obj, seq=offset)
        return None, (offset, "decode", f"unknown message kind {kind!r:.40}", "decode", None, raw_json(obj))

    def snapshot(self) -> int | None:
        return self._next

    def close(self) -> None:
        self._consumer.close()


class KafkaSource(FixedPartitionedSource[Batch, int]):
    """Events and labels from one Kafka topic, a batch per poll, one shard per partition.

    ``stop_at_end`` ends the stream when every partition is read to its end (tests,
    catch-up jobs); otherwise it runs live.
    """

    def __init__(self, brokers: str, topic: str, *, batch_size: int = 1_000, poll_timeout_s: float = 0.2,
                 stop_at_end: bool = False, config: dict[str, Any] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if not topic:
            raise ValueError(f"topic must be a non-empty string, got {topic!r}")
        self.brokers, self.topic = brokers, topic
        self.batch_size, self.poll_timeout_s, self.stop_at_end = batch_size, poll_timeout_s, stop_at_end
        self.config = config

    def partitions(self) -> list[int]:
        consumer = _consumer(self.brokers, self.config)
        try:
            meta = consumer.list_topics(self.topic, timeout=10)
        finally:
            consumer.close()
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise ValueError(f"Kafka topic {self.topic!r} not found at {self.brokers}")
        return sorted(topic.partitions)

    def list_parts(self) -> list[str]:
        return [f"{self.topic}#{p}" for p in self.partitions()]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _KafkaPartition:
        partition = int(for_part.rsplit("#", 1)[1])
        return _KafkaPartition(self.brokers, self.topic, partition, start=resume_state,
                               batch_size=self.batch_size, poll_timeout_s=self.poll_timeout_s,
                               stop_at_end=self.stop_at_end, config=self.config)


class _PredictionsPartition(StatelessSinkPartition[Output]):
    def __init__(self, brokers: str, topic: str, config: dict[str, Any] | None) -> None:
        self._topic = topic
        self._producer = ck.Producer({"bootstrap.servers": brokers, "linger.ms": 20, **(config or {})})

    def write_batch(self, items: list[Output]) -> None:
        for out in items:
            preds = out.tables.get("predictions")
            if preds is None:
                continue
            cols = ["event_id", "event_time", "key", "model", "model_version", "score", "prediction", "role"]
            for row in preds.select(cols).to_pylist():
                if row.pop("role") != "champion":
                    continue
                row["event_time"] = row["event_time"].astimezone(UTC).isoformat()
                self._producer.produce(self._topic, key=row["key"].encode(), value=json.dumps(row).encode())
            self._producer.poll(0)

    def close(self) -> None:
        self._producer.flush(30)


class KafkaPredictionsSink(DynamicSink[Output]):
    """Served (champion) predictions to a Kafka topic as JSON, keyed by entity key.

    At-least-once: after a crash, predictions since the last snapshot are sent
    again (the lake's copy stays exactly-once).
    """

    def __init__(self, brokers: str, topic: str, *, config: dict[str, Any] | None = None) -> None:
        self.brokers, self.topic, self.config = brokers, topic, config

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _PredictionsPartition:
        return _PredictionsPartition(self.brokers, self.topic, self.config)

