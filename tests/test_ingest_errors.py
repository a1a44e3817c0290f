"""Ingest names every bad row at once, dead-letters them on request, never changes a value silently,
and reads the file it checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lake.ingest
from lake.errors import IngestError
from lake.ingest import IngestLimits, ingest_file
from lake.table import exists, read_table, table_version

ROOT = Path(__file__).resolve().parent.parent

# 20 rows, 12 of them bad in four ways: 3 bad times, 3 bad numbers, 3 duplicate ids, 3 empty ids.
TWELVE_BAD = """
id,t,y,amount
g0,2024-03-01T00:00:00Z,1,1.5
t1,yesterday,0,2.5
g2,2024-03-01T02:00:00Z,1,3.5
n3,2024-03-01T03:00:00Z,0,lots
d,2024-03-01T04:00:00Z,1,5.5
,2024-03-01T05:00:00Z,0,6.5
t6,2024-13-45,1,7.5
g7,2024-03-01T07:00:00Z,0,8.5
n8,2024-03-01T08:00:00Z,1,n/a
d,2024-03-01T09:00:00Z,0,10.5
 ,2024-03-01T10:00:00Z,1,11.5
t11,,0,12.5
g12,2024-03-01T12:00:00Z,1,13.5
n13,2024-03-01T13:00:00Z,0,?
d,2024-03-01T14:00:00Z,1,15.5
,2024-03-01T15:00:00Z,0,16.5
g16,2024-03-01T16:00:00Z,1,17.5
g17,2024-03-01T17:00:00Z,0,18.5
g18,2024-03-01T18:00:00Z,1,19.5
g19,2024-03-01T19:00:00Z,0,20.5
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text.lstrip())
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "lake", "ingest", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _cols(*extra: str) -> list[str]:
    return ["--id-col", "id", "--time-col", "t", "--label-col", "y", *extra]


def test_every_kind_of_bad_row_is_named_in_one_error_and_nothing_is_written(tmp_path):
    lake_dir = tmp_path / "lake"
    done = _cli("--lake", str(lake_dir), "--file", str(_write(tmp_path / "bad.csv", TWELVE_BAD)), *_cols())
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: 12 of 20 rows cannot be ingested; nothing written")
    by_kind = {line.split(" (")[0].strip(): line for line in lines[1:]}
    assert set(by_kind) == {"empty id", "duplicate id", "time", "number"}
    assert "(3)" in by_kind["empty id"] and "rows 5, 10, 15" in by_kind["empty id"]
    assert "rows 4, 9, 14" in by_kind["duplicate id"] and "'d'" in by_kind["duplicate id"]
    assert "rows 1, 6, 11 (ids 't1', 't6', 't11')" in by_kind["time"]
    assert "rows 3, 8, 13 (ids 'n3', 'n8', 'n13')" in by_kind["number"] and "'amount'" in by_kind["number"]
    assert not lake_dir.exists() or not any(lake_dir.iterdir())


def test_dead_letter_mode_writes_the_good_rows_and_dead_letters_the_rest(tmp_path):
    lake_dir = tmp_path / "lake"
    path = _write(tmp_path / "bad.csv", TWELVE_BAD)
    done = _cli("--lake", str(lake_dir), "--file", str(path), *_cols("--on-error", "dead-letter"))
    assert done.returncode == 0, done.stderr
    assert "8 events, 8 labels, 12 rows dead-lettered (3 empty id, 3 duplicate id, 3 time, 3 number)" in done.stdout
    events, dead = read_table(lake_dir, "events"), read_table(lake_dir, "dead_letters")
    assert events.height + dead.height == 20
    assert sorted(events["event_id"].to_list()) == sorted(f"g{i}" for i in (0, 2, 7, 12, 16, 17, 18, 19))
    assert events.schema["amount"] == pl.Float64  # the good rows' numbers stay numbers
    assert sorted(dead["seq"].to_list()) == [1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15]
    assert set(dead["step"]) == {"ingest"} and set(dead["source"]) == {"bad.csv"}
    row = dead.filter(pl.col("seq") == 3).row(0, named=True)
    assert row["reason"].startswith("number: text in column 'amount'") and row["event_id"] == "n3"
    assert json.loads(row["raw"]) == {"id": "n3", "t": "2024-03-01T03:00:00Z", "y": 0, "amount": "lots"}
    again = _cli("--lake", str(lake_dir), "--file", str(path), *_cols("--on-error", "dead-letter"))
    assert again.returncode == 0 and "already ingested" in again.stdout and "12 rows dead-lettered" in again.stdout
    assert read_table(lake_dir, "dead_letters").height == 12 and read_table(lake_dir, "events").height == 8


