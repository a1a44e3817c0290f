"""Windowed statistics with a watermark, late events, and unsupervised anomaly scores."""

from __future__ import annotations

import math
import pickle
import random
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from lake.table import append, read_table
from monitoring.anomaly import make_scorer
from monitoring.windows import WindowStats, late_events_table, window_stats_table

S = 1_000_000  # one second in microseconds


def stream(n: int = 5_000, *, disorder_s: int = 40, seed: int = 4):
    """Events one second apart, arriving up to ``disorder_s`` seconds out of order."""
    rng = random.Random(seed)
    times = [i * S for i in range(n)]
    arrival = sorted(range(n), key=lambda i: times[i] + rng.randint(0, disorder_s) * S)
    xs, ys = [], []
    for i in arrival:
        x = {"a": rng.gauss(i / 1_000, 1.0), "flag": rng.random() < 0.3, "city": rng.choice("xyz")}
        if rng.random() < 0.8:
            x["b"] = rng.uniform(-5, 5)
        xs.append(x)
        ys.append(None if rng.random() < 0.5 else int(rng.random() < 0.25))
    return [times[i] for i in arrival], xs, [f"e{i}" for i in arrival], ys


def run(ws: WindowStats, times, xs, ids, ys, batch: int):
    closed, late = [], []
    for lo in range(0, len(times), batch):
        up = ws.update_many(times[lo:lo + batch], xs[lo:lo + batch], event_ids=ids[lo:lo + batch],
                            ys=ys[lo:lo + batch])
        closed += [(lo + c.position, c.row) for c in up.closed]
        late += [(lo + e.position, e) for e in up.late]
    closed += [(-1, c.row) for c in ws.flush()]
    return closed, late


def test_batches_give_the_same_rows_as_one_event_at_a_time():
    data = stream()
    results = [run(WindowStats(window_us=60 * S, lateness_us=10 * S), *data, batch=b) for b in (1, 7, 1_000, 5_000)]
    for closed, late in results[1:]:
        assert [(p, r["window_start"], r["n"], r["n_late"]) for p, r in closed] == \
               [(p, r["window_start"], r["n"], r["n_late"]) for p, r in results[0][0]]
        assert [(p, e[1:]) for p, e in late] == [(p, e[1:]) for p, e in results[0][1]]
        for (_, a), (_, b) in zip(closed, results[0][0], strict=True):
            for k in ("mean", "std", "min", "max", "count"):
                assert a[k].keys() == b[k].keys()
                for f in a[k]:
                    assert a[k][f] == pytest.approx(b[k][f], rel=1e-9, abs=1e-9)


