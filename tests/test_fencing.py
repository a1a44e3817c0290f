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
