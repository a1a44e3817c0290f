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

**Recording** (:mod:`dataflows.kafka_record`) and **payload types**
(:mod:`dataflows.kafka_types`) are explained in their modules.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import confluent_kafka as ck
import pyarrow as pa
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from dataflows import rows, sealed
from dataflows.decode import RESERVED_EVENT_FIELDS, decode_event, decode_label, loads
from dataflows.items import EVENT, Batch, Output, raw_json
from dataflows.kafka_messages import messages
from dataflows.kafka_record import PartitionRecorder, lake_offset  # noqa: F401  (lake_offset: re-exported)
from dataflows.kafka_types import PayloadTypes
from dataflows.live_columns import live_batch
from dataflows.replay import shard_of
from dataflows.trace import StageTrace
from dataflows.validate import validate_batch
from lake import integrity
from lake.table import exists, open_table

log = logging.getLogger(__name__)

_MESSAGE_FIELDS = (*RESERVED_EVENT_FIELDS, "kind")
"""Fields of an event message that are not its payload."""


# --------------------------------------------------------------------------- the source

def _consumer(brokers: str, extra: dict[str, Any] | None) -> ck.Consumer:
    return ck.Consumer({
        "bootstrap.servers": brokers,
        "group.id": "riverlake",  # offsets live in the recovery state, not in the group
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        # A fetch with nothing to return waits at most this long: the bound on how late a
        # message that comes to an idle partition is seen (librdkafka's default, 500 ms, is
        # that much latency on brokers that do not answer a waiting fetch early).
        "fetch.wait.max.ms": 5,
        **(extra or {}),
    })


_State = int | tuple[int | None, tuple[str, bytes] | list[tuple]] | None
"""A partition's resume state: the next offset, with the items before it not yet in the lake, sealed
(:func:`dataflows.sealed.seal_parts` of lists of items; a plain list of items in older snapshots)."""

ITEMS_PURPOSE = f"{integrity.RECOVERY_PURPOSE}: kafka items"
"""What the items a live snapshot holds are sealed for (not interchangeable with the sink's rows)."""


def _unrecorded(held: tuple[str, bytes] | list[tuple], source: str) -> list[tuple]:
    """The items a snapshot holds, in offset order: decompressed and unpickled only once their HMAC checked out
    (an older snapshot holds them as plain data, which Bytewax unpickled after ``check_recovery``)."""
    if isinstance(held, list):
        return held
    parts = sealed.unseal_parts(held, purpose=ITEMS_PURPOSE, what=f"recovery state of {source}")
    return [item for part in parts for item in part]


