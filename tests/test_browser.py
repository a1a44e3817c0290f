"""What a person sees: the Prefect and MLflow UIs started by ``python -m flows.ui`` and the HTML reports, loaded in
Debian's headless Chromium (installed by ``.ci/run``). Screenshots go to ``$RIVERLAKE_SCREENSHOTS`` (default: the
test's temp folder)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from dataflows.bench.scaling import free_ports
from dataflows.online import run_replay
from lake.ingest import ingest_scenario
from monitoring.evidently_report import append_report_row, make_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")]


class _Text(HTMLParser):
    """The visible text of a page: every text node outside <script> and <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.skip = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):  # noqa: ARG002
        self.skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style")

    def handle_data(self, data):
        if not self.skip and data.strip():
            self.parts.append(data.strip())


def _browser(profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1280,900"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


def see(url: str, *, profile: Path, shot: Path, expect: list[str], attempts: int = 4) -> str:
    """Load ``url`` as a person would, wait for the page's scripts, return its visible text once it shows every
    string of ``expect`` (single-page apps fetch their data after load), and keep a screenshot."""
    text = ""
    for attempt in range(attempts):
        dom = _browser(profile, f"--virtual-time-budget={15_000 * (attempt + 1)}", "--dump-dom", url).stdout
        parser = _Text()
        parser.feed(dom)
        text = " | ".join(parser.parts)
        if all(e in text for e in expect):
            break
    _browser(profile, "--virtual-time-budget=20000", f"--screenshot={shot}", url)
    assert shot.stat().st_size > 10_000, f"screenshot of {url} is blank"
    missing = [e for e in expect if e not in text]
    assert not missing, f"{url} does not show {missing}; it shows: {text[:1500]}"
    return text


@pytest.fixture(scope="module")
def demo_lake(tmp_path_factory, prefect_harness):
    """A small flights lake as ``make demo`` leaves it: replayed, a drift report, a benchmark report."""
    from flows.benchmark import benchmark

    lake = str(tmp_path_factory.mktemp("demo") / "lake")
    ingest_scenario(lake, "flights", limit=8_000)
    run_replay(lake, "linear,naive-bayes", recovery=False, exclude="tailnum,flight")
    append_report_row(lake, make_report(lake, "2013-01-01T00:00:00+00:00/3d", "2013-01-04T00:00:00+00:00/3d"))
    out = benchmark(lake=lake, strategies=["online/linear", "static/sk-logreg"], retrain_every_events=2000,
                    sliding_events=4000, isolate=False)
    return lake, out["report"]


def test_the_uis_and_reports_in_a_browser(demo_lake, tmp_path, subprocess_env):
    lake, bench_page = demo_lake
    shots = Path(os.environ.get("RIVERLAKE_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    profile = tmp_path / "chromium-profile"
    prefect_port, mlflow_port = free_ports(2)
    env = {**subprocess_env, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    ui = subprocess.Popen([sys.executable, "-m", "flows.ui", "--lake", lake, "--prefect-port", str(prefect_port),
                           "--mlflow-port", str(mlflow_port)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        for line in ui.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C") or line.startswith("error"):
                break
        printed = "".join(lines)
        assert "Ctrl-C stops" in printed, printed
        shown = dict(line.strip().split("  ", 1) for line in lines if line.startswith("  "))
        shown = {k.strip(): v.strip() for k, v in shown.items()}
        assert shown["Prefect UI (deployments)"] == f"http://127.0.0.1:{prefect_port}/deployments"
        assert shown["benchmark report"] == bench_page

        # the Prefect UI lists the served deployments, talking to this server (not the default port)
        text = see(shown["Prefect UI (deployments)"], profile=profile, shot=shots / "prefect-deployments.png",
                   expect=["versioning", "promotion", "drift-report", "maintenance", "replay", "benchmark"])
        assert "Can't connect to Server API" not in text
        # MLflow: the registered model with the champion alias set by the promotion that flows.ui ran
        see(f"http://127.0.0.1:{mlflow_port}/#/models/riverlake-linear", profile=profile,
            shot=shots / "mlflow-model.png", expect=["riverlake-linear", "champion"])
        # the newest drift report: the drift table a person reads
        see(Path(shown["drift report"]).as_uri(), profile=profile, shot=shots / "drift-report.png",
            expect=["Dataset Drift", "Drifted Columns", "distance"])
        # the benchmark report names the strategies
        see(Path(bench_page).as_uri(), profile=profile, shot=shots / "benchmark-report.png",
            expect=["online/linear", "static/sk-logreg", "largest model (KiB)", "accuracy per event-time window"])
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGINT)  # Ctrl-C
        rest = ui.communicate(timeout=90)[0]
    assert ui.returncode == 0, "".join(lines) + rest
    assert "stopped" in rest
    # nothing left listening: the servers went down with it
    import socket

    for port in (prefect_port, mlflow_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open after Ctrl-C"
