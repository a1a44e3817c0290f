"""Ingest of user files and frames: layout, validation, idempotence, the command line."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

import lake.ingest
from lake.errors import IngestError
from lake.ingest import ingest_file, ingest_frame
from lake.table import read_table, table_version

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2024, 3, 1, tzinfo=UTC)


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text.lstrip())
    return path


@pytest.fixture
def churn_csv(tmp_path: Path) -> Path:
    """String ids with leading zeros, column names with spaces and punctuation, string labels."""
    return _write_csv(
        tmp_path / "churn.csv",
        """
user id,signup time (UTC),Churned?,plan name,monthly $
007,2024-03-01T00:00:00Z,yes,pro,49.5
008,2024-03-01 01:00:00,no,free,0
010,2024-03-01T03:00:00+01:00,no,pro,49.5
011,2024-03-01T04:00:00Z,,free,0
""",
    )


def _ingest_churn(lake, path, **kw):
    return ingest_file(
        lake,
        path,
        id_col="user id",
        time_col="signup time (UTC)",
        label_col="Churned?",
        positive="yes",
        **kw,
    )


def test_csv_with_string_ids_and_odd_column_names(tmp_path, churn_csv):
    report = _ingest_churn(tmp_path / "lake", churn_csv, label_delay=90)
    assert (report.n_events, report.n_labels, report.already_ingested) == (4, 3, False)
    events = read_table(tmp_path / "lake", "events").sort("offset")
    assert events.columns == ["event_id", "event_time", "key", "offset", "plan name", "monthly $"]
    assert events["event_id"].to_list() == ["007", "008", "010", "011"]  # exact, leading zeros kept
    assert events["key"].to_list() == ["all"] * 4
    assert events["offset"].to_list() == [0, 1, 2, 3]
    assert events["event_time"].to_list() == [
        T0,
        T0 + timedelta(hours=1),
        T0 + timedelta(hours=2),
        T0 + timedelta(hours=4),
    ]  # naive taken as UTC, +01:00 converted
    labels = read_table(tmp_path / "lake", "labels").sort("event_id")
    assert labels["event_id"].to_list() == ["007", "008", "010"]  # the row without a label has none
    assert labels["label"].to_list() == [1, 0, 0]
    assert labels["label_time"].to_list() == [
        T0 + timedelta(seconds=90),
        T0 + timedelta(hours=1, seconds=90),
        T0 + timedelta(hours=2, seconds=90),
    ]
    assert "4 events, 3 labels" in str(report)


def test_csv_with_integer_ids_key_and_label_time_column(tmp_path):
    path = _write_csv(
        tmp_path / "tx.csv",
        """
