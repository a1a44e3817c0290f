"""The live path is real-time: predictions do not wait for polls, lake commits or snapshots."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from dataflows.bench.live import run as bench_live
from dataflows.items import Output
from dataflows.sinks import DeltaSinkPartition
from lake.table import exists, read_table


@pytest.mark.slow
def test_a_paced_live_run_serves_predictions_in_milliseconds_before_the_lake_commits_them(tmp_path):
    # The flow in its own process as a user runs it (bytewax.run, recovery on, snapshots every 2 s),
    # fed 400 messages/s on 4 partitions. Before the fast path the median was ~1.3 s (a 0.2 s
    # poll wait per partition in turn, fetches idling 0.5 s, lake commits in the poll).
    res = bench_live(rate=400, seconds=4, snapshot_s=2, tmp=str(tmp_path))
    assert res["predicted"] == res["events"] > 500, "every event of the paced stream got its prediction"
    e2e, stages = res["end_to_end_ms"], res["stages_ms"]
    assert e2e["p50"] < 400, f"median produce-to-prediction latency {e2e} (load {res['load_average']})"
    # served before the lake has the events they are for: recording is off the prediction path
    assert stages["sent"]["p50"] < stages["recorded"]["p50"]
    assert stages["recorded"]["n"] == stages["consumed"]["n"], "every consumed event was recorded"
    # where the tail comes from: every measured event in one slice of the timeline, and the snapshots' times
    assert sum(s["n"] for s in res["timeline"]) == res["predicted"]
    assert all(s["p50"] <= s["max"] for s in res["timeline"])
    assert res["snapshots_at_s"], "the sources marked their snapshots (every 2 s)"
    assert 0 < res["machine_busy_cores"] <= (os.cpu_count() or 1) + 0.01


@pytest.mark.slow
def test_the_transport_alone_is_measured_with_a_relay_in_place_of_the_flow(tmp_path):
    # What the two hops through the cluster cost with the flow's consumer and producer settings and no work
    # between them: the floor under the live path's figures (BENCHMARKS.md, issue 19).
    res = bench_live(rate=400, seconds=2, tmp=str(tmp_path), relay=True)
    assert res["relay"] and "stages_ms" not in res
    assert res["predicted"] == res["events"] > 300, "the relay wrote every event's id to the predictions topic"
    assert res["end_to_end_ms"]["p50"] < 400, res["end_to_end_ms"]


def _output(shard: int, seqs: range) -> Output:
    n, t = len(seqs), datetime(2026, 1, 1, tzinfo=UTC)
    rows = pa.table({"run_id": ["r"] * n, "shard": pa.array([shard] * n, pa.int32()),
                     "seq": pa.array(list(seqs), pa.int64()), "event_id": [f"{shard}-{i}" for i in seqs],
                     "event_time": [t] * n, "label_time": [t] * n, "model": ["linear"] * n, "label": [1] * n,
                     "score": [0.5] * n, "learn_order": list(seqs), "model_version": ["v0"] * n})
    return Output(shard=shard, tables={"learn_log": rows})


def test_a_snapshot_does_not_wait_for_the_lake_and_a_restart_from_it_loses_and_doubles_nothing(tmp_path):
    lake = str(tmp_path / "lake")
    part = DeltaSinkPartition(lake, run_id="r", flush_rows=10**6, flush_seconds=3600.0, snapshot_rows=True)
    part.write_batch([_output(0, range(0, 100)), _output(1, range(0, 50))])
    state = part.snapshot()
    assert not exists(lake, "learn_log"), "the snapshot returned before any commit"
    part.write_batch([_output(0, range(100, 120))])  # after the snapshot: the restart replays these
    # kill -9 here. The sink may have started a commit after the snapshot (phased to the next one): a dead
    # process's commit has landed or never will, so let it finish before the restart (else the two
    # "processes" race and fencing stops the second, as it must).
    part._reap(block=True)
    # A restart from the snapshot writes its rows first (the ones a commit already wrote are skipped).
    again = DeltaSinkPartition(lake, run_id="r", flush_rows=10**6, flush_seconds=3600.0, snapshot_rows=True,
                               resume=state)
    again.write_batch([_output(0, range(100, 120))])
    again.close()
    rows = read_table(lake, "learn_log")
    assert rows.height == 170 and rows["event_id"].is_unique().all()
    # a second restart from the same snapshot (the run died again before its next one) doubles nothing
    DeltaSinkPartition(lake, run_id="r", flush_rows=10**6, flush_seconds=3600.0, snapshot_rows=True,
                       resume=state).close()
    assert read_table(lake, "learn_log").height == 170


def test_commits_phased_to_the_snapshots_leave_a_snapshot_only_the_rows_since_and_a_restart_doubles_nothing(
        tmp_path):
    # Snapshots every 0.6 s, rows coming all the time, no periodic commit in the run (flush_seconds an
    # hour): once the first snapshot showed the period (its time since the sink was built), the sink
    # commits everything shortly before each expected snapshot, so a snapshot holds (and pickles on the
    # prediction path) a fraction of a period's rows, not everything since the start.
    import time

    lake, period, seq = str(tmp_path / "lake"), 0.6, 0
    part = DeltaSinkPartition(lake, run_id="r", flush_rows=10**6, flush_seconds=3600.0, snapshot_rows=True,
                              phased=True)
    held, written, state = [], [], None
    next_snapshot = time.monotonic() + period
    for k in range(7):
        start = seq
        while time.monotonic() < next_snapshot:
            part.write_batch([_output(0, range(seq, seq + 10))])
            seq += 10
            time.sleep(0.005)
        state = part.snapshot()
        next_snapshot += period
        written.append(seq - start)
        # the rows the snapshot holds: what a restart from it commits to an empty lake
        other = str(tmp_path / f"held-{k}")
        DeltaSinkPartition(other, run_id="r", flush_rows=10**6, flush_seconds=3600.0, snapshot_rows=True,
                           resume=state).close()
        held.append(read_table(other, "learn_log").height if exists(other, "learn_log") else 0)
    assert held[0] == written[0], f"before the period is known a snapshot holds every row ({held})"
    # (one snapshot may find its phased commit still running, e.g. behind a collection of the test process's heap:
    # then it holds that commit's rows, as it must)
    small = [h < 0.5 * w for h, w in zip(held[2:], written[2:], strict=True)]
    assert sum(small) >= len(small) - 1, f"rows held per snapshot {held}, rows written per period {written}"
    # kill -9 after the last snapshot: the rows after it come again; a restart loses and doubles nothing
    part.write_batch([_output(0, range(seq, seq + 10))])
    again = DeltaSinkPartition(lake, run_id="r", flush_rows=10**6, flush_seconds=3600.0, snapshot_rows=True,
                               resume=state)
    again.write_batch([_output(0, range(seq, seq + 10))])
    again.close()
    rows = read_table(lake, "learn_log")
    assert rows.height == seq + 10 and rows["event_id"].is_unique().all()
