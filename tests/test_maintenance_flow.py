from __future__ import annotations

import polars as pl

from flows.maintenance import maintenance
from lake.table import append, open_table, read_table


def test_maintenance_flow_compacts_while_rows_keep_coming(prefect_harness, tmp_path):
    lake = str(tmp_path / "lake")

    def rows(i):
        return pl.DataFrame({"event_id": [f"e{i}"], "label": [1],
                             "label_time": pl.Series([i], dtype=pl.Datetime("us", "UTC"))})

    for i in range(20):
        append(lake, "labels", rows(i), writer_id="w", position=i + 1)
    report = maintenance(lake, retention_hours=0)
    assert report["labels"]["files_removed_by_compaction"] == 20
    assert len(open_table(lake, "labels").file_uris()) == 1
    append(lake, "labels", rows(20), writer_id="w", position=21)  # the writer carries on after maintenance
    assert read_table(lake, "labels").height == 21
    assert open_table(lake, "labels").transaction_version("w") == 21