id,ts,store,fraud,decided_at,amount
1,1709251200,12,0,1709251260,3.5
2,1709251201.5,12,1,2024-03-01T00:10:00Z,99.0
30,1709251202,7,0,1709251202,1.0
""",
    )
    ingest_file(
        tmp_path,
        path,
        id_col="id",
        time_col="ts",
        label_col="fraud",
        key_col="store",
        label_time_col="decided_at",
    )
    events = read_table(tmp_path, "events").sort("offset")
    assert events["event_id"].to_list() == ["1", "2", "30"]
    assert events["key"].to_list() == ["12", "12", "7"]
    assert events.columns == ["event_id", "event_time", "key", "offset", "amount"]
    assert events["event_time"][1] == T0 + timedelta(seconds=1.5)  # epoch seconds, fractions kept
    labels = read_table(tmp_path, "labels").sort("event_id")
    assert labels["label"].to_list() == [0, 1, 0]
    assert labels["label_time"].to_list() == [
        T0 + timedelta(seconds=60),
        T0 + timedelta(minutes=10),
        T0 + timedelta(seconds=2),
    ]


def test_parquet_file_with_datetimes_and_boolean_labels(tmp_path):
    path = tmp_path / "clicks.parquet"
    pl.DataFrame(
        {
            "click": [10, 11],
            "at": pl.Series(["2024-03-01 09:00", "2024-03-01 10:00"])
            .str.to_datetime()
            .dt.replace_time_zone("Europe/Paris"),
            "seen": pl.Series(["2024-03-01 12:00", "2024-03-01 13:00"]).str.to_datetime(),  # naive
            "bought": [True, False],
            "price": [1.0, 2.0],
        }
    ).write_parquet(path)
    report = ingest_file(tmp_path / "lake", path, id_col="click", time_col="at", label_col="bought")
    assert report.source == "clicks.parquet"
    events = read_table(tmp_path / "lake", "events").sort("offset")
    assert events["event_id"].to_list() == ["10", "11"]
    assert events["event_time"].to_list() == [T0 + timedelta(hours=8), T0 + timedelta(hours=9)]
    labels = read_table(tmp_path / "lake", "labels").sort("event_id")
    assert labels["label"].to_list() == [1, 0]
    assert labels["label_time"].to_list() == events["event_time"].to_list()  # no delay given
    report = ingest_file(
        tmp_path / "lake2", path, id_col="click", time_col="seen", label_col="bought"
    )
    events = read_table(tmp_path / "lake2", "events").sort("offset")
    assert events["event_time"].to_list() == [T0 + timedelta(hours=12), T0 + timedelta(hours=13)]
    assert events.columns == ["event_id", "event_time", "key", "offset", "at", "price"]


def test_reingest_is_a_no_op(tmp_path, churn_csv):
    first = _ingest_churn(tmp_path, churn_csv)
    again = _ingest_churn(tmp_path, churn_csv)
    assert again.already_ingested and not first.already_ingested
    assert "already ingested" in str(again)
    assert (again.events_version, again.labels_version) == (
        first.events_version,
        first.labels_version,
    )
    assert read_table(tmp_path, "events").height == 4


def test_a_second_file_continues_the_offsets(tmp_path, churn_csv):
    _ingest_churn(tmp_path, churn_csv)
    more = _write_csv(
        tmp_path / "more.csv",
        """