def test_every_event_is_counted_once_in_a_window_or_as_late_and_stats_match_polars():
    times, xs, ids, ys = stream()
    ws = WindowStats(window_us=60 * S, lateness_us=10 * S)
    closed, late = run(ws, times, xs, ids, ys, batch=333)
    assert late, "the stream must have late events for this test to mean anything"
    assert sum(r["n"] for _, r in closed) + len(late) == len(times)
    assert sum(r["n_late"] for _, r in closed) == len(late) == ws.n_late
    # a late event's window was closed before it arrived: its row came out at an earlier position
    closed_at = {r["window_start"]: p for p, r in closed}
    for pos, e in late:
        assert e.window_start + 60 * S <= e.watermark and closed_at[e.window_start] < pos
    kept = set(range(len(times))) - {p for p, _ in late}
    frame = pl.DataFrame({"t": [times[i] for i in sorted(kept)], "a": [xs[i]["a"] for i in sorted(kept)],
                          "b": [xs[i].get("b") for i in sorted(kept)],
                          "y": [ys[i] for i in sorted(kept)]}, strict=False)
    expected = (frame.group_by((pl.col("t") // (60 * S)) * (60 * S)).agg(
        pl.len().alias("n"), pl.col("a").mean().alias("a_mean"), pl.col("a").std().alias("a_std"),
        pl.col("b").min().alias("b_min"), pl.col("b").count().alias("b_count"), pl.col("y").mean().alias("rate"),
        pl.col("y").count().alias("n_labels")).sort("t"))
    rows = sorted((r for _, r in closed), key=lambda r: r["window_start"])
    assert [r["window_start"] for r in rows] == expected["t"].to_list()
    for r, e in zip(rows, expected.iter_rows(named=True), strict=True):
        assert r["n"] == e["n"] and r["n_labels"] == e["n_labels"]
        assert r["mean"]["a"] == pytest.approx(e["a_mean"]) and r["std"]["a"] == pytest.approx(e["a_std"])
        assert r["min"]["b"] == pytest.approx(e["b_min"]) and r["count"]["b"] == e["b_count"]
        assert r["label_rate"] == pytest.approx(e["rate"])
        assert set(r["mean"]) == {"a", "b", "flag"}  # numbers and booleans; strings are not described


def test_a_window_closes_when_the_watermark_passes_its_end():
    ws = WindowStats(window_us=10 * S, lateness_us=3 * S)
    assert ws.update_many([2 * S, 9 * S, 12 * S], [{}, {}, {}]).closed == []  # watermark 9 s < 10 s
    up = ws.update_one(13 * S, {"a": 1.0})
    closed = [(c.position, c.row["window_start"], c.row["n"], c.row["watermark"]) for c in up.closed]
    assert closed == [(0, 0, 2, 10 * S)]
    up = ws.update_one(5 * S, {}, event_id="old")
    assert up.closed == [] and [(e.event_id, e.window_start, e.watermark) for e in up.late] == [("old", 0, 10 * S)]
    assert ws.advance(25 * S)[0].row["n_late"] == 1  # idle source: the clock closes the window
    assert ws.flush() == []


def test_labels_for_open_windows_count_and_later_ones_are_reported_late():
    ws = WindowStats(window_us=10 * S)
    ws.update_many([1 * S, 2 * S], [{}, {}])
    assert ws.label_many([1 * S, 2 * S], [1, 0]) == 2
    ws.update_one(11 * S, {})
    assert ws.label_many([2 * S, 11 * S], [1, 1]) == 1
    rows = [c.row for c in ws.flush()]
    assert rows[0]["window_start"] == 10 * S and rows[0]["n_late_labels"] == 1 and rows[0]["label_rate"] == 1.0


def test_feature_evolving_streams_are_capped_and_indicators_skipped():
    ws = WindowStats(window_us=10 * S, max_features=3)
    ws.update_many([1, 2], [{"a": 1.0, "carrier=UA": 1.0}, {"b": 2.0}])
    ws.update_many([3, 4], [{"c": 3.0, "d": 4.0}, {"e": 5.0}])
    row = ws.flush()[0].row
    assert list(row["mean"]) == ["a", "b", "c"] and row["n"] == 4
    fixed = WindowStats(window_us=10 * S, features=["z"])
    fixed.update_one(1, {"a": 1.0})
    assert fixed.flush()[0].row["mean"] == {}


def test_state_pickles_mid_stream():
    times, xs, ids, ys = stream(2_000)
    ws = WindowStats(window_us=60 * S, lateness_us=10 * S)
    ws.update_many(times[:1_000], xs[:1_000], event_ids=ids[:1_000])
    clone = pickle.loads(pickle.dumps(ws))
    a = ws.update_many(times[1_000:], xs[1_000:], event_ids=ids[1_000:])
    b = clone.update_many(times[1_000:], xs[1_000:], event_ids=ids[1_000:])
    assert [c.row["n"] for c in a.closed] == [c.row["n"] for c in b.closed] and a.late == b.late


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"window_us": 0}, "window_us must be an integer > 0, got 0"),
    ({"window_us": 10, "lateness_us": -1}, "lateness_us must be an integer >= 0, got -1"),
    ({"window_us": 10, "max_features": 0}, "max_features must be an integer >= 1, got 0"),
    ({"window_us": 10, "features": "abc"}, "features must be a sequence of names, got 'abc'"),
])
def test_window_stats_validate_their_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WindowStats(**kwargs)