class _KafkaPartition(StatefulSourcePartition[Batch, _State]):
    def __init__(self, brokers: str, topic: str, partition: int, *, start: _State, batch_size: int,
                 poll_timeout_s: float, stop_at_end: bool, config: dict[str, Any] | None,
                 n_partitions: int = 1, lake: str | None = None, flush_rows: int = 25_000,
                 flush_seconds: float = 5.0, trace: StageTrace | None = None, task: str = "binary") -> None:
        self._topic, self._partition, self._n_partitions = topic, partition, n_partitions
        self._task = task
        self._batch_size, self._timeout, self._stop_at_end = batch_size, poll_timeout_s, stop_at_end
        start, held = start if isinstance(start, tuple) else (start, [])
        self._next = start
        self._at_end = False  # librdkafka reports a partition's end once, when reached
        self._misplaced = False
        self._source = f"kafka:{topic}/{partition}"
        unrecorded = _unrecorded(held, self._source)  # a forged snapshot is refused here, before anything runs
        self._trace = trace
        self._types: PayloadTypes | None = None
        self._recorder: PartitionRecorder | None = None
        if lake is not None:
            schema = open_table(lake, "events").schema().to_arrow() if exists(lake, "events") else None
            self._types = PayloadTypes(pa.schema(schema) if schema is not None else None)
            self._recorder = PartitionRecorder(lake, topic, partition, self._types, flush_rows=flush_rows,
                                               flush_seconds=flush_seconds, trace=trace, task=task)
            if unrecorded:  # what the snapshot held: into the lake before anything after it
                for item in unrecorded:  # fields the table has not got yet take the type they had
                    if item[1] == EVENT:
                        self._types.normalize(item[5])
                self._recorder.add(unrecorded)
                self._recorder.wait()
        self._consumer = _consumer(brokers, config)
        offset = start if start is not None else ck.OFFSET_BEGINNING
        self._consumer.assign([ck.TopicPartition(topic, partition, offset)])

    def next_batch(self) -> list[Batch]:
        # What has arrived, up to batch_size: librdkafka fetches in the background, so a zero
        # timeout never waits (Bytewax calls again at once after items, 1 ms later after none).
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
        batch = Batch(self._partition, items, source=self._source, dead=dead) if items or dead else None
        if batch is not None and self._trace is not None and items:
            self._trace.mark("consumed", self._partition, items[0][0], items[-1][0])
        if batch is not None and self._recorder is not None:
            # What is recorded is what the models get: checked here, once.
            batch = validate_batch(batch, self._task)
            batch.suspects = set()
            self._check_placement(batch.items)
            self._recorder.add(batch.items)
            batch = live_batch(batch)  # (as columns where they say what the items say: dataflows.live_columns)
        if self._recorder is not None:
            self._recorder.maybe_flush()
        if batch is None:
            if self._at_end and self._stop_at_end:
                raise StopIteration
            return []
        return [batch]

    def _decode(self, value: bytes | None, offset: int) -> tuple[tuple | None, tuple | None]:
        try:
            obj = loads(value) if value is not None else None
        except (ValueError, UnicodeDecodeError):
            obj = None
        if not isinstance(obj, dict):
            return decode_event(value if value is not None else b"", seq=offset)
        kind = obj.get("kind", "event")
        if kind == "event":
            item, bad = decode_event(obj, seq=offset, reserved=_MESSAGE_FIELDS)
            if bad is not None:  # (the dead letter shows the message without its kind, as it always did)
                item, bad = decode_event({k: v for k, v in obj.items() if k != "kind"}, seq=offset)
            if item is not None and self._types is not None:
                payload, reason = self._types.normalize(item[5])
                if payload is None:
                    return None, (offset, "decode", f"wrong schema: {reason}", self._source, item[2],
                                  raw_json(obj))
                item = (*item[:5], payload)
            return item, bad
        if kind == "label":
            return decode_label(obj, seq=offset)
        return None, (offset, "decode", f"unknown message kind {kind!r:.40}", "decode", None, raw_json(obj))

    def _check_placement(self, items: list[tuple]) -> None:
        if self._misplaced or self._n_partitions < 2:
            return
        for item in items:
            if item[1] == EVENT and shard_of(item[4], self._n_partitions) != self._partition:
                self._misplaced = True
                log.warning("%s: key %r is in partition %d, not %d (CRC-32): a replay of the lake with %d "
                            "shards will group keys differently from this live run", self._source, item[4],
                            self._partition, shard_of(item[4], self._n_partitions), self._n_partitions)
                return

    def snapshot(self) -> _State:
        # The resume offset may only pass rows that are in the lake or in this snapshot: the ones a
        # commit has not yet written travel with it, compressed and sealed (packed in parts as they came:
        # only the newest are pickled here), and polling goes on without waiting.
        if self._trace is not None:
            self._trace.mark("snapshot", self._partition, self._next, self._next)
        if self._recorder is not None:
            held = self._recorder.held()
            if held:
                return self._next, sealed.seal_parts(held, purpose=ITEMS_PURPOSE)
        return self._next

    def close(self) -> None:
        try:
            if self._recorder is not None:
                self._recorder.close()
        finally:
            self._consumer.close()