def test_ids_already_in_the_lake_are_dead_lettered_beside_the_input_problems(tmp_path):
    lake_dir = tmp_path / "lake"
    ingest_file(lake_dir, _write(tmp_path / "a.csv", "id,t,y\ng0,2024-03-01,1\ng2,2024-03-02,0\n"),
                id_col="id", time_col="t", label_col="y")
    with pytest.raises(IngestError) as info:
        ingest_file(lake_dir, _write(tmp_path / "bad.csv", TWELVE_BAD), id_col="id", time_col="t", label_col="y")
    assert "duplicate id (5)" in str(info.value) and "ids already in the lake's events table" in str(info.value)
    report = ingest_file(lake_dir, tmp_path / "bad.csv", id_col="id", time_col="t", label_col="y",
                         on_error="dead-letter")
    assert (report.n_events, report.n_dead_letters) == (6, 14)
    assert read_table(lake_dir, "events").height == 2 + 6


def test_a_fraction_for_an_integer_column_is_refused_not_truncated(tmp_path):
    lake_dir = tmp_path / "lake"
    ingest_file(lake_dir, _write(tmp_path / "a.csv", "id,t,y,n\na,2024-03-01,1,3\nb,2024-03-01,0,4\n"),
                id_col="id", time_col="t", label_col="y")
    later = _write(tmp_path / "b.csv", "id,t,y,n\nc,2024-03-02,1,0.7\nd,2024-03-02,0,2.0\ne,2024-03-02,0,5\n")
    with pytest.raises(IngestError, match=r"fractions \(or NaN/inf\) in column 'n', which the lake's events hold "
                       r"as Int64: rows 0 \(ids 'c'\)"):
        ingest_file(lake_dir, later, id_col="id", time_col="t", label_col="y")
    assert read_table(lake_dir, "events").height == 2
    ingest_file(lake_dir, later, id_col="id", time_col="t", label_col="y", on_error="dead-letter")
    n = dict(read_table(lake_dir, "events").select("event_id", "n").iter_rows())
    assert n == {"a": 3, "b": 4, "d": 2, "e": 5}  # 0.7 never became 0
    assert read_table(lake_dir, "dead_letters")["event_id"].to_list() == ["c"]


def test_nan_and_inf_text_make_a_float_column_with_a_note(tmp_path):
    lake_dir = tmp_path / "lake"
    path = _write(tmp_path / "f.csv", "id,t,y,x,colour\na,2024-03-01,1,NaN,red\nb,2024-03-01,0,2.5,blue\n"
                  "c,2024-03-01,1,Infinity,red\nd,2024-03-01,0,-4,blue\n")
    done = _cli("--lake", str(lake_dir), "--file", str(path), *_cols())
    assert done.returncode == 0, done.stderr
    assert "note: column 'x' holds numbers written as text ('NaN', 'Infinity'): stored as floats" in done.stdout
    events = read_table(lake_dir, "events").sort("event_id")
    assert events.schema["x"] == pl.Float64 and events.schema["colour"] == pl.String
    x = events["x"].to_list()
    assert x[1:] == [2.5, float("inf"), -4.0] and x[0] != x[0]  # NaN


