"""One way to read a table (lake.table.scan_table / read_table / open_table)."""

from datetime import UTC, datetime

import polars as pl
import pytest

from lake.errors import TableNotFoundError
from lake.table import append, scan_table


def _labels(n: int) -> pl.DataFrame:
    return pl.DataFrame({"event_id": [f"e{i}" for i in range(n)], "label": [1] * n,
                         "label_time": [datetime(2026, 1, 1, tzinfo=UTC)] * n})


def test_a_missing_table_is_named_in_one_line(tmp_path):
    with pytest.raises(TableNotFoundError) as info:
        scan_table(tmp_path / "lake", "learn_log")
    message = str(info.value)
    assert message.startswith("table 'learn_log' does not exist at ") and "\n" not in message


def test_versions_pin_what_is_read(tmp_path):
    lake = tmp_path / "lake"
    append(lake, "labels", _labels(2), writer_id="w", position=1)
    append(lake, "labels", _labels(3), writer_id="w", position=2)
    assert scan_table(lake, "labels", version=0).collect().height == 2
    assert scan_table(lake, "labels").collect().height == 5
    assert scan_table(lake, "labels", columns=["label"]).collect().columns == ["label"]
