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

**Recording.** Given a lake, the source appends every event and label it accepts
to the lake's ``events`` and ``labels`` tables, so today's live stream is
tomorrow's replay. Each partition appends with its own Delta app transaction
``kafka/{topic}/{partition}/{table}`` at the highest Kafka offset it covers, and
drops rows at or below the committed offset: after a restart from the recovery
snapshot (whose offset only passes rows that are committed or held in the
snapshot itself, and a restart commits those first) nothing is skipped and
nothing is written twice, whichever run consumes the topic. Commits run on a
thread of their own, so a prediction never waits for the lake. An event
row's ``offset`` is :func:`lake_offset` of its partition and Kafka offset, so a
replay orders events of equal ``event_time`` as they arrived.

**Payload types** (:class:`PayloadTypes`). JSON has numbers, strings, booleans and
null; a Delta column has one type. The rule, applied in the source *before* the
models see an event, so a replay of the lake gives the models exactly the values
the live run gave them:

- a field the ``events`` table already has keeps that column's type: a number
  goes into an integer column only if it is integral (NaN becomes null), into a
  float column as a float; booleans fill bool columns (and count as 0/1 in
  numeric ones); strings fill string columns only;
- a new field takes its type from its first non-null value: any number →
  ``float64`` (JSON does not tell ``3`` from ``3.0`` reliably), boolean → ``bool``,
  string → ``string``; new columns are added with ``schema_mode="merge"``;
- null or absent fields are null in the lake (the featurizer treats both as
  missing);
- anything else (a string in a numeric column, a number in a string column, a
  list or an object) is a wrong-schema message: it goes to ``dead_letters`` with
  the field, the column's type and the value, and the models never see it.

Payload fields are put in the table's column order, so features are summed in
the same order live and in replay. A replay reproduces the live predictions when
each partition's messages arrived in time order (events by ``event_time``, each
label at its ``label_time``; ``python -m dataflows.produce`` sends them so) and keys
were partitioned by CRC-32 (:func:`dataflows.replay.shard_of`, librdkafka's
default for keyed messages): replay with ``shards`` = the topic's partitions.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC
from typing import Any

import confluent_kafka as ck
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from deltalake.exceptions import CommitFailedError

from dataflows.decode import decode_event, decode_label
from dataflows.items import EVENT, Batch, Output, raw_json
from dataflows.priority import lower_writer_priority
from dataflows.replay import FIXED_EVENT_COLUMNS, shard_of
from dataflows.trace import StageTrace
from dataflows.validate import validate_batch
from lake.schemas import UTC_TS, task_schema
from lake.table import TableWriter, exists, open_table
from monitoring.tasks import label_value

log = logging.getLogger(__name__)

_PARTITION_SHIFT = 40
_COMMIT_ATTEMPTS = 5


def lake_offset(partition: int, kafka_offset: int) -> int:
    """The ``offset`` of a live event in ``events``: increasing with arrival within a partition.

    Unique among one topic's events (up to 2**40 messages per partition) and above
    the offsets an ingest of fewer than 2**40 rows gives.

    >>> lake_offset(0, 7), lake_offset(3, 0) > lake_offset(2, 10**9)
    (1099511627783, True)
    """
    return ((partition + 1) << _PARTITION_SHIFT) + kafka_offset


# --------------------------------------------------------------------------- payload types

_KINDS = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "str": pa.string()}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _kind_of_type(type_: pa.DataType) -> str:
    if pa.types.is_integer(type_):
        return "int"
    if pa.types.is_floating(type_):
        return "float"
    if pa.types.is_boolean(type_):
        return "bool"
    if pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_string_view(type_):
        return "str"
    return "other"