def test_text_col_keeps_a_mostly_numeric_column_as_text(tmp_path):
    path = _write(tmp_path / "s.csv", "id,t,y,size\na,2024-03-01,1,10\nb,2024-03-01,0,12\nc,2024-03-01,1,XL\n")
    with pytest.raises(IngestError, match=r"text in column 'size' of numbers \(e\.g\. 'XL'\).*rows 2 \(ids 'c'\)"):
        ingest_file(tmp_path / "lake", path, id_col="id", time_col="t", label_col="y")
    ingest_file(tmp_path / "lake", path, id_col="id", time_col="t", label_col="y", text_cols=["size"])
    assert read_table(tmp_path / "lake", "events").sort("event_id")["size"].to_list() == ["10", "12", "XL"]


def test_ids_and_values_over_the_limits_are_refused(tmp_path):
    long_id = "i" * 513
    path = _write(tmp_path / "l.csv", f"id,t,y,note\nok,2024-03-01,1,short\n{long_id},2024-03-01,0,x\n"
                  f"fine,2024-03-01,0,{'z' * 100}\n")
    with pytest.raises(IngestError) as info:
        ingest_file(tmp_path / "lake", path, id_col="id", time_col="t", label_col="y",
                    limits=IngestLimits(max_field_bytes=50))
    message = str(info.value)
    assert "ids longer than 512 characters in column 'id': rows 1" in message
    assert "values longer than 50 bytes in column 'note': rows 2 (ids 'fine')" in message
    assert table_version(tmp_path / "lake", "events") is None
    done = _cli("--lake", str(tmp_path / "lake"), "--file", str(path), *_cols("--max-id-chars", "600"))
    assert done.returncode == 0, done.stderr
    assert read_table(tmp_path / "lake", "events").height == 3


def test_times_the_dataflow_would_refuse_are_refused_at_ingest(tmp_path):
    path = _write(tmp_path / "y.csv", "id,t,y\na,2024-03-01,1\nb,1850-01-01,0\nc,1700000000000,1\n")
    with pytest.raises(IngestError, match=r"in years 1900-2199: rows 1, 2 \(ids 'b', 'c'\)"):
        ingest_file(tmp_path / "lake", path, id_col="id", time_col="t", label_col="y")


def test_a_link_swapped_after_the_check_cannot_redirect_the_read(tmp_path, monkeypatch):
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    _write(data / "good.csv", "id,t,y\ngood,2024-03-01,1\n")
    _write(outside / "secret.csv", "id,t,y\nsecret,2024-03-01,1\n")
    link = data / "in.csv"
    link.symlink_to(data / "good.csv")
    checked = lake.ingest.check_file_limits

    def check_then_swap(path, **kw):
        resolved = checked(path, **kw)
        link.unlink()  # the race: the link now points outside the allowed folder
        link.symlink_to(outside / "secret.csv")
        return resolved

    monkeypatch.setattr(lake.ingest, "check_file_limits", check_then_swap)
    ingest_file(tmp_path / "lake", link, id_col="id", time_col="t", label_col="y", allowed_roots=[data])
    assert read_table(tmp_path / "lake", "events")["event_id"].to_list() == ["good"]
    assert not exists(tmp_path / "lake", "dead_letters")


def test_an_interrupted_dead_letter_ingest_completes_with_the_same_decision(tmp_path, monkeypatch):
    lake_dir = tmp_path / "lake"
    ingest_file(lake_dir, _write(tmp_path / "a.csv", "id,t,y\ng0,2024-03-01,1\n"), id_col="id", time_col="t",
                label_col="y")
    path = _write(tmp_path / "bad.csv", TWELVE_BAD)
    monkeypatch.setattr(lake.ingest, "CHUNK_ROWS", 3)
    calls = []

    def crash_in_the_events(done, total):
        calls.append(done)
        if len(calls) == 6:  # 13 dead letters (5 chunks), then the first chunk of events
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest_file(lake_dir, path, id_col="id", time_col="t", label_col="y", on_error="dead-letter",
                    progress=crash_in_the_events)
    assert read_table(lake_dir, "events").height == 1 + 3
    report = ingest_file(lake_dir, path, id_col="id", time_col="t", label_col="y", on_error="dead-letter")
    assert not report.already_ingested and (report.n_events, report.n_dead_letters) == (7, 13)
    events = read_table(lake_dir, "events").sort("offset")
    assert events["offset"].to_list() == list(range(8)) and events["event_id"].n_unique() == 8
    dead = read_table(lake_dir, "dead_letters")
    assert dead.height == 13 and dead.filter(pl.col("seq") == 0)["reason"].item().startswith(
        "duplicate id: ids already in the lake")
    assert ingest_file(lake_dir, path, id_col="id", time_col="t", label_col="y",
                       on_error="dead-letter").already_ingested