def test_rows_go_to_the_window_stats_and_late_events_tables(tmp_path):
    times, xs, ids, ys = stream(3_000)
    ws = WindowStats(window_us=60 * S, lateness_us=5 * S)
    closed, late = run(ws, times, xs, ids, ys, batch=500)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    lake = str(tmp_path)
    append(lake, "window_stats", window_stats_table([r for _, r in closed], run_id="r", seq=list(range(len(closed))),
                                                   closed_at=at), writer_id="w", position=1)
    append(lake, "late_events", late_events_table([e for _, e in late], run_id="r", seq=7), writer_id="l", position=1)
    back = read_table(lake, "window_stats").sort("window_start")
    assert back["n"].sum() + read_table(lake, "late_events").height == 3_000
    first = back.row(0, named=True)
    assert first["window_start"] == datetime(1970, 1, 1, tzinfo=UTC) and first["closed_at"] == at
    assert dict(first["mean"])["a"] == pytest.approx(closed[0][1]["mean"]["a"])
    assert back.select(pl.col("std").map.get("b")).to_series().null_count() == 0


# --------------------------------------------------------------------------- anomaly scores


def gauss(n: int, seed: int = 0, shift: float = 0.0):
    rng = random.Random(seed)
    return [{"a": rng.gauss(shift, 1.0), "b": rng.gauss(100.0, 10.0), "c": "text"} for _ in range(n)]


def test_zscore_flags_outliers_and_not_ordinary_events():
    scorer = make_scorer("zscore(block=500, threshold=4.0)")
    xs = gauss(5_000)
    xs[3_000] = {"a": 12.0, "b": 100.0}
    xs[4_000] = {"a": 0.0, "b": 300.0}
    scores, alarms = scorer.update_many(xs, event_ids=[f"e{i}" for i in range(5_000)], event_times=range(5_000))
    assert np.isnan(scores[:500]).all() and not np.isnan(scores[500:]).any()
    assert [a.event_id for a in alarms] == ["e3000", "e4000"]
    assert alarms[0].position == 3_001 and alarms[0].signal == "anomaly"
    assert alarms[0].detector == "zscore(block=500)"  # the label names what differs from the defaults
    assert scores[3_000] == pytest.approx(math.sqrt((12.0**2 + 0.0) / 2), rel=0.1)


def test_zscore_scores_the_same_in_batches_and_one_by_one_and_after_pickling():
    xs = gauss(3_000) + gauss(1_000, seed=1, shift=3.0)
    batch = make_scorer("zscore(block=300, n_blocks=3, how=max)").score_many(xs)
    one = make_scorer("zscore(block=300, n_blocks=3, how=max)")
    singles = []
    for i, x in enumerate(xs):
        if i == 1_234:
            one = pickle.loads(pickle.dumps(one))
        singles.append(one.score_one(x))
    np.testing.assert_allclose(batch, singles, rtol=1e-9)
    # the shift shows up in the scores, then the reference catches up with it
    assert np.nanmean(batch[3_000:3_300]) > 2.0 > np.nanmean(batch[1_000:3_000]) and np.mean(batch[3_900:]) < 2.0


def test_zscore_discovers_the_features_numeric_keys_names():
    """A scorer learns its features as a pass of numeric_keys over each batch would, in the same order, with
    categories (one-hot names) and text keys among them, keys whose first value in a batch is text, and the
    feature capacity filling mid-batch."""
    from monitoring.columns import is_number
    from monitoring.columns import numeric_keys as fast

    def numeric_keys(xs: list[dict], known: set[str]) -> list[str]:  # (the rule, written plainly)
        keys = list(dict.fromkeys(k for x in xs for k in x))
        return [k for k in keys if k not in known and is_number(next(x[k] for x in xs if k in x))]

    rng = random.Random(5)
    for capacity in (3, 8, 64):
        scorer = make_scorer(f"zscore(block=50, max_features={capacity})")
        names: list[str] = []
        known: set[str] = set()
        for _ in range(120):
            xs = []
            for _ in range(rng.randrange(1, 9)):
                x = {f"f{rng.randrange(12)}": rng.choice([rng.gauss(0, 1), "text", 3, True]) for _ in range(4)}
                x[f"cat={rng.randrange(40)}"] = 1.0
                xs.append(x)
            assert fast(xs, known) == numeric_keys(xs, known) == fast(xs, list(known))
            fresh = numeric_keys(xs, known)
            known.update(k for k in fresh if "=" in k)
            fresh = [k for k in fresh if "=" not in k][: capacity - len(names)]
            names.extend(fresh)
            known.update(fresh)
            scorer.score_many(xs)
            assert scorer.names == names
        assert len(names) == min(capacity, 12)