class KafkaSource(FixedPartitionedSource[Batch, _State]):
    """Events and labels from one Kafka topic, a batch per poll, one shard per partition.

    ``stop_at_end`` ends the stream when every partition is read to its end (tests,
    catch-up jobs); otherwise it runs live. With ``lake``, every accepted event and
    label is also appended to the lake's ``events``/``labels`` (see the module
    docstring), committed when a partition holds ``flush_rows`` of them and when the
    oldest is ``flush_seconds`` old, on a thread beside the dataflow's (the batch
    goes on to the models at once); a snapshot holds the rows not yet committed
    beside the offset, and a restart commits them first.

    A batch is what has arrived, up to ``batch_size``: with the default
    ``poll_timeout_s=0`` a poll never waits for more, so a message is handed on
    as soon as librdkafka has fetched it. A timeout above zero makes each poll wait
    up to that long for a full batch (the partitions of a worker are polled in turn,
    so the waits add up): larger batches, higher latency. ``trace`` names a file
    prefix for a :class:`~dataflows.trace.StageTrace` (``consumed``, ``recorded``).
    """

    def __init__(self, brokers: str, topic: str, *, batch_size: int = 1_000, poll_timeout_s: float = 0.0,
                 stop_at_end: bool = False, config: dict[str, Any] | None = None, lake: str | None = None,
                 flush_rows: int = 25_000, flush_seconds: float = 5.0, trace: str | None = None,
                 task: str = "binary") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if not topic:
            raise ValueError(f"topic must be a non-empty string, got {topic!r}")
        if flush_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, got {flush_rows!r}")
        if flush_seconds <= 0:
            raise ValueError(f"flush_seconds must be > 0, got {flush_seconds!r}")
        if poll_timeout_s < 0:
            raise ValueError(f"poll_timeout_s must be >= 0, got {poll_timeout_s!r}")
        self.brokers, self.topic = brokers, topic
        self.batch_size, self.poll_timeout_s, self.stop_at_end = batch_size, poll_timeout_s, stop_at_end
        self.config = config
        self.lake, self.flush_rows, self.flush_seconds = lake, flush_rows, flush_seconds
        self.trace = trace
        self.task = task  # the lake's (lake.tasks): which labels are valid, and their type in the lake
        self._partitions: list[int] | None = None

    def partitions(self) -> list[int]:
        if self._partitions is not None:
            return self._partitions
        consumer = _consumer(self.brokers, self.config)
        try:
            meta = consumer.list_topics(self.topic, timeout=10)
        finally:
            consumer.close()
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise ValueError(f"Kafka topic {self.topic!r} not found at {self.brokers}")
        self._partitions = sorted(topic.partitions)
        return self._partitions

    def list_parts(self) -> list[str]:
        return [f"{self.topic}#{p}" for p in self.partitions()]

    def build_part(self, step_id: str, for_part: str, resume_state: _State) -> _KafkaPartition:
        partition = int(for_part.rsplit("#", 1)[1])
        return _KafkaPartition(self.brokers, self.topic, partition, start=resume_state,
                               batch_size=self.batch_size, poll_timeout_s=self.poll_timeout_s,
                               stop_at_end=self.stop_at_end, config=self.config,
                               n_partitions=len(self.partitions()), lake=self.lake,
                               flush_rows=self.flush_rows, flush_seconds=self.flush_seconds,
                               trace=StageTrace(self.trace) if self.trace else None, task=self.task)


LINGER_MS = 1.0
"""How long the predictions producer waits to put more messages into a request (librdkafka's ``linger.ms``)."""


class DeliveryError(RuntimeError):
    """Predictions the brokers did not acknowledge; the dataflow stops before its next snapshot."""


