"""The Kafka recorder builds its rows in parts as items come (off the prediction path); a commit joins them.

What the lake gets must not depend on where the parts were cut: a field that first comes in a later part, a
field all null in one part, rows of a part already in the lake (a restart), labels between events.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

from dataflows import kafka_record
from dataflows.items import EVENT, LABEL
from dataflows.kafka_record import PART_ITEMS, PartitionRecorder
from dataflows.kafka_types import PayloadTypes
from lake.table import read_table

T0 = 1_767_225_600_000_000


def _items(start: int, n: int) -> list[tuple]:
    """Events and labels in offset order: ``a`` and ``b`` in every event, ``c`` null in the first part and
    beyond, then in every third event (the first parts lack the column)."""
    out = []
    for off in range(start, start + n):
        if off % 5 == 4:
            out.append((off, LABEL, f"e{off - 1}", off % 2, T0 + off * 1000))
            continue
        payload = {"a": float(off), "b": off % 2 == 0,
                   "c": None if off < PART_ITEMS + 100 or off % 3 else f"s{off}"}
        out.append((off, EVENT, f"e{off}", T0 + off * 1000, f"k{off % 7}", payload))
    return out


def _record(lake: str, items: list[tuple], *, add_at_once: int) -> PartitionRecorder:
    # The columns' order as a table of another run has them (``c`` before ``b``): rows built from a part
    # without ``c`` must not put ``b`` first.
    types = PayloadTypes(pa.schema([("a", pa.float64()), ("c", pa.string()), ("b", pa.bool_())]))
    rec = PartitionRecorder(lake, "t", 0, types, flush_rows=10**9, flush_seconds=3600)
    for i in range(0, len(items), add_at_once):
        chunk = items[i:i + add_at_once]
        for it in chunk:
            if it[1] == EVENT:
                types.normalize(it[5])  # (what the source does before it hands an event over)
        rec.add(chunk)
    return rec


def _lake_rows(lake: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    events = read_table(lake, "events").sort("offset")
    labels = read_table(lake, "labels").sort("event_id", "label_time")
    return events, labels


@pytest.mark.parametrize("add_at_once", [1, 37, 5_000])
def test_rows_built_in_parts_are_the_rows_built_at_once(tmp_path, monkeypatch, add_at_once):
    items = _items(0, 3 * PART_ITEMS + 123)
    rec = _record(str(tmp_path / "parts"), items, add_at_once=add_at_once)
    assert rec._parts, "full parts were handed to the recorder's thread as they came"
    rec.close()
    monkeypatch.setattr(kafka_record, "PART_ITEMS", 10**9)  # every row built by the commit itself
    _record(str(tmp_path / "whole"), items, add_at_once=5_000).close()
    (ev, lb), (ev0, lb0) = _lake_rows(str(tmp_path / "parts")), _lake_rows(str(tmp_path / "whole"))
    assert ev.columns == ev0.columns == ["event_id", "event_time", "key", "offset", "a", "c", "b"]
    assert ev.equals(ev0, null_equal=True) and lb.equals(lb0, null_equal=True)
    assert ev.height == sum(it[1] == EVENT for it in items) and lb.height == len(items) - ev.height
    no_c = sum(it[1] == EVENT and it[5]["c"] is None for it in items)
    assert 0 < no_c < ev.height and ev["c"].null_count() == no_c


def test_a_restart_writes_only_the_rows_of_its_parts_not_yet_in_the_lake(tmp_path):
    lake = str(tmp_path / "lake")
    items = _items(0, 4 * PART_ITEMS)
    _record(lake, items[:PART_ITEMS + 500], add_at_once=200).close()
    # A restart hands over from an older offset (mid-part): the rows already committed are not written again.
    _record(lake, items[700:], add_at_once=300).close()
    ev, lb = _lake_rows(lake)
    assert ev["event_id"].is_unique().all() and ev.height == sum(it[1] == EVENT for it in items)
    assert lb.height == sum(it[1] == LABEL for it in items)
    assert ev["offset"].is_sorted()
