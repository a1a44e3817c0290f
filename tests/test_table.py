from __future__ import annotations

import time
from datetime import UTC, datetime

import polars as pl
import pytest

from lake.errors import SchemaError, TableNotFoundError
from lake.maintain import maintain
from lake.schemas import TABLES
from lake.table import TableWriter, append, open_table, read_table, table_version


def _labels(ids, t=0):
    return pl.DataFrame({
        "event_id": ids,
        "label": [1] * len(ids),
        "label_time": pl.Series([t] * len(ids), dtype=pl.Datetime("us", "UTC")),
    })


def _events(ids, **extra):
    return pl.DataFrame({
        "event_id": ids,
        "event_time": pl.Series(list(range(len(ids))), dtype=pl.Datetime("us", "UTC")),
        "key": ["k"] * len(ids),
        "offset": list(range(len(ids))),
        **extra,
    })


def test_every_design_table_has_a_schema():
    for name in ["events", "labels", "predictions", "learn_log", "metrics", "checkpoints",
                 "dead_letters", "drift_events"]:
        assert name in TABLES
    assert {"event_id", "event_time", "key", "model", "model_version", "score", "prediction",
            "role", "features"} <= set(TABLES["predictions"].names)


def test_reading_a_missing_table_names_it(tmp_path):
    with pytest.raises(TableNotFoundError, match="'labels'"):
        read_table(tmp_path, "labels")


def test_schema_errors_name_table_and_column(tmp_path):
    bad = _labels(["a"]).drop("label_time")
    with pytest.raises(SchemaError, match=r"labels\.label_time: missing"):
        append(tmp_path, "labels", bad, writer_id="w", position=1)
    with pytest.raises(SchemaError, match=r"labels\.label: .*null"):
        append(tmp_path, "labels", _labels(["a"]).with_columns(pl.lit(None, pl.Int64).alias("label")),
               writer_id="w", position=1)
    with pytest.raises(SchemaError, match=r"labels\.label: cannot cast"):
        append(tmp_path, "labels", _labels(["a"]).with_columns(pl.lit("yes").alias("label")),
               writer_id="w", position=1)
    with pytest.raises(SchemaError, match=r"labels\.extra: unexpected"):
        append(tmp_path, "labels", _labels(["a"]).with_columns(pl.lit(1).alias("extra")),
               writer_id="w", position=1)
    assert table_version(tmp_path, "labels") is None  # nothing half-written


def test_append_is_idempotent_per_writer_and_position(tmp_path):
    assert append(tmp_path, "labels", _labels(["a", "b"]), writer_id="w1", position=1) == 2
    assert append(tmp_path, "labels", _labels(["a", "b"]), writer_id="w1", position=1) == 0
    assert append(tmp_path, "labels", _labels(["c"]), writer_id="w1", position=2) == 1
    # another writer has its own positions
    assert append(tmp_path, "labels", _labels(["d"]), writer_id="w2", position=1) == 1
    assert sorted(read_table(tmp_path, "labels")["event_id"]) == ["a", "b", "c", "d"]
    assert open_table(tmp_path, "labels").transaction_version("w1") == 2


def test_rows_already_committed_are_dropped_by_seq(tmp_path):
    def rows(seqs):
        return pl.DataFrame({
            "run_id": "r", "shard": pl.Series([0] * len(seqs), dtype=pl.Int32), "seq": seqs,
            "step": "validate", "reason": "x", "source": "test",
            "event_id": [str(s) for s in seqs], "raw": "{}",
        })

    w = TableWriter(tmp_path, "dead_letters", writer_id="r/dl/0")
    assert w.append(rows([1, 2, 3]), position=3) == 3
    # After a restart the same writer is handed an overlapping batch.
    w2 = TableWriter(tmp_path, "dead_letters", writer_id="r/dl/0")
    assert w2.committed_position == 3
    assert w2.append(rows([2, 3, 4, 5]), position=5) == 2
    assert read_table(tmp_path, "dead_letters")["seq"].sort().to_list() == [1, 2, 3, 4, 5]


def test_events_accept_new_feature_columns(tmp_path):
    append(tmp_path, "events", _events(["a"], x=[1.0]), writer_id="w", position=1)
    append(tmp_path, "events", _events(["b"], y=["new"]), writer_id="w", position=2)
    df = read_table(tmp_path, "events").sort("event_id")
    assert df["x"].to_list() == [1.0, None]
    assert df["y"].to_list() == [None, "new"]


def test_time_travel_by_version_and_timestamp(tmp_path):
    append(tmp_path, "labels", _labels(["a"]), writer_id="w", position=1)
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    append(tmp_path, "labels", _labels(["b"]), writer_id="w", position=2)
    assert read_table(tmp_path, "labels", version=0)["event_id"].to_list() == ["a"]
    assert read_table(tmp_path, "labels", version=between)["event_id"].to_list() == ["a"]
    assert read_table(tmp_path, "labels").height == 2


