"""One Delta commit per table for several writers: each writer's rows once, each writer's app transaction."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from dataflows.items import Output
from dataflows.sinks import DeltaSinkPartition
from lake.errors import WriterFencedError, WriterStoppedError
from lake.table import TableWriter, append_together, read_table, table_uri, table_version

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _learn_log(shard: int, seqs: range) -> pa.Table:
    n = len(seqs)
    return pa.table({"run_id": ["r"] * n, "shard": pa.array([shard] * n, pa.int32()),
                     "seq": pa.array(list(seqs), pa.int64()), "event_id": [f"{shard}-{i}" for i in seqs],
                     "event_time": [T0] * n, "label_time": [T0] * n, "model": ["linear"] * n, "label": [1] * n,
                     "score": [0.5] * n, "learn_order": list(seqs), "model_version": ["v0"] * n})


@pytest.fixture
def patient_gather(monkeypatch):
    """The live sinks' commit lane waits up to 2 s for the other writers of a table (not 0.05 s): on a loaded
    machine the next partition's rows can come later than that, and a test counting commits would see two. A
    commit still starts as soon as every writer seen lately has its rows queued."""
    from dataflows.committer import committer

    monkeypatch.setattr(committer(low=True), "gather_s", 2.0)


def _writers(lake, n: int) -> list[TableWriter]:
    return [TableWriter(lake, "learn_log", writer_id=f"r/learn_log/shard-{s}") for s in range(n)]


def test_one_commit_holds_every_writers_rows_once_and_each_writers_position(tmp_path):
    lake = tmp_path / "lake"
    writers = _writers(lake, 3)
    out = append_together([(w, _learn_log(s, range(0, 10 + s)), 9 + s) for s, w in enumerate(writers)])
    assert out == [10, 11, 12]
    assert table_version(lake, "learn_log") == 0, "one commit for the three writers"
    dt = DeltaTable(table_uri(lake, "learn_log"))
    assert [dt.transaction_version(w.writer_id) for w in writers] == [9, 10, 11]
    # a second round: one commit again, each position moved on
    append_together([(w, _learn_log(s, range(10 + s, 20)), 19) for s, w in enumerate(writers)])
    assert table_version(lake, "learn_log") == 1
    dt = DeltaTable(table_uri(lake, "learn_log"))
    assert [dt.transaction_version(w.writer_id) for w in writers] == [19, 19, 19]
    rows = read_table(lake, "learn_log")
    assert rows.height == 60 and rows["event_id"].is_unique().all()


def test_a_replayed_combined_commit_writes_nothing_twice(tmp_path):
    lake = tmp_path / "lake"
    first = _writers(lake, 2)
    append_together([(w, _learn_log(s, range(0, 20)), 19) for s, w in enumerate(first)])
    # After a restart the same batches come again (recovery is at-least-once), one of them with newer rows too.
    again = _writers(lake, 2)
    out = append_together([(again[0], _learn_log(0, range(0, 20)), 19),
                           (again[1], _learn_log(1, range(10, 30)), 29)])
    assert out == [0, 10], "shard 0's batch skipped, shard 1's committed rows dropped, its new ones written"
    assert append_together([(w, _learn_log(s, range(0, 20)), 19) for s, w in enumerate(_writers(lake, 2))]) \
        == [0, 0]
    assert table_version(lake, "learn_log") == 1, "nothing to write makes no commit"
    rows = read_table(lake, "learn_log")
    assert rows.height == 50 and rows["event_id"].is_unique().all()


def test_a_fenced_writer_refuses_the_whole_combined_commit_and_nothing_lands_twice(tmp_path):
    lake = tmp_path / "lake"
    mine = _writers(lake, 2)
    append_together([(w, _learn_log(s, range(0, 10)), 9) for s, w in enumerate(mine)])
    # A second process with the same run id commits shard 0's next rows under the same writer id.
    TableWriter(lake, "learn_log", writer_id="r/learn_log/shard-0").append(_learn_log(0, range(10, 20)), position=19)
    out = append_together([(w, _learn_log(s, range(10, 20)), 19) for s, w in enumerate(mine)])
    assert isinstance(out[0], WriterFencedError) and "shard-0" in str(out[0])
    assert isinstance(out[1], WriterStoppedError) and "shard-0 fenced" in str(out[1])
    rows = read_table(lake, "learn_log")
    assert rows.height == 30 and rows["event_id"].is_unique().all(), "nothing of the refused commit landed"
    # Both writers of the refused commit stop: shard 1 passing position 19 later would skip its rows for good.
    with pytest.raises(WriterStoppedError, match="shard-1"):
        mine[1].append(_learn_log(1, range(20, 30)), position=29)
    # Restarted, shard 1 writes its rows once.
    assert TableWriter(lake, "learn_log", writer_id="r/learn_log/shard-1").append(
        _learn_log(1, range(10, 30)), position=29) == 20
    rows = read_table(lake, "learn_log")
    assert rows.height == 50 and rows["event_id"].is_unique().all()


def test_an_entry_that_fails_alone_does_not_stop_the_others(tmp_path):
    lake = tmp_path / "lake"
    good, bad = _writers(lake, 2)
    out = append_together([(good, _learn_log(0, range(0, 5)), 4),
                           (bad, _learn_log(1, range(0, 5)).drop_columns(["event_id"]), 4)])
    assert out[0] == 5 and "event_id" in str(out[1])
    assert read_table(lake, "learn_log").height == 5


def _sinks(lake: str, n: int, **kw) -> list[DeltaSinkPartition]:
    return [DeltaSinkPartition(lake, run_id="r", flush_rows=10**6, snapshot_rows=True, **kw) for _ in range(n)]


def test_the_live_sinks_of_four_shards_make_one_commit_where_they_made_four(tmp_path, patient_gather):
    # Four sink partitions on one worker (a shard each), rows every few ms, a commit due every 0.3 s: each
    # partition's writer commits every period, and the four commits of a period are one Delta commit.
    lake = str(tmp_path / "lake")
    parts = _sinks(lake, 4, flush_seconds=0.3, compact_every=None)
    seq, stop = 0, time.monotonic() + 3.0
    while time.monotonic() < stop:
        for shard, part in enumerate(parts):
            part.write_batch([Output(shard=shard, tables={"learn_log": _learn_log(shard, range(seq, seq + 5))})])
        seq += 5
        time.sleep(0.005)
    for part in parts:
        part.close()
    writer_commits = sum(w.commits for part in parts for w in part._writers.values())
    delta_commits = table_version(lake, "learn_log") + 1
    assert writer_commits >= 30, f"each shard committed every period ({writer_commits} in all)"
    # (each close commits on its own: four of the commits; without combining there is one commit per append)
    assert delta_commits <= 0.5 * writer_commits, f"{delta_commits} Delta commits for {writer_commits} appends"
    rows = read_table(lake, "learn_log")
    assert rows.height == 4 * seq and rows["event_id"].is_unique().all()
    dt = DeltaTable(table_uri(lake, "learn_log"))
    assert {dt.transaction_version(f"r/learn_log/shard-{s}") for s in range(4)} == {seq - 1}


def test_a_lake_and_snapshot_of_per_shard_commits_resume_with_combined_ones(tmp_path, patient_gather):
    # What older code left: each shard's rows committed by its own writer (own commit, same writer ids) and a
    # recovery snapshot per partition holding rows not yet committed, one of which landed after the snapshot.
    lake = str(tmp_path / "lake")
    for shard in range(2):
        TableWriter(lake, "learn_log", writer_id=f"r/learn_log/shard-{shard}").append(
            _learn_log(shard, range(0, 40)), position=39)
    old = _sinks(lake, 2, flush_seconds=3600.0)
    for shard, part in enumerate(old):
        part.write_batch([Output(shard=shard, tables={"learn_log": _learn_log(shard, range(40, 60))})])
    states = [part.snapshot() for part in old]
    TableWriter(lake, "learn_log", writer_id="r/learn_log/shard-0").append(_learn_log(0, range(40, 60)), position=59)
    # kill -9; restarted with the snapshots, the run goes on: the rows come again after them
    again = [DeltaSinkPartition(lake, run_id="r", flush_rows=10**6, flush_seconds=0.05, snapshot_rows=True,
                                resume=state) for state in states]
    before = table_version(lake, "learn_log")
    for shard, part in enumerate(again):
        part.write_batch([Output(shard=shard, tables={"learn_log": _learn_log(shard, range(60, 80))})])
    time.sleep(0.1)
    for part in again:
        part.write_batch([])  # due: both shards' buffers handed over, then committed together
    for part in again:
        part.close()
    rows = read_table(lake, "learn_log")
    assert rows.height == 160 and rows["event_id"].is_unique().all()
    dt = DeltaTable(table_uri(lake, "learn_log"))
    assert [dt.transaction_version(f"r/learn_log/shard-{s}") for s in range(2)] == [79, 79]
    assert table_version(lake, "learn_log") == before + 1, "the two shards' last rows in one commit"


def test_the_recorders_of_four_kafka_partitions_commit_each_table_once_for_all(tmp_path):
    # Four partitions' recorders in one process, events and labels every few ms, commits due every 0.3 s:
    # the partitions' commits of a table are one Delta commit, each partition's offset in it.
    from dataflows.items import EVENT, LABEL
    from dataflows.kafka_record import PartitionRecorder
    from dataflows.kafka_types import PayloadTypes

    lake = str(tmp_path / "lake")
    recs = [PartitionRecorder(lake, "t", p, PayloadTypes(None), flush_rows=10**6, flush_seconds=0.3)
            for p in range(4)]
    offset, t_us = 0, 1_767_225_600_000_000
    start = time.monotonic()
    # at least 3 s, and until the partitions made 30 appends (a loaded machine commits less often; at most 20 s)
    while time.monotonic() < start + 3.0 or (sum(rec._events.commits for rec in recs) < 30
                                             and time.monotonic() < start + 20.0):
        for p, rec in enumerate(recs):
            rec.add([(offset, EVENT, f"{p}-{offset}", t_us, "k", {}),
                     (offset + 1, LABEL, f"{p}-{offset}", 1, t_us, "k")])
            rec.maybe_flush()
        offset += 2
        time.sleep(0.005)
    for rec in recs:
        rec.close()
    appends = sum(rec._events.commits for rec in recs)
    assert appends >= 30, f"each partition committed every period ({appends} in all)"
    # (each close commits on its own: four of the commits; without combining there is one commit per append)
    # (0.6: on a loaded machine a partition's rows sometimes miss the gather of the others'; without it: 1.0)
    assert table_version(lake, "events") + 1 <= 0.6 * appends, f"{table_version(lake, 'events') + 1} commits"
    events, labels = read_table(lake, "events"), read_table(lake, "labels")
    assert events.height == labels.height == 2 * offset and events["event_id"].is_unique().all()
    dt = DeltaTable(table_uri(lake, "events"))
    assert {dt.transaction_version(f"kafka/t/{p}/events") for p in range(4)} == {offset - 2}
