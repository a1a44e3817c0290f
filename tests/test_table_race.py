"""Writers that create one table at the same moment (shards of one run) all land, once."""

from __future__ import annotations

import threading

from lake.arrow import rows_to_arrow
from lake.table import TableWriter, read_table


def test_concurrent_writers_creating_one_table_all_land(tmp_path):
    # Without the retry, 5 of 8 such trials lost a writer to "Metadata changed since last commit".
    for trial in range(5):
        lake = str(tmp_path / f"lake{trial}")
        errors: list[BaseException] = []

        def write(shard: int, lake: str = lake, errors: list = errors) -> None:
            try:
                w = TableWriter(lake, "drift_events", writer_id=f"r/drift_events/shard-{shard}")
                rows = [("r", shard, i, "adwin", "error", "m", i, f"e{i}", 1_000_000 * i) for i in range(3)]
                w.append(rows_to_arrow("drift_events", rows), position=2)
                w.append(rows_to_arrow("drift_events", rows), position=2)  # a replayed commit adds nothing
            except BaseException as ex:  # noqa: BLE001 - collected and asserted below
                errors.append(ex)

        threads = [threading.Thread(target=write, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        table = read_table(lake, "drift_events")
        assert table.height == 12 and table.select("shard", "seq").is_unique().all()