def test_half_space_trees_score_an_outlier_higher():
    scorer = make_scorer("hst(n_trees=5, height=6, window_size=100, threshold=0.95)")
    xs = gauss(1_000)
    scores = scorer.score_many(xs)
    assert ((scores >= 0) & (scores <= 1)).all()
    outlier = scorer.score_one({"a": 30.0, "b": -500.0})
    assert outlier > np.median(scores[500:])
    same = make_scorer("hst(n_trees=5, height=6, window_size=100, threshold=0.95)").score_many(xs)
    np.testing.assert_array_equal(scores, same)  # seeded


@pytest.mark.parametrize(("spec", "message"), [
    ("lof", "unknown anomaly scorer 'lof'; known: hst, zscore"),
    ("zscore(block=1)", "block must be an integer >= 2, got 1"),
    ("zscore(threshold=0)", "threshold must be > 0, got 0"),
    ("zscore(how=mean)", "how must be 'rms' or 'max', got 'mean'"),
    ("zscore(size=3)", "zscore: .*unexpected keyword argument 'size'"),
    ("hst(threshold=2.0)", r"threshold must be in \(0, 1\), got 2.0"),
    ("hst(height=0)", "height must be an integer >= 1, got 0"),
])
def test_anomaly_scorers_validate_their_arguments(spec, message):
    with pytest.raises(ValueError, match=message):
        make_scorer(spec)


@pytest.mark.parametrize("batch", [3, 13, 64])
def test_live_sized_batches_give_the_same_doubles_as_the_bulk_grouping(batch, monkeypatch):
    # A batch of up to 64 events is grouped into its windows in Python (live batches, a few events each);
    # the statistics must be the very doubles the numpy grouping gives, also with events out of order
    # across windows in one batch, missing values and labels.
    import monitoring.windows as windows

    data = stream(2_000, disorder_s=90, seed=9)
    small = run(WindowStats(window_us=30 * S, lateness_us=60 * S), *data, batch=batch)
    monkeypatch.setattr(windows, "_SMALL", 0)
    bulk = run(WindowStats(window_us=30 * S, lateness_us=60 * S), *data, batch=batch)
    assert len(small[0]) > 20 and small[0] == bulk[0]  # (the rows compare floats exactly)
    assert small[1] and [(p, e[1:]) for p, e in small[1]] == [(p, e[1:]) for p, e in bulk[1]]


def _live(ws: WindowStats, times, xs, ids, ys, batch: int, *, clone_at: int | None = None):
    """As a live step feeds them: events without labels, then the batch's labels by their events' times."""
    closed, late, held = [], [], 0
    for lo in range(0, len(times), batch):
        if clone_at is not None and lo >= clone_at:
            ws, clone_at = pickle.loads(pickle.dumps(ws)), None  # a snapshot taken with rows held, resumed
        up = ws.update_many(times[lo:lo + batch], xs[lo:lo + batch], event_ids=ids[lo:lo + batch])
        held = max(held, ws.__dict__.get("_n_held", 0))
        labelled = [(t, y) for t, y in zip(times[lo:lo + batch], ys[lo:lo + batch], strict=True) if y is not None]
        ws.label_many([t for t, _ in labelled], [y for _, y in labelled])
        closed += [(lo + c.position, c.row) for c in up.closed]
        late += [(lo + e.position, e) for e in up.late]
    closed += [(-1, c.row) for c in ws.flush()]
    return closed, late, held


def _same_rows(a, b, *, exact: bool) -> None:
    assert [(p, {k: v for k, v in r.items() if not isinstance(v, dict | float)}) for p, r in a] == \
        [(p, {k: v for k, v in r.items() if not isinstance(v, dict | float)}) for p, r in b]
    for (_, ra), (_, rb) in zip(a, b, strict=True):
        for k in ("count", "mean", "std", "min", "max", "label_rate"):
            if exact or not isinstance(ra[k], dict):
                assert ra[k] == rb[k], k
            else:
                assert ra[k].keys() == rb[k].keys() and all(
                    rb[k][f] == pytest.approx(v, rel=1e-12, abs=1e-12, nan_ok=True) for f, v in ra[k].items()), k


