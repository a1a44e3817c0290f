"""Compaction and vacuum running while the dataflow appends never lose or corrupt rows."""

from __future__ import annotations

import threading

import polars as pl

from dataflows.online import run_replay
from lake.maintain import maintain
from lake.table import exists, open_table, read_table


def test_compaction_during_a_running_replay(synthetic_lake):
    errors: list[BaseException] = []

    def replay():
        try:
            run_replay(synthetic_lake, "linear", run_id="busy", rate=4_000, batch_size=100, flush_rows=200,
                       flush_seconds=0.05, recovery=False)
        except BaseException as ex:  # noqa: BLE001 - surfaced below
            errors.append(ex)

    thread = threading.Thread(target=replay)
    thread.start()
    rounds = 0
    while thread.is_alive():
        if exists(synthetic_lake, "predictions"):
            maintain(synthetic_lake, ["predictions", "learn_log"], retention_hours=0)
            rounds += 1
        thread.join(timeout=0.1)
    assert not errors, errors
    assert rounds >= 3, "maintenance really ran while the dataflow wrote"
    maintain(synthetic_lake, ["predictions", "learn_log"], retention_hours=0)
    preds = read_table(synthetic_lake, "predictions").filter(pl.col("run_id") == "busy")
    learns = read_table(synthetic_lake, "learn_log").filter(pl.col("run_id") == "busy")
    assert preds.height == 3_000 and preds["event_id"].is_unique().all()
    assert learns.height == 3_000 and learns["event_id"].is_unique().all()
    # the sink's idempotence survives compaction: its position is still in the log
    assert open_table(synthetic_lake, "predictions").transaction_version("busy/predictions/shard-0") == \
        preds["seq"].max()