class _PredictionsPartition(StatefulSinkPartition[Output, None]):
    """Sends a shard's served predictions as soon as they are scored; waits for the brokers'
    acknowledgements only at the epoch's snapshot (and at close, or when the producer's local queue is
    full), not after every batch: a round trip to the brokers per batch held the prediction path
    (~7% of its time at 5,000 messages/s, up to tens of ms where the brokers were slow)."""

    def __init__(self, producer: ck.Producer, topic: str, *, timeout_s: float,
                 trace: StageTrace | None = None) -> None:
        self._topic = topic
        self._timeout_s = timeout_s
        self._trace = trace
        self._producer = producer  # shared by the sink's partitions in this process (one set of broker threads)
        self._failed = 0
        self._first_error: str | None = None

    def _delivered(self, err: ck.KafkaError | None, msg: ck.Message) -> None:
        if err is not None:
            self._failed += 1
            if self._first_error is None:
                self._first_error = str(err)

    def write_batch(self, items: list[Output]) -> None:
        produce, delivered = self._producer.produce, self._delivered
        for out in items:
            preds = out.tables.get("predictions")
            if preds is None:
                continue
            if self._trace is not None and preds.num_rows:
                seqs = rows.pylist(preds, "seq")
                span = (min(seqs), max(seqs))
                self._trace.mark("scored", out.shard, *span)
            for key, value in messages(preds):
                try:
                    produce(self._topic, key=key, value=value, on_delivery=delivered)
                except BufferError:  # the local queue is full: let it drain, then send
                    self._settle()
                    produce(self._topic, key=key, value=value, on_delivery=delivered)
            self._producer.poll(0)  # delivery reports so far (a failure stops the dataflow at once)
            if self._trace is not None and preds.num_rows:
                self._trace.mark("sent", out.shard, *span)
        if self._failed:
            self._raise()

    def snapshot(self) -> None:
        # Bytewax snapshots every partition written to in an epoch before it commits the epoch's recovery
        # state: a snapshot never covers a prediction the brokers have not acknowledged.
        self._settle()

    def _settle(self) -> None:
        """Wait until the brokers acknowledged every message sent; raise if one failed or is still
        waiting. After a crash the predictions since the last snapshot are sent again (at-least-once),
        none is lost."""
        left = self._producer.flush(self._timeout_s)
        if self._failed or left:
            self._raise(left)

    def _raise(self, left: int = 0) -> None:
        failed, first = self._failed, self._first_error
        self._failed, self._first_error = 0, None
        what = f"{failed} failed ({first})" if failed else f"{left} unacknowledged after {self._timeout_s:g} s"
        raise DeliveryError(f"predictions topic {self._topic!r}: {what}; stopping before the next snapshot "
                            "so that a restart sends them again")

    def close(self) -> None:
        self._settle()


class KafkaPredictionsSink(FixedPartitionedSink[Output, None]):
    """Served (champion) predictions to a Kafka topic as JSON, keyed by entity key.

    At-least-once: a prediction is sent as soon as its batch is scored; the brokers'
    acknowledgements are waited for when Bytewax snapshots the epoch (a delivery callback
    counts failures), so a failed or timed-out delivery raises :class:`DeliveryError` before a
    snapshot could cover it, and a restart sends the predictions since the last snapshot again
    (the lake's copy stays exactly-once). One partition per shard, named as ``part_names``
    (give the lake sink's: the shard's rows and its predictions go to the same worker); the
    partitions of a process share one producer.
    """

    def __init__(self, brokers: str, topic: str, *, config: dict[str, Any] | None = None,
                 timeout_s: float = 30.0, trace: str | None = None, partitions: int = 1,
                 part_names: list[str] | None = None) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions!r}")
        if part_names is not None and len(part_names) != partitions:
            raise ValueError(f"part_names must name {partitions} partitions, got {part_names!r}")
        self.brokers, self.topic, self.config, self.timeout_s = brokers, topic, config, timeout_s
        self.trace = trace
        self.partitions = partitions
        self.part_names = list(part_names) if part_names is not None else None
        self._producer: ck.Producer | None = None
        self._lock = threading.Lock()

    def list_parts(self) -> list[str]:
        return self.part_names or [f"predictions-{i:03d}" for i in range(self.partitions)]

    def part_fn(self, item_key: str) -> int:
        return int(item_key) % self.partitions

    def producer(self) -> ck.Producer:
        """The producer this process's partitions share (made at the first partition built)."""
        with self._lock:
            if self._producer is None:
                # A linger of 1 ms: a step's messages (produced within well under a millisecond) leave in one request.
                # With none, the first left alone and the rest in more requests, thousands a second: once a batch
                # no longer waited for the acknowledgements (which spaced the requests out), that loaded the
                # brokers until, at 5,000 messages/s, predictions waited seconds in their queue within a minute.
                self._producer = ck.Producer({"bootstrap.servers": self.brokers, "linger.ms": LINGER_MS,
                                              **(self.config or {})})
            return self._producer

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _PredictionsPartition:
        return _PredictionsPartition(self.producer(), self.topic, timeout_s=self.timeout_s,
                                     trace=StageTrace(self.trace) if self.trace else None)

