"""Drift reports a person can read: titled HTML pages, and an Evidently workspace that `evidently ui` serves."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest

from dataflows.bench.scaling import free_ports
from dataflows.online import run_replay
from monitoring.evidently_report import append_report_row, make_report
from monitoring.evidently_workspace import PROJECT_PREFIX, workspace_dir
from tests.synthetic import T0

A = f"{T0.isoformat()}/25m"
B = f"{(T0 + timedelta(seconds=1500)).isoformat()}/25m"


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_reports_are_titled_and_collected_in_an_evidently_workspace(synthetic_lake, tmp_path):
    run_id = run_replay(synthetic_lake, "linear", recovery=False)
    first = make_report(synthetic_lake, A, B)
    append_report_row(synthetic_lake, first)
    page = Path(first.html_path).read_text(encoding="utf-8")
    # the browser tab and the page say which lake, windows and model the report covers
    assert f"<title>Drift report: {synthetic_lake}, " in page
    assert "1,500 rows) against current 2026-01-01 00:25" in page
    assert f"scores of model linear (run {run_id})" in page
    second = make_report(synthetic_lake, B, f"{(T0 + timedelta(seconds=2400)).isoformat()}/5m")

    # evidently ui on the lake's workspace: one project for the lake, both reports in it
    folder = workspace_dir(synthetic_lake)
    (port,) = free_ports(1)
    ui = subprocess.Popen([str(Path(sys.executable).parent / "evidently"), "ui", "--workspace", str(folder),
                           "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True, env={**os.environ, "DO_NOT_TRACK": "1"})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                projects = _get(f"http://127.0.0.1:{port}/api/projects/")
                break
            except OSError:
                assert ui.poll() is None and time.monotonic() < deadline, "evidently ui did not start"
                time.sleep(0.5)
        ours = [p for p in projects if p["name"] == PROJECT_PREFIX + synthetic_lake]
        assert len(ours) == 1
        snapshots = _get(f"http://127.0.0.1:{port}/api/projects/{ours[0]['id']}/snapshots")
        assert len(snapshots) == 2
        # each plotted at the end of its current window (event time), not when it was built
        stamps = sorted(s["timestamp"][:16] for s in snapshots)
        assert stamps == ["2026-01-01T00:45", "2026-01-01T00:50"], stamps
        assert {s["metadata"]["report_id"] for s in snapshots} == {first.report_id, second.report_id}
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


@pytest.mark.parametrize("name", ["drift.html"])
def test_heading_is_escaped(tmp_path, name):
    from monitoring.evidently_report import add_heading

    page = tmp_path / name
    page.write_text("<html><head></head><body><p>report</p></body></html>", encoding="utf-8")
    add_heading(page, "Drift report: <lake>", ["a & b"])
    text = page.read_text(encoding="utf-8")
    assert "<title>Drift report: &lt;lake&gt;</title>" in text and "a &amp; b" in text and "<p>report</p>" in text
