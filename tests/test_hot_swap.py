"""A running dataflow follows a champion promotion between two events."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa

from dataflows.online import run_replay
from lake.schemas import TABLES
from lake.table import append, exists, read_table


def _promotion(**values) -> pa.Table:
    """A ``promotions`` row with the given values; other columns typed defaults (or null)."""
    schema = TABLES["promotions"]
    cols = {}
    for field in schema:
        if field.name in values:
            cols[field.name] = pa.array([values[field.name]], field.type)
        elif field.nullable:
            cols[field.name] = pa.nulls(1, field.type)
        elif pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            cols[field.name] = pa.array([""], field.type)
        elif pa.types.is_timestamp(field.type):
            cols[field.name] = pa.array([datetime.now(UTC)], field.type)
        else:
            cols[field.name] = pa.array([0], field.type).cast(field.type)
    return pa.table(cols)


def test_live_dataflow_switches_champion_between_two_events(synthetic_lake):
    errors: list[BaseException] = []

    def replay():
        try:
            run_replay(synthetic_lake, "linear,tree", run_id="live", rate=3_000, batch_size=100,
                       flush_seconds=0.2, control_interval_s=0.0)
        except BaseException as ex:  # noqa: BLE001 - surfaced below
            errors.append(ex)

    thread = threading.Thread(target=replay)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if exists(synthetic_lake, "predictions") and read_table(synthetic_lake, "predictions").height > 0:
            break
        time.sleep(0.05)
    append(synthetic_lake, "promotions",
           _promotion(run_id="live", champion="tree", previous="linear", decision="promote",
                      decided_at=datetime.now(UTC)),
           writer_id="test-promotion", position=1)
    thread.join(timeout=120)
    assert not errors, errors
    preds = read_table(synthetic_lake, "predictions").filter(pl.col("run_id") == "live")
    # every event: exactly one served (champion) prediction and one shadow prediction
    per_event = preds.group_by("event_id").agg(
        (pl.col("role") == "champion").sum().alias("champions"), pl.len().alias("rows"))
    assert per_event.height == 3_000
    assert (per_event["champions"] == 1).all() and (per_event["rows"] == 2).all()
    served = preds.filter(pl.col("role") == "champion").sort("seq")["model"].to_list()
    switch = served.index("tree")
    assert 0 < switch < len(served) - 1, "the switch happened mid-stream"
    assert served[:switch] == ["linear"] * switch and set(served[switch:]) == {"tree"}
    # each row says which checkpoint made it
    assert preds["model_version"].str.starts_with(preds["model"]).all()
