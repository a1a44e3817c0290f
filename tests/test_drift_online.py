"""Drift detectors in the running dataflow find the agrawal-drift scenario's known drifts."""

from __future__ import annotations

import polars as pl
import pytest

from dataflows.online import run_replay
from lake.ingest import ingest_scenario
from lake.table import read_table

pytestmark = pytest.mark.slow


def test_adwin_on_the_error_stream_finds_every_abrupt_drift(tmp_path):
    lake = str(tmp_path / "lake")
    ingest_scenario(lake, "agrawal-drift", n=24_000, seed=3)
    run_id = run_replay(lake, "linear", recovery=False, window="1h")
    truth = read_table(lake, "scenario_drifts")["position"].sort().to_list()
    assert truth == [6_000, 12_000, 18_000]
    alarms = (read_table(lake, "drift_events").filter(pl.col("run_id") == run_id)
              .sort("position")["position"].to_list())
    for drift in truth:
        found = [a for a in alarms if drift <= a < drift + 1_000]
        assert found, f"no alarm within 1,000 labels after the drift at {drift}: {alarms}"
    assert len(alarms) <= 2 * len(truth) + 2, f"too many alarms: {alarms}"