@pytest.mark.parametrize("batch", [3, 13])
def test_held_statistics_give_the_rows_of_merging_every_batch(batch, monkeypatch):
    # Live batches of a few events: their feature statistics wait in the windows (up to HOLD_ROWS events) and are
    # merged before any window closes; counts, positions and late events are exact, the doubles those of another
    # grouping. A feature first seen mid-stream, events out of order across windows, a snapshot with rows held.
    import monitoring.windows as windows

    times, xs, ids, ys = stream(3_000, disorder_s=90, seed=11)
    xs = [{**x, "c": i * 0.5} if i > 1_100 else x for i, x in enumerate(xs)]
    held_rows = _live(WindowStats(window_us=30 * S, lateness_us=60 * S), times, xs, ids, ys, batch)
    resumed = _live(WindowStats(window_us=30 * S, lateness_us=60 * S), times, xs, ids, ys, batch, clone_at=1_500)
    monkeypatch.setattr(windows, "HOLD_ROWS", 1)
    merged = _live(WindowStats(window_us=30 * S, lateness_us=60 * S), times, xs, ids, ys, batch)
    assert held_rows[2] >= 32 and merged[2] == 0, "rows were held (and not without the hold)"
    assert len(held_rows[0]) > 50 and held_rows[1] and held_rows[1] == merged[1]
    assert "c" in held_rows[0][-1][1]["mean"]
    _same_rows(held_rows[0], merged[0], exact=False)
    _same_rows(held_rows[0], resumed[0], exact=True)


def test_a_live_batchs_labels_count_as_the_numpy_grouping_counts_them(monkeypatch):
    import monitoring.windows as windows

    times, xs, ids, ys = stream(2_000, disorder_s=90, seed=5)
    ys = [float("nan") if i % 17 == 0 and y is not None else y for i, y in enumerate(ys)]  # NaN: not known
    few = _live(WindowStats(window_us=30 * S, lateness_us=20 * S), times, xs, ids, ys, 7)
    monkeypatch.setattr(windows, "_SMALL", 0)
    bulk = _live(WindowStats(window_us=30 * S, lateness_us=20 * S), times, xs, ids, ys, 7)
    assert sum(r["n_late_labels"] for _, r in few[0]) > 0 and sum(r["n_labels"] for _, r in few[0]) > 300
    _same_rows(few[0], bulk[0], exact=True)


def test_zscore_holds_what_it_learns_until_its_block_completes_and_scores_the_same(monkeypatch):
    import monitoring.anomaly as anomaly

    xs = gauss(2_500) + gauss(1_000, seed=1, shift=3.0)
    xs = [{**x, "c": 1.0 + i % 7} if i > 900 else x for i, x in enumerate(xs)]  # a feature found mid-stream

    def scores(clone_at: int | None = None) -> tuple[np.ndarray, list[str]]:
        scorer, out, alarms = make_scorer("zscore(block=300, n_blocks=3, threshold=2.5)"), [], []
        for lo in range(0, len(xs), 5):
            if clone_at is not None and lo >= clone_at:
                assert scorer.__dict__.get("_n_held", 0) > 0 or anomaly.HOLD_ROWS == 1
                scorer, clone_at = pickle.loads(pickle.dumps(scorer)), None
            got, found = scorer.update_many(xs[lo:lo + 5], event_ids=[f"e{i}" for i in range(lo, lo + 5)],
                                            event_times=range(lo, lo + 5))
            out.append(got)
            alarms += [a.event_id for a in found]
        return np.concatenate(out), alarms

    held, held_alarms = scores()
    resumed, _ = scores(clone_at=1_710)
    monkeypatch.setattr(anomaly, "HOLD_ROWS", 1)
    merged, merged_alarms = scores()
    np.testing.assert_allclose(held, merged, rtol=1e-12)
    np.testing.assert_array_equal(held, resumed)
    assert held_alarms == merged_alarms and held_alarms


