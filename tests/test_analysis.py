"""The analysis helpers behind the notebooks, on lakes of shapes the scenarios do not have."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lake.table import TableWriter
from monitoring.analysis import window_features
from monitoring.windows import WindowStats, window_stats_table


def test_window_features_with_single_event_windows(tmp_path):
    # one event per daily window for some features: those windows have a mean but no std
    day = 86_400_000_000
    t0 = int(datetime(1975, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)
    ws = WindowStats(window_us=day)
    times, rows = [], []
    for d in range(30):
        times.append(t0 + d * day)
        rows.append({"temp": float(d), "rain": 1.0 + d})
        if d % 2 == 0:  # a second reading of temp only on even days
            times.append(t0 + d * day + 1)
            rows.append({"temp": float(d) + 0.5})
    closed = ws.update_many(times, rows).closed + list(ws.flush())
    assert any("rain" in c.row["mean"] and "rain" not in c.row["std"] for c in closed)
    lake = tmp_path / "lake"
    TableWriter(lake, "window_stats", writer_id="t").append(
        window_stats_table(closed, run_id="r", seq=list(range(len(closed)))), position=0)

    got = window_features(str(lake), run_id="r", features=["temp", "rain"])
    assert set(got["feature"]) == {"temp", "rain"}
    rain = got.filter(got["feature"] == "rain")
    assert rain.height == 30 and rain["std"].null_count() == 30
    assert rain["mean"].to_list() == [1.0 + d for d in range(30)]
    temp = got.filter(got["feature"] == "temp")
    assert temp["std"].null_count() == 15  # odd days held one reading
    assert temp["window_start"].min() == datetime(1975, 1, 1, tzinfo=UTC)
    assert temp["window_start"].max() == datetime(1975, 1, 1, tzinfo=UTC) + timedelta(days=29)
    # the default choice of features works too
    assert window_features(str(lake), run_id="r").height > 0