user id,signup time (UTC),Churned?,plan name,monthly $
012,2024-03-02T00:00:00Z,no,pro,49.5
""",
    )
    _ingest_churn(tmp_path, more)
    events = read_table(tmp_path, "events").sort("offset")
    assert events["offset"].to_list() == [0, 1, 2, 3, 4]
    assert events["event_id"][-1] == "012"


def test_an_interrupted_ingest_completes_on_rerun(tmp_path, churn_csv, monkeypatch):
    monkeypatch.setattr(lake.ingest, "CHUNK_ROWS", 2)
    calls = []

    def crash_after_first_chunk(done, total):
        calls.append((done, total))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _ingest_churn(tmp_path, churn_csv, progress=crash_after_first_chunk)
    assert calls == [(2, 7)]  # 4 events + 3 labels
    assert read_table(tmp_path, "events").height == 2
    report = _ingest_churn(tmp_path, churn_csv, progress=lambda d, t: calls.append((d, t)))
    assert not report.already_ingested
    assert calls[1:] == [(4, 7), (6, 7), (7, 7)]
    events = read_table(tmp_path, "events").sort("offset")
    assert events["event_id"].to_list() == ["007", "008", "010", "011"]
    assert events["offset"].to_list() == [0, 1, 2, 3]
    assert read_table(tmp_path, "labels").height == 3
    assert _ingest_churn(tmp_path, churn_csv).already_ingested


def _frame(**over):
    data = {
        "id": ["a", "b", "c", "d"],
        "t": ["2024-03-01T00:00:00Z"] * 4,
        "y": [0, 1, 0, 1],
        "x": [1.0, 2.0, 3.0, 4.0],
    }
    data.update(over)
    return pl.DataFrame(data)


def _ingest(lake, frame, **kw):
    return ingest_frame(lake, frame, source="test", id_col="id", time_col="t", label_col="y", **kw)


def test_missing_column_is_named_with_the_available_ones(tmp_path):
    with pytest.raises(
        IngestError, match=r"column 'when' \(time_col\) not found.*\['id', 't', 'y', 'x'\]"
    ):
        ingest_frame(tmp_path, _frame(), source="test", id_col="id", time_col="when", label_col="y")
    assert table_version(tmp_path, "events") is None


def test_duplicate_ids_in_the_input_name_their_rows(tmp_path):
    with pytest.raises(
        IngestError, match=r"duplicate ids in column 'id' \(e\.g\. 'b'\): rows 1, 3"
    ) as info:
        _ingest(tmp_path, _frame(id=["a", "b", "c", "b"]))
    assert info.value.rows == [1, 3]
    assert table_version(tmp_path, "events") is None


def test_ids_already_in_the_lake_name_their_rows(tmp_path):
    _ingest(tmp_path, _frame())
    version = table_version(tmp_path, "events")
    with pytest.raises(IngestError, match=r"already in the lake.*rows 0, 2$"):
        _ingest(tmp_path, _frame(id=["c", "e", "a", "f"]))
    assert table_version(tmp_path, "events") == version
    assert read_table(tmp_path, "events").height == 4


def test_null_ids_are_rejected(tmp_path):
    with pytest.raises(IngestError, match=r"missing ids in column 'id': rows 2"):
        _ingest(tmp_path, _frame(id=["a", "b", None, "d"]))


def test_unparsable_and_missing_times_name_their_rows(tmp_path):
    times = ["2024-03-01T00:00:00Z", "yesterday", "2024-03-01", None]
    with pytest.raises(
        IngestError, match=r"unparsable event times in column 't' \(e\.g\. 'yesterday'\).*rows 1, 3"
    ):
        _ingest(tmp_path, _frame(t=times))
    assert table_version(tmp_path, "events") is None


def test_bad_labels_name_their_rows(tmp_path):
    with pytest.raises(IngestError, match=r"must be 0 or 1: rows 2"):
        _ingest(tmp_path, _frame(y=[0, 1, 2, None]))


def test_string_labels_need_a_positive_value(tmp_path):
    with pytest.raises(IngestError, match=r"holds strings \('no', 'yes'\).*positive"):
        _ingest(tmp_path, _frame(y=["yes", "no", "no", "yes"]))
    with pytest.raises(IngestError, match=r"positive='Yes' is not one of"):
        _ingest(tmp_path, _frame(y=["yes", "no", "no", "yes"]), positive="Yes")
    with pytest.raises(IngestError, match=r"3 distinct values \('maybe', 'no', 'yes'\)"):
        _ingest(tmp_path, _frame(y=["yes", "no", "maybe", "yes"]), positive="yes")
    _ingest(tmp_path, _frame(y=["yes", "no", "no", "yes"]), positive="yes")
    assert read_table(tmp_path, "labels").sort("event_id")["label"].to_list() == [1, 0, 0, 1]


def test_label_time_before_event_time_names_rows(tmp_path):
    frame = _frame(
        lt=["2024-03-01T00:00:00Z", "2024-02-29T23:00:00Z", "2024-03-01T01:00:00Z", None],
        y=[0, 1, 0, None],
    )
    with pytest.raises(IngestError, match=r"label_time is before event_time: rows 1"):
        _ingest(tmp_path, frame, label_time_col="lt")
    assert table_version(tmp_path, "labels") is None


def test_label_time_column_and_delay_are_exclusive(tmp_path):
    with pytest.raises(IngestError, match="not both"):
        _ingest(tmp_path, _frame(lt=["2024-03-02"] * 4), label_time_col="lt", label_delay=5)
    with pytest.raises(IngestError, match=r"label_delay must be .* got -1"):
        _ingest(tmp_path, _frame(), label_delay=-1)


def test_payload_that_does_not_fit_the_lake_is_rejected_before_writing(tmp_path):
    _ingest(tmp_path, _frame())
    with pytest.raises(
        IngestError, match=r"payload column 'x' is String but the lake's events have Float64"
    ):
        _ingest(tmp_path, _frame(id=["e", "f", "g", "h"], x=["p", "q", "r", "s"]))
    assert read_table(tmp_path, "events").height == 4


def test_unsupported_suffix_and_missing_file(tmp_path):
    path = _write_csv(tmp_path / "data.json", "{}")
    with pytest.raises(IngestError, match=r"unsupported file type '\.json'"):
        ingest_file(tmp_path, path, id_col="a", time_col="b", label_col="c")
    with pytest.raises(IngestError, match="no such file"):
        ingest_file(tmp_path, tmp_path / "nope.csv", id_col="a", time_col="b", label_col="c")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lake", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_ingests_a_file_and_shows_the_lake(tmp_path, churn_csv):
    lake_dir = str(tmp_path / "lake")
    done = _cli(
        "ingest",
        "--lake",
        lake_dir,
        "--file",
        str(churn_csv),
        "--id-col",
        "user id",
        "--time-col",
        "signup time (UTC)",
        "--label-col",
        "Churned?",
        "--positive",
        "yes",
        "--label-delay",
        "60",
    )
    assert done.returncode == 0, done.stderr
    assert "4 events, 3 labels" in done.stdout
    info = _cli("info", "--lake", lake_dir)
    assert info.returncode == 0
    assert any(
        line.startswith("events") and line.rstrip().endswith(" 4")
        for line in info.stdout.splitlines()
    )


def test_cli_reports_a_bad_file_in_one_line_and_writes_nothing(tmp_path):
    bad = _write_csv(tmp_path / "bad.csv", "id,t,y\n1,2024-03-01,1\n1,2024-03-02,0\n")
    lake_dir = tmp_path / "lake"
    done = _cli(
        "ingest",
        "--lake",
        str(lake_dir),
        "--file",
        str(bad),
        "--id-col",
        "id",
        "--time-col",
        "t",
        "--label-col",
        "y",
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: duplicate ids in column 'id' (e.g. '1'): rows 0, 1"
    assert "Traceback" not in done.stderr
    assert not lake_dir.exists() or not any(lake_dir.iterdir())


def test_payload_columns_delta_cannot_store_are_rejected(tmp_path):
    with pytest.raises(IngestError, match=r"payload column 'wait' has type Duration"):
        _ingest(tmp_path, _frame(wait=[timedelta(seconds=s) for s in range(4)]))
    assert table_version(tmp_path, "events") is None


def test_an_empty_payload_column_fits_an_existing_one(tmp_path):
    _ingest(tmp_path, _frame())
    _ingest(tmp_path, _frame(id=["e", "f", "g", "h"], x=[None] * 4))
    events = read_table(tmp_path, "events").sort("offset")
    assert events["x"].to_list() == [1.0, 2.0, 3.0, 4.0, None, None, None, None]
    assert events["offset"].to_list() == list(range(8))


def test_ingest_refuses_files_outside_limits(tmp_path, subprocess_env):
    import subprocess
    import sys

    from lake.ingest import ingest_file

    data = tmp_path / "data"
    data.mkdir()
    f = data / "in.csv"
    f.write_text("id,ts,y\n1,2026-01-01T00:00:00Z,1\n")
    lake = tmp_path / "lake"
    with pytest.raises(IngestError, match="over the ingest limit of 10 bytes"):
        ingest_file(lake, f, id_col="id", time_col="ts", label_col="y", max_bytes=10)
    with pytest.raises(IngestError, match="outside the folders ingest may read"):
        ingest_file(lake, data / ".." / "data" / ".." / "in.csv", id_col="id", time_col="ts", label_col="y",
                    allowed_roots=[data])
    assert not lake.exists()
    env = {**subprocess_env, "RIVERLAKE_INGEST_ROOTS": str(tmp_path / "elsewhere")}
    proc = subprocess.run([sys.executable, "-m", "lake", "ingest", "--lake", str(lake), "--file", str(f),
                           "--id-col", "id", "--time-col", "ts", "--label-col", "y"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "outside the folders ingest may read" in proc.stderr
    assert not lake.exists()
    ok = ingest_file(lake, f, id_col="id", time_col="ts", label_col="y", max_bytes=10_000, allowed_roots=[data])
    assert ok.n_events == 1