def _kind_of_value(value: Any) -> str | None:
    """The column kind a new field gets from its first non-null value (``None``: not fillable)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "float"
    if isinstance(value, str):
        return "str"
    return None


def _convert(value: Any, kind: str) -> tuple[Any, bool]:
    """``(value as stored in a column of this kind, ok)``."""
    if value is None:
        return None, True
    if kind == "float":
        if isinstance(value, int | float):
            try:
                return float(value), True
            except OverflowError:
                return None, False
        return None, False
    if kind == "int":
        if isinstance(value, bool):
            return int(value), True
        if isinstance(value, int):
            return value, _INT64_MIN <= value <= _INT64_MAX
        if isinstance(value, float):
            if value != value:
                return None, True  # NaN is missing, as the featurizer reads it
            if math.isfinite(value) and value.is_integer() and _INT64_MIN <= value <= _INT64_MAX:
                return int(value), True
        return None, False
    if kind == "bool":
        return value, isinstance(value, bool)
    if kind == "str":
        return value, isinstance(value, str)
    return None, False


class PayloadTypes:
    """The column type of every payload field, and the rule that fits a live payload to it.

    >>> types = PayloadTypes(pa.schema([("n", pa.int64()), ("tag", pa.string())]))
    >>> types.normalize({"score": 3, "n": 2.0, "on": True, "tag": "x"})
    ({'n': 2, 'tag': 'x', 'score': 3.0, 'on': True}, None)
    >>> types.normalize({"tag": 5})[1]
    "field 'tag' must be a string (the lake's events column is string), got 5"
    >>> types.normalize({"n": 2.5})[1]
    "field 'n' must be an integral number (the lake's events column is int64), got 2.5"
    >>> types.arrow_type("score"), list(types.order)
    (DataType(double), ['n', 'tag', 'score', 'on'])
    """

    _NAMES = {"int": "an integral number", "float": "a number", "bool": "a boolean", "str": "a string"}

    def __init__(self, schema: pa.Schema | None = None) -> None:
        self._types: dict[str, pa.DataType] = {}
        self._kinds: dict[str, str] = {}
        self._lock = threading.Lock()  # the recorder's commit thread adopts a schema another writer merged
        if schema is not None:
            self.adopt(schema)

    @property
    def order(self) -> list[str]:
        """Payload columns in table order (new fields after the table's, as they came)."""
        with self._lock:
            return list(self._types)

    def arrow_type(self, name: str) -> pa.DataType:
        with self._lock:
            return self._types[name]

    def adopt(self, schema: pa.Schema) -> None:
        """Take the types of ``schema``'s payload columns (the table's types win)."""
        with self._lock:
            self._adopt(schema)

    def _adopt(self, schema: pa.Schema) -> None:
        for field in schema:
            if field.name in FIXED_EVENT_COLUMNS:
                continue
            self._types[field.name] = field.type
            self._kinds[field.name] = _kind_of_type(field.type)

    def normalize(self, payload: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """``(payload in column order and types, None)``, or ``(None, reason)`` for a wrong-schema payload."""
        with self._lock:
            return self._normalize(payload)

    def _normalize(self, payload: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        known: dict[str, Any] = {}
        new: dict[str, Any] = {}
        new_kinds: dict[str, str] = {}
        for name, value in payload.items():
            kind = self._kinds.get(name)
            if kind is None:
                if value is None:
                    new[name] = None
                    continue
                kind = _kind_of_value(value)
                if kind is None:
                    return None, (f"field {name!r} must be a number, string, bool or null, "
                                  f"got {type(value).__name__}")
                new_kinds[name] = kind
            converted, ok = _convert(value, kind)
            if not ok:
                if kind == "other":
                    return None, (f"field {name!r}: the lake's events column is {self._types[name]}; "
                                  "live messages fill number, bool and string columns only")
                column = self._types[name] if name in self._types else _KINDS[kind]
                return None, (f"field {name!r} must be {self._NAMES[kind]} (the lake's events column is "
                              f"{column}), got {value!r:.80}")
            (known if name in self._kinds else new)[name] = converted
        for name, kind in new_kinds.items():
            self._kinds[name] = kind
            self._types[name] = _KINDS[kind]
        if not new and list(known) == [n for n in self._types if n in known]:
            return known, None
        ordered = {name: known[name] for name in self._types if name in known}
        ordered.update(new)
        return ordered, None

    def column(self, name: str, values: list[Any]) -> pa.Array:
        """An Arrow column of ``name``; values that do not fit its type (a race between writers) become null."""
        with self._lock:
            type_, kind = self._types[name], self._kinds[name]
        try:
            return pa.array(values, type_)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            fitted = [_convert(v, kind) for v in values]
            lost = sum(1 for v, ok in fitted if not ok)
            log.warning("events: %d value(s) of %r do not fit its column type %s; stored as null",
                        lost, name, type_)
            return pa.array([v if ok else None for v, ok in fitted], type_)

    def event_rows(self, items: list[tuple], offsets: list[int], *, order: list[str] | None = None) -> pa.Table:
        """``events`` rows of event items ``(position, EVENT, event_id, time_us, key, payload)``, with their
        lake offsets; payload columns in ``order`` (default: as of now); all-null ones are left out (readers
        see null anyway)."""
        cols: dict[str, pa.Array] = {
            "event_id": pa.array([it[2] for it in items], pa.string()),
            "event_time": pa.array([it[3] for it in items], UTC_TS),
            "key": pa.array([it[4] for it in items], pa.string()),
            "offset": pa.array(offsets, pa.int64()),
        }
        present: set[str] = set()
        for it in items:
            present.update(k for k, v in it[5].items() if v is not None)
        for name in self.order if order is None else order:
            if name in present:
                cols[name] = self.column(name, [it[5].get(name) for it in items])
        return pa.table(cols)


# --------------------------------------------------------------------------- recording

def _offset(item: tuple) -> int:
    return item[0]


class _Recorder:
    """Appends the events and labels one partition accepted to the lake, once per Kafka offset.

    Commits run on a thread of the recorder's own, off the prediction path: the
    source hands rows over and goes on polling. One commit runs at a time (rows
    that come meanwhile wait for the next, so a slow commit grows the next one
    rather than a queue). :meth:`pending` gives the rows not yet known to be in the
    lake, which the source's snapshot holds beside its offset; :meth:`wait` returns
    once everything handed over is committed.
    """

    def __init__(self, lake: str, topic: str, partition: int, types: PayloadTypes, *, flush_rows: int,
                 flush_seconds: float, trace: StageTrace | None = None, task: str = "binary") -> None:
        self._lake, self._partition, self._types = lake, partition, types
        self._task = task
        self._flush_rows, self._flush_seconds = flush_rows, flush_seconds
        self._trace = trace
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"riverlake-record-{partition}",
                                        initializer=lower_writer_priority)
        self._running: Future[None] | None = None
        self._running_items: list[tuple] = []
        prefix = f"kafka/{topic}/{partition}"
        self._events = TableWriter(lake, "events", writer_id=f"{prefix}/events", compact_every=100)
        self._labels = TableWriter(lake, "labels", writer_id=f"{prefix}/labels", compact_every=100,
                                   schema=None if task == "binary" else task_schema("labels", task))
        self._ev: list[tuple] = []
        self._lb: list[tuple] = []
        self._since = 0.0

    def add(self, items: list[tuple]) -> None:
        if not items:
            return
        if not self._ev and not self._lb:
            self._since = time.monotonic()
        for item in items:
            (self._ev if item[1] == EVENT else self._lb).append(item)

    def maybe_flush(self) -> None:
        """Start a commit when the rows are due and none runs (raises a failed commit's error)."""
        if self._running is not None:
            if not self._running.done():
                return
            self._reap()
        n = len(self._ev) + len(self._lb)
        if n and (n >= self._flush_rows or time.monotonic() - self._since >= self._flush_seconds):
            self.flush()

    def flush(self) -> None:
        """Start committing every row handed over (after the running commit, if any)."""
        ev, self._ev = self._ev, []
        lb, self._lb = self._lb, []
        if ev or lb:
            if self._running is not None:
                self._reap()
            self._running = self._pool.submit(self._commit, ev, lb)
            self._running_items = sorted(ev + lb, key=_offset)

    def pending(self) -> list[tuple]:
        """The items handed over and not known to be committed, in offset order."""
        running = self._running_items if self._running is not None and not (
            self._running.done() and self._running.exception() is None) else []
        return running + sorted(self._ev + self._lb, key=_offset)

    def wait(self) -> None:
        """Commit every row handed over; returns when they are in the lake."""
        self.flush()
        if self._running is not None:
            self._reap()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)

    def _reap(self) -> None:
        running, self._running = self._running, None
        self._running_items = []
        if running is not None:
            running.result()  # re-raises a failed commit here, in the dataflow

    def _commit(self, ev: list[tuple], lb: list[tuple]) -> None:
        if ev:
            self._append(self._events, ev, self._event_rows)
        if lb:
            self._append(self._labels, lb, self._label_rows)
        if self._trace is not None:
            done = ev + lb
            self._trace.mark("recorded", self._partition, min(it[0] for it in done), max(it[0] for it in done))

    def _append(self, writer: TableWriter, items: list[tuple], rows) -> None:
        for attempt in range(_COMMIT_ATTEMPTS):
            done = writer.committed_position
            todo = items if done is None else [it for it in items if it[0] > done]
            if not todo:
                return
            try:
                writer.append(rows(todo), position=todo[-1][0])
                return
            except CommitFailedError as ex:
                # Another worker's commit (a new table, a merged column) won the race. The append
                # is idempotent: re-read the table and this writer's position, and try again.
                if attempt + 1 == _COMMIT_ATTEMPTS:
                    raise
                log.info("%s: commit lost a race (%s); retrying", writer.writer_id, ex)
                time.sleep(0.05 * (attempt + 1))
                writer = TableWriter(writer.lake, writer.table, writer_id=writer.writer_id,
                                     compact_every=writer.compact_every, schema=writer.schema)
                if writer.table == "events":
                    self._events = writer
                    if exists(self._lake, "events"):
                        self._types.adopt(pa.schema(open_table(self._lake, "events").schema().to_arrow()))
                else:
                    self._labels = writer

    def _event_rows(self, items: list[tuple]) -> pa.Table:
        return self._types.event_rows(items, [lake_offset(self._partition, it[0]) for it in items])

    def _label_rows(self, items: list[tuple]) -> pa.Table:
        task = self._task  # labels in the lake's task's type (validated before they were handed over)
        return pa.table({
            "event_id": pa.array([it[2] for it in items], pa.string()),
            "label": pa.array([label_value(task, it[3]) for it in items],
                              task_schema("labels", task).field("label").type),
            "label_time": pa.array([it[4] for it in items], UTC_TS),
        })


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


_State = int | tuple[int | None, list[tuple]] | None
"""A partition's resume state: the next offset, with the items before it not yet in the lake."""


class _KafkaPartition(StatefulSourcePartition[Batch, _State]):
    def __init__(self, brokers: str, topic: str, partition: int, *, start: _State, batch_size: int,
                 poll_timeout_s: float, stop_at_end: bool, config: dict[str, Any] | None,
                 n_partitions: int = 1, lake: str | None = None, flush_rows: int = 25_000,
                 flush_seconds: float = 5.0, trace: StageTrace | None = None, task: str = "binary") -> None:
        self._topic, self._partition, self._n_partitions = topic, partition, n_partitions
        self._task = task
        self._batch_size, self._timeout, self._stop_at_end = batch_size, poll_timeout_s, stop_at_end
        start, unrecorded = start if isinstance(start, tuple) else (start, [])
        self._next = start
        self._at_end = False  # librdkafka reports a partition's end once, when reached
        self._misplaced = False
        self._source = f"kafka:{topic}/{partition}"
        self._trace = trace
        self._types: PayloadTypes | None = None
        self._recorder: _Recorder | None = None
        if lake is not None:
            schema = open_table(lake, "events").schema().to_arrow() if exists(lake, "events") else None
            self._types = PayloadTypes(pa.schema(schema) if schema is not None else None)
            self._recorder = _Recorder(lake, topic, partition, self._types, flush_rows=flush_rows,
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
        if self._recorder is not None:
            self._recorder.maybe_flush()
        if batch is None:
            if self._at_end and self._stop_at_end:
                raise StopIteration
            return []
        return [batch]

    def _decode(self, value: bytes | None, offset: int) -> tuple[tuple | None, tuple | None]:
        try:
            obj = json.loads(value) if value is not None else None
        except (ValueError, UnicodeDecodeError):
            obj = None
        if not isinstance(obj, dict):
            return decode_event(value if value is not None else b"", seq=offset)
        kind = obj.get("kind", "event")
        if kind == "event":
            item, bad = decode_event({k: v for k, v in obj.items() if k != "kind"}, seq=offset)
            if item is not None and self._types is not None and isinstance(item[5], dict):
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
        # commit has not yet written travel with it, and polling goes on without waiting.
        if self._recorder is not None:
            unrecorded = self._recorder.pending()
            if unrecorded:
                return self._next, unrecorded
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


class DeliveryError(RuntimeError):
    """Predictions the brokers did not acknowledge; the dataflow stops before its next snapshot."""


class _PredictionsPartition(StatelessSinkPartition[Output]):
    def __init__(self, brokers: str, topic: str, config: dict[str, Any] | None, *, timeout_s: float,
                 trace: StageTrace | None = None) -> None:
        self._topic = topic
        self._timeout_s = timeout_s
        self._trace = trace
        # No linger: a batch's predictions are sent as soon as they are produced (librdkafka
        # still batches what is queued while a request is in flight).
        self._producer = ck.Producer({"bootstrap.servers": brokers, "linger.ms": 0, **(config or {})})
        self._failed = 0
        self._first_error: str | None = None

    def _delivered(self, err: ck.KafkaError | None, msg: ck.Message) -> None:
        if err is not None:
            self._failed += 1
            if self._first_error is None:
                self._first_error = str(err)

    def write_batch(self, items: list[Output]) -> None:
        produce, sent = self._producer.produce, 0
        for out in items:
            preds = out.tables.get("predictions")
            if preds is None:
                continue
            if self._trace is not None and preds.num_rows:
                span = (pc.min(preds.column("seq")).as_py(), pc.max(preds.column("seq")).as_py())
                self._trace.mark("scored", out.shard, *span)
            cols = ["event_id", "event_time", "key", "model", "model_version", "score", "prediction", "role"]
            cols += ["probabilities"] if "probabilities" in preds.column_names else []  # (multiclass)
            for row in preds.select(cols).to_pylist():
                if row.pop("role") != "champion":
                    continue
                row["event_time"] = row["event_time"].astimezone(UTC).isoformat()
                if "probabilities" in row:  # a map column reads as (class, probability) pairs
                    row["probabilities"] = dict(row["probabilities"])
                key, value = row["key"].encode(), json.dumps(row).encode()
                try:
                    produce(self._topic, key=key, value=value, on_delivery=self._delivered)
                except BufferError:  # the local queue is full: let it drain, then send
                    self._settle()
                    produce(self._topic, key=key, value=value, on_delivery=self._delivered)
                sent += 1
            self._producer.poll(0)
            if self._trace is not None and preds.num_rows:
                self._trace.mark("sent", out.shard, *span)
        if sent:
            self._settle()

    def _settle(self) -> None:
        """Wait until the brokers acknowledged every message sent; raise if one failed or is still
        waiting. Bytewax commits an epoch's snapshot only after its outputs were written, so a
        snapshot never covers a prediction that is not in the topic: after a crash the predictions
        since the last snapshot are sent again (at-least-once), none is lost. (The messages left
        when produced; this waits for their acknowledgements, a round trip to the brokers.)"""
        left = self._producer.flush(self._timeout_s)
        if self._failed or left:
            failed, first = self._failed, self._first_error
            self._failed, self._first_error = 0, None
            what = f"{failed} failed ({first})" if failed else f"{left} unacknowledged after {self._timeout_s:g} s"
            raise DeliveryError(f"predictions topic {self._topic!r}: {what}; stopping before the next snapshot "
                                "so that a restart sends them again")

    def close(self) -> None:
        self._settle()


class KafkaPredictionsSink(DynamicSink[Output]):
    """Served (champion) predictions to a Kafka topic as JSON, keyed by entity key.

    At-least-once: each written batch waits for the brokers' acknowledgements (a delivery
    callback counts failures); a failed or timed-out delivery raises :class:`DeliveryError`,
    so the dataflow stops before a snapshot could cover it, and a restart sends the
    predictions since the last snapshot again (the lake's copy stays exactly-once).
    """

    def __init__(self, brokers: str, topic: str, *, config: dict[str, Any] | None = None,
                 timeout_s: float = 30.0, trace: str | None = None) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.brokers, self.topic, self.config, self.timeout_s = brokers, topic, config, timeout_s
        self.trace = trace

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _PredictionsPartition:
        return _PredictionsPartition(self.brokers, self.topic, self.config, timeout_s=self.timeout_s,
                                     trace=StageTrace(self.trace) if self.trace else None)

