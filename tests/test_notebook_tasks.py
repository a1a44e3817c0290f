"""The notebooks and monitoring.analysis on regression and multiclass lakes (issue 18): the task's
metrics are plotted, read-only, headless."""

from __future__ import annotations

import polars as pl
import pytest

from lake.table import read_table
from monitoring.analysis import drift_overview, rolling_quality, run_overview
from tests.notebooks import execute, lake_files
from tests.tasklakes import task_lake, write_task_run


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A run of two models (tree, the champion, is the better) over 1,500 scenario events, per task."""
    out = {}
    for task in ("regression", "multiclass"):
        lake = task_lake(str(tmp_path_factory.mktemp(task) / "lake"), task, n=1_500)
        write_task_run(lake, task, skills={"tree": 0.8, "linear": 0.5})
        out[task] = lake
    return out


@pytest.mark.parametrize("task, metrics", [("regression", ("mae", "rmse")), ("multiclass", ("accuracy", "log_loss"))])
def test_the_analysis_reads_the_tasks_metrics(lakes, task, metrics):
    lake = lakes[task]
    overview = run_overview(lake)
    assert (overview.task, overview.metrics) == (task, metrics)
    assert f"task {task}" in str(overview) and "prequential, whole run" in str(overview)
    drift = drift_overview(lake)
    assert drift.metrics == metrics and set(drift.windows["model"]) == {"tree", "linear"}
    # the finer slices (learn_log and predictions) agree with the metric windows (metrics) on the same events
    rolled = rolling_quality(lake, run_id="r1", bins=5).sort("model", "bin")
    windows = overview.windows.sort("model", "window_start")
    assert rolled["n"].to_list() == windows["n"].to_list()
    for m in metrics:
        assert rolled[m].to_list() == pytest.approx(windows[m].to_list())
    per_model = windows.group_by("model").agg(pl.col(metrics[0]).mean())
    better = dict(per_model.iter_rows())
    assert (better["tree"] < better["linear"]) if task == "regression" else (better["tree"] > better["linear"])


def test_notebooks_plot_a_regression_lake_read_only(lakes, monkeypatch, tmp_path):
    lake = lakes["regression"]
    monkeypatch.setenv("RIVERLAKE_LAKE", lake)
    figures = tmp_path / "figures"
    figures.mkdir()
    monkeypatch.setenv("RIVERLAKE_FIGURES", str(figures))
    before = lake_files(lake)
    replay = execute("replay_overview.ipynb")
    assert "task regression" in replay.text and "mae" in replay.text and len(replay.figures) == 1
    drift = execute("drift_analysis.ipynb")
    assert len(drift.figures) == drift.figure_cells == 4
    truth = read_table(lake, "scenario_drifts").height
    assert truth > 0 and f"{truth} true drifts" in drift.text
    assert (figures / "replay_overview.png").stat().st_size > 5_000
    assert (figures / "drift_analysis_quality.png").stat().st_size > 5_000
    assert lake_files(lake) == before  # read-only


def test_the_drift_notebook_plots_a_multiclass_lake(lakes, monkeypatch):
    monkeypatch.setenv("RIVERLAKE_LAKE", lakes["multiclass"])
    monkeypatch.delenv("RIVERLAKE_FIGURES", raising=False)
    run = execute("drift_analysis.ipynb")
    assert len(run.figures) == 4
