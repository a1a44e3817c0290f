"""What a live Kafka partition's snapshot holds: its offset and the items not yet in the lake, sealed.

Against librdkafka's mock cluster (the real protocol on 127.0.0.1; see ``tests/test_kafka.py``).
"""

from __future__ import annotations

import pickle
import time

import pytest

from dataflows.kafka import ITEMS_PURPOSE, KafkaSource
from dataflows.kafka_record import PART_ITEMS
from dataflows.produce import frame_messages, send
from dataflows.sealed import is_sealed_parts, unseal_parts
from lake import integrity
from lake.table import exists, read_table
from tests.synthetic import synthetic_frames
from tests.test_kafka import mock_cluster

N = 3_000  # events, and as many labels: more than PART_ITEMS a partition, so a snapshot holds packed parts


@pytest.fixture(scope="module")
def topic_with_messages():
    with mock_cluster() as brokers:
        events, labels = synthetic_frames(N, seed=5, keys="abcdefgh")
        send(brokers, "snap", frame_messages(events, labels))
        yield brokers


def _source(brokers: str, lake: str) -> KafkaSource:
    # no commit before the snapshot: every item read is held in it
    return KafkaSource(brokers, "snap", lake=lake, stop_at_end=True, flush_rows=10**6, flush_seconds=3600.0)


def _read_to_end(part) -> int:
    n, deadline = 0, time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            n += sum(len(b.items) for b in part.next_batch())
        except StopIteration:
            return n
    raise AssertionError("the partition did not reach its end")


def _snapshot_of_partition_0(brokers: str, lake: str):
    part = _source(brokers, lake).build_part("kafka", "snap#0", None)
    n = _read_to_end(part)
    return n, part.snapshot()  # then kill -9: the partition is dropped, nothing handed over is committed


def _rows(lake: str, table: str) -> int:
    return read_table(lake, table).height if exists(lake, table) else 0


def test_a_snapshot_holds_the_items_not_in_the_lake_compressed_and_sealed_and_a_restart_commits_them(
        topic_with_messages, tmp_path):
    brokers, lake = topic_with_messages, str(tmp_path / "lake")
    n, state = _snapshot_of_partition_0(brokers, lake)
    assert n > PART_ITEMS and not exists(lake, "events"), "nothing was committed before the snapshot"
    offset, held = state
    assert offset == n and is_sealed_parts(held), "the items travel sealed, not as plain tuples"
    integrity.check_plain(pickle.dumps(state), what="the source's snapshot")  # what check_recovery lets through
    items = [it for part in unseal_parts(held, purpose=ITEMS_PURPOSE, what="test") for it in part]
    assert [it[0] for it in items] == list(range(n)), "every item read, in offset order"
    assert len(held[1]) < 0.5 * len(pickle.dumps(items, protocol=5)), "compressed"
    # a restart from the snapshot commits them before it reads on; a second restart from it doubles nothing
    for _ in range(2):
        part = _source(brokers, lake).build_part("kafka", "snap#0", state)
        assert _read_to_end(part) == 0, "it resumes after the snapshot's offset"
        part.close()
    events, labels = read_table(lake, "events"), read_table(lake, "labels")
    assert events.height + labels.height == n
    assert events["event_id"].is_unique().all() and labels["event_id"].is_unique().all()


def test_a_snapshot_of_the_older_plain_form_still_resumes(topic_with_messages, tmp_path):
    brokers = topic_with_messages
    n, state = _snapshot_of_partition_0(brokers, str(tmp_path / "first"))
    items = [it for part in unseal_parts(state[1], purpose=ITEMS_PURPOSE, what="test") for it in part]
    lake = str(tmp_path / "lake")
    part = _source(brokers, lake).build_part("kafka", "snap#0", (state[0], items))  # riverlake before the seal
    assert _read_to_end(part) == 0
    part.close()
    assert _rows(lake, "events") + _rows(lake, "labels") == n


def test_tampered_items_in_a_snapshot_are_refused_before_anything_is_unpickled_or_written(
        topic_with_messages, tmp_path):
    brokers = topic_with_messages
    n, (offset, (tag, data)) = _snapshot_of_partition_0(brokers, str(tmp_path / "first"))
    lake = str(tmp_path / "lake")
    forged = data[:-1] + bytes([data[-1] ^ 1])
    for state in ((offset, (tag, forged)), (offset, ("0" * 64, data)), (offset, (tag, data + b"\x00" * 8))):
        with pytest.raises(integrity.IntegrityError, match="recovery state of kafka:snap/0: HMAC does not match"):
            _source(brokers, lake).build_part("kafka", "snap#0", state)
    assert not exists(lake, "events") and not exists(lake, "labels"), "nothing ran"