def _fast_stream(n: int = 3_000, seed: int = 21, *, huge: bool = True):
    """Event time running far faster than the windows fill (a replay of history): one to three events a window,
    missing values, a non-number, huge magnitudes and a feature first seen mid-stream."""
    rng = random.Random(seed)
    times, xs = [], []
    t = 0
    for i in range(n):
        t += rng.choice([0, 0, S // 2, S, 3 * S])
        x = {"a": rng.gauss(0, 1) * 10 ** rng.randint(-3, 6), "b": rng.uniform(-5, 5), "flag": rng.random() < 0.5}
        if rng.random() < 0.2:
            del x["b"]
        if i % 97 == 0:
            x["a"] = "n/a"
        if huge and i % 401 == 0:
            x["b"] = 1e300
        if i > n // 2:
            x["late_feature"] = rng.random()
        times.append(t - rng.randint(0, 2) * S)
        xs.append(x)
    ids = [f"e{i}" for i in range(n)]
    ys = [None if rng.random() < 0.5 else int(rng.random() < 0.3) for _ in range(n)]
    return times, xs, ids, ys


@pytest.mark.parametrize("batch", [1, 5, 12])
def test_windows_closing_every_batch_merge_on_python_floats_as_numpy_merges(batch, monkeypatch):
    # When event time runs fast, a window closes with nearly every live batch and the few rows held are merged on
    # Python floats: the rows must be those of the numpy merge (counts, extremes exact; means and deviations the
    # same formulas, to the last bits), also with huge values (inf statistics), and the path must be taken.
    import monitoring.windows as windows

    data = _fast_stream()
    calls = {"few": 0}
    few_merge = windows.WindowStats._merge_few

    def counted(self, starts, rows):
        calls["few"] += 1
        return few_merge(self, starts, rows)

    monkeypatch.setattr(windows.WindowStats, "_merge_few", counted)
    few = _live(WindowStats(window_us=2 * S, lateness_us=S), *data, batch)
    took = calls["few"]
    monkeypatch.setattr(windows, "_FEW_VALUES", 0)
    merged = _live(WindowStats(window_us=2 * S, lateness_us=S), *data, batch)
    assert took > 200 and calls["few"] == took, "the few-values merge ran (and only where allowed)"
    assert len(few[0]) > 500 and few[1] == merged[1]
    assert any(not math.isfinite(r["std"].get("b", 0.0)) for _, r in few[0])  # (1e300: the sums overflow)
    assert "late_feature" in few[0][-1][1]["mean"]
    _same_rows(few[0], merged[0], exact=False)


def test_a_snapshot_of_windows_from_before_their_lists_resumes_the_same():
    # Snapshots written before the windows kept Python lists hold numpy arrays of the feature capacity: they resume
    # and give the very rows of a run never snapshotted.
    times, xs, ids, ys = _fast_stream(2_000, seed=3, huge=False)  # (no NaN statistics: rows compared with ==)
    ws = WindowStats(window_us=20 * S, lateness_us=5 * S)
    first = ws.update_many(times[:900], xs[:900])
    for win in ws._open.values():  # (the state as the arrays of the earlier code: capacity wide, defaults beyond)
        for name, fill in (("cnt", 0.0), ("mean", 0.0), ("m2", 0.0), ("lo", np.inf), ("hi", -np.inf)):
            values = getattr(win, name)
            setattr(win, name, np.concatenate([values, np.full(ws.capacity - len(values), fill)]))
    resumed = pickle.loads(pickle.dumps(ws))
    plain = WindowStats(window_us=20 * S, lateness_us=5 * S)
    assert [c.row for c in plain.update_many(times[:900], xs[:900]).closed] == [c.row for c in first.closed]
    rest = [c.row for c in resumed.update_many(times[900:], xs[900:]).closed] + [c.row for c in resumed.flush()]
    want = [c.row for c in plain.update_many(times[900:], xs[900:]).closed] + [c.row for c in plain.flush()]
    assert len(want) > 20 and rest == want
    assert all(isinstance(win.cnt, list) for win in resumed._open.values())