def test_maintain_compacts_checkpoints_and_vacuums(tmp_path):
    for i in range(12):
        append(tmp_path, "labels", _labels([f"e{i}"]), writer_id="w", position=i + 1)
    assert len(open_table(tmp_path, "labels").file_uris()) == 12
    report = maintain(tmp_path, ["labels"], retention_hours=0)
    dt = open_table(tmp_path, "labels")
    assert len(dt.file_uris()) == 1
    assert report["labels"]["files_removed_by_compaction"] == 12
    assert report["labels"]["files_vacuumed"] == 12
    assert read_table(tmp_path, "labels").height == 12
    assert any((tmp_path / "labels" / "_delta_log").glob("*.checkpoint.parquet"))
    # the writer's position survives maintenance
    assert dt.transaction_version("w") == 12


def test_maintain_dry_run_changes_nothing(tmp_path):
    for i in range(3):
        append(tmp_path, "labels", _labels([f"e{i}"]), writer_id="w", position=i + 1)
    before = table_version(tmp_path, "labels")
    report = maintain(tmp_path, ["labels"], dry_run=True)
    assert table_version(tmp_path, "labels") == before
    assert report["labels"]["dry_run"] is True
    with pytest.raises(ValueError, match="retention_hours"):
        maintain(tmp_path, retention_hours=-1)


def test_writer_compacts_every_n_commits_and_keeps_its_position(tmp_path):
    w = TableWriter(tmp_path, "labels", writer_id="w", compact_every=5)
    for i in range(12):
        w.append(_labels([f"e{i}"]), position=i + 1)
    assert w.compactions == 2
    dt = open_table(tmp_path, "labels")
    assert len(dt.file_uris()) == 3  # 10 compacted into 1, plus 2 appended since
    assert read_table(tmp_path, "labels").height == 12
    assert TableWriter(tmp_path, "labels", writer_id="w").committed_position == 12
    with pytest.raises(ValueError, match="compact_every must be >= 1 or None, got 0"):
        TableWriter(tmp_path, "labels", writer_id="w", compact_every=0)


def test_the_shards_of_a_table_share_its_compactions(tmp_path):
    """Four shard writers of one table: its small files stay about compact_every, not four times as many."""
    writers = [TableWriter(tmp_path, "labels", writer_id=f"run/labels/shard-{n}", compact_every=5) for n in range(4)]
    most = 0
    for i in range(40):
        writers[i % 4].append(_labels([f"e{i}"]), position=i // 4 + 1)
        most = max(most, len(open_table(tmp_path, "labels").file_uris()))
    assert most <= 6
    assert 5 <= sum(w.compactions for w in writers) <= 8
    assert read_table(tmp_path, "labels").height == 40


def _predictions(seq, n=50):
    import numpy as np

    from lake.arrow import features_array

    rng = np.random.default_rng(seq)
    return pl.DataFrame({
        "run_id": ["r"] * n, "shard": pl.Series([0] * n, dtype=pl.Int32), "seq": [seq] * n,
        "event_id": [f"e{seq}-{i}" for i in range(n)],
        "event_time": pl.Series(list(range(n)), dtype=pl.Datetime("us", "UTC")),
        "key": ["k"] * n, "model": ["linear"] * n, "role": ["champion"] * n, "model_version": ["v1"] * n,
        "score": rng.random(n), "prediction": [1] * n,
    }).to_arrow().append_column("features", features_array(
        [{f"f{j}": float(v) for j, v in enumerate(rng.normal(size=i % 5))} for i in range(n)]))


def test_the_features_map_is_written_lean_and_reads_back_the_same(tmp_path):
    """The map's leaves carry no Parquet dictionary or statistics (costly, unused); every read gives the same map."""
    import deltalake
    import pyarrow as pa
    import pyarrow.parquet as pq

    written = [_predictions(seq) for seq in (1, 2)]
    writer = TableWriter(tmp_path, "predictions", writer_id="w", compact_every=2)
    for seq, rows in enumerate(written, start=1):
        writer.append(rows, position=seq)
    for seq in (3,):  # a file written after the compaction too
        written.append(_predictions(seq))
        writer.append(written[-1], position=seq)
    by_seq = [("seq", "ascending"), ("event_id", "ascending")]
    expected = pa.concat_tables(written).sort_by(by_seq).column("features").combine_chunks()
    dt = open_table(tmp_path, "predictions")
    for path in dt.file_uris():
        meta = pq.ParquetFile(path).metadata.row_group(0)
        columns = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
        for leaf in ("features.key_value.key", "features.key_value.value"):
            assert "RLE_DICTIONARY" not in columns[leaf].encodings
            assert columns[leaf].statistics is None or not columns[leaf].statistics.has_min_max
        assert columns["score"].statistics.has_min_max and columns["score"].compression == "SNAPPY"
        assert "RLE_DICTIONARY" in columns["model"].encodings
    assert dt.to_pyarrow_table().sort_by(by_seq).column("features").combine_chunks().equals(expected)
    back = read_table(tmp_path, "predictions").sort(["seq", "event_id"])
    assert back["features"].to_list() == pl.from_arrow(expected).to_list()
    stats = pl.DataFrame(deltalake.DeltaTable(str(tmp_path / "predictions")).get_add_actions(flatten=True))
    assert stats.height and stats.get_column("min.score").null_count() == 0  # data skipping kept