def test_a_column_the_lake_holds_as_text_stays_text(tmp_path):
    lake_dir = tmp_path / "lake"
    ingest_file(lake_dir, _write(tmp_path / "a.csv", "id,t,y,size\na,2024-03-01,1,XL\nb,2024-03-01,0,M\n"),
                id_col="id", time_col="t", label_col="y")
    ingest_file(lake_dir, _write(tmp_path / "b.csv", "id,t,y,size\nc,2024-03-02,1,10\nd,2024-03-02,0,12\n"
                                 "e,2024-03-02,0,S\n"), id_col="id", time_col="t", label_col="y")
    sizes = dict(read_table(lake_dir, "events").select("event_id", "size").iter_rows())
    assert sizes == {"a": "XL", "b": "M", "c": "10", "d": "12", "e": "S"}


def test_a_file_of_bad_rows_only_is_dead_lettered_once(tmp_path):
    path = _write(tmp_path / "all_bad.csv", "id,t,y\n,2024-03-01,1\n")
    first = ingest_file(tmp_path / "lake", path, id_col="id", time_col="t", label_col="y", on_error="dead-letter")
    assert (first.n_events, first.n_dead_letters, first.already_ingested) == (0, 1, False)
    again = ingest_file(tmp_path / "lake", path, id_col="id", time_col="t", label_col="y", on_error="dead-letter")
    assert again.already_ingested and read_table(tmp_path / "lake", "dead_letters").height == 1
    assert not exists(tmp_path / "lake", "events")


DEFECTS = ("good", "empty id", "duplicate id", "time", "label", "oversize")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(DEFECTS), min_size=1, max_size=25))
def test_every_bad_row_is_found_and_accounted_for(tmp_path_factory, kinds):
    """Rows with random defects: the error counts exactly the bad rows by kind; dead-letter mode
    writes each row once, as an event or a dead letter."""
    rows, expected = [], {}
    for i, kind in enumerate(kinds):
        rid = {"empty id": "", "oversize": "o" * 513}.get(kind, f"r{i}")
        t = "nope" if kind == "time" else f"2024-03-01T00:00:{i % 60:02d}Z"
        y = 5 if kind == "label" else i % 2
        copies = 2 if kind == "duplicate id" else 1
        for _ in range(copies):
            if kind != "good":
                expected.setdefault(kind, set()).add(len(rows))
            rows.append(f"{rid},{t},{y},{i}.5")
    tmp = tmp_path_factory.mktemp("prop")
    path = _write(tmp / "p.csv", "id,t,y,amount\n" + "\n".join(rows) + "\n")
    n_bad = len(set().union(*expected.values())) if expected else 0
    if n_bad:
        with pytest.raises(IngestError) as info:
            ingest_file(tmp / "lake", path, id_col="id", time_col="t", label_col="y")
        err = info.value
        assert err.n_rows == n_bad
        if len(expected) > 1:  # one line per kind, with its count
            lines = str(err).splitlines()[1:]
            assert lines == [line for line in lines if line.startswith("  ")]
            assert {line.split(" (")[0].strip(): int(line.split("(")[1].split(")")[0]) for line in lines} == {
                k: len(v) for k, v in expected.items()}
        assert not exists(tmp / "lake", "events")
    report = ingest_file(tmp / "lake", path, id_col="id", time_col="t", label_col="y", on_error="dead-letter")
    assert report.n_dead_letters == n_bad and report.n_events + n_bad == len(rows)
    assert dict(report.dead_letter_kinds) == {k: len(v) for k, v in expected.items() if v}
    dead = read_table(tmp / "lake", "dead_letters")["seq"].to_list() if n_bad else []
    assert sorted(dead) == sorted(set().union(*expected.values()) if expected else [])
