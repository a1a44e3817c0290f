"""Fencing: one owner per writer id and per run; a second one stops instead of writing twice."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import polars as pl
import pytest

from lake.arrow import rows_to_arrow
from lake.errors import WriterFencedError
from lake.table import TableWriter, read_table


def _rows(seqs: range):
    return rows_to_arrow("drift_events", [("r", 0, i, "adwin", "error", "m", i, f"e{i}", 1_000_000 * i)
                                          for i in seqs])


def test_a_second_writer_with_the_same_id_is_fenced_at_commit(tmp_path):
    lake = str(tmp_path / "lake")
    first = TableWriter(lake, "drift_events", writer_id="r/drift_events/shard-0")
    first.append(_rows(range(0, 3)), position=2)
    second = TableWriter(lake, "drift_events", writer_id="r/drift_events/shard-0")
    assert second.committed_position == 2
    second.append(_rows(range(3, 6)), position=5)  # it resumes where the table stands
    with pytest.raises(WriterFencedError, match=r"drift_events.*r/drift_events/shard-0.*another process"):
        first.append(_rows(range(3, 6)), position=5)  # it would have written rows 3..5 again
    table = read_table(lake, "drift_events")
    assert table.height == 6 and table["seq"].is_unique().all()


def test_writers_racing_on_one_id_never_write_a_row_twice(tmp_path):
    # Both load the empty table, then commit in lockstep: Delta's transaction conflict or the
    # re-read position stops one of them; before fencing, every row landed twice.
    lake = str(tmp_path / "lake")
    fenced: list[BaseException] = []
    barrier = threading.Barrier(2)

    def write() -> None:
        w = TableWriter(lake, "drift_events", writer_id="r/drift_events/shard-0")
        w.committed_position  # noqa: B018 - read the (empty) table first, as a starting run does
        barrier.wait()
        try:
            for start in range(0, 60, 3):
                w.append(_rows(range(start, start + 3)), position=start + 2)
        except WriterFencedError as ex:
            fenced.append(ex)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    table = read_table(lake, "drift_events")
    assert table["seq"].is_unique().all(), "a row was written twice"
    assert len(fenced) >= 1


def _replay_cmd(lake: str, recovery: bool = True) -> list[str]:
    return [sys.executable, "-m", "dataflows.online", "--lake", lake, "--model", "linear,tree",
            "--run-id", "twice", "--rate", "1000", "--batch-size", "150", "--snapshot-s", "0.4",
            "--checkpoint-every", "500", *([] if recovery else ["--no-recovery"])]


@pytest.mark.slow
@pytest.mark.parametrize("recovery", [True, False], ids=["recovery", "no-recovery"])
def test_two_replays_with_one_run_id_at_once_write_every_row_once(synthetic_lake, subprocess_env, recovery):
    # Before fencing: 10,092 predictions and doubled checkpoints for 6,000 (event, model) pairs.
    # With recovery the second process is refused at once (the run's lock); without, the writers fence it.
    first = subprocess.Popen(_replay_cmd(synthetic_lake, recovery), env=subprocess_env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    second = subprocess.Popen(_replay_cmd(synthetic_lake, recovery), env=subprocess_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    logs = [p.communicate(timeout=180)[1] for p in (first, second)]
    codes = [first.returncode, second.returncode]

    def rows(table: str, cols: list[str]) -> pl.DataFrame:
        return read_table(synthetic_lake, table).filter(pl.col("run_id") == "twice").select(cols)

    assert rows("predictions", ["event_id", "model"]).is_unique().all(), "a prediction was written twice"
    assert rows("learn_log", ["event_id", "model"]).is_unique().all(), "a label was learned twice"
    assert rows("checkpoints", ["checkpoint_id"]).is_unique().all(), "a checkpoint was written twice"
    losers = [log for code, log in zip(codes, logs, strict=True) if code != 0]
    assert losers, "the two runs overlapped, so one of them must have been stopped"
    expected = "is already running in another process" if recovery else "is also committing from another process"
    for log in losers:
        assert expected in log, log[-3000:]
    if recovery:
        assert codes == [0, 2] and "Traceback" not in logs[1]  # one line, before any work
        assert logs[1].strip().splitlines()[-1].startswith("error: run 'twice' is already running")
    # Whatever the race left, the same command finishes the run: every event once per model.
    final = subprocess.run(_replay_cmd(synthetic_lake, recovery), env=subprocess_env, capture_output=True,
                           text=True, timeout=180)
    assert final.returncode == 0, final.stderr[-3000:]
    preds = rows("predictions", ["event_id", "model"])
    assert preds.height == 6_000 and preds.is_unique().all()
    assert rows("learn_log", ["event_id", "model"]).is_unique().all()


def test_after_a_failed_commit_the_writer_commits_nothing_more_and_a_restart_writes_the_rows(tmp_path):
    """A later commit would pass the failed rows' positions; a restart would then skip them for good."""
    import os
    import shutil

    from lake.errors import WriterStoppedError

    lake = str(tmp_path / "lake")
    writer = TableWriter(lake, "drift_events", writer_id="r/drift_events/shard-0")
    writer.append(_rows(range(0, 3)), position=2)
    table_dir = os.path.join(lake, "drift_events")
    shutil.move(table_dir, table_dir + ".away")
    with open(table_dir, "w") as f:  # a file where the table's folder goes: the next commit fails
        f.write("not a table")
    with pytest.raises(Exception):  # noqa: B017 - whatever the store raises
        writer.append(_rows(range(3, 6)), position=5)
    os.remove(table_dir)
    shutil.move(table_dir + ".away", table_dir)
    with pytest.raises(WriterStoppedError, match=r"drift_events.*stopped after a failed commit"):
        writer.append(_rows(range(6, 9)), position=8)  # would have skipped rows 3..5 on restart
    assert read_table(lake, "drift_events").height == 3
    restarted = TableWriter(lake, "drift_events", writer_id="r/drift_events/shard-0")
    assert restarted.append(_rows(range(0, 9)), position=8) == 6  # 3..8: nothing lost, nothing twice
    assert sorted(read_table(lake, "drift_events")["seq"].to_list()) == list(range(9))
