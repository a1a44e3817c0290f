"""Notebooks run headless against a real lake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat

from dataflows.online import run_replay
from lake.summary import summarize, windows
from tests.notebooks import NOTEBOOKS, execute, lake_files


def test_summary_reports_counts_and_accuracy(synthetic_lake):
    run_id = run_replay(synthetic_lake, "linear,naive-bayes", window="10m", grace="1m")
    s = summarize(synthetic_lake)
    assert s.run_id == run_id
    assert s.n_events == 3_000 and s.predictions == {"linear": 3_000, "naive-bayes": 3_000}
    text = str(s)
    assert "accuracy by month" in text and "predictions" in text and str(Path(synthetic_lake) / "events") in text
    # beside the models, the no-skill baseline of the same labels (a constant score at their base rate)
    assert "    no skill     accuracy 0." in text
    assert "no skill" in next(line for line in text.splitlines() if line.strip().startswith("month"))
    w = windows(synthetic_lake)
    assert set(w["model"]) == {"linear", "naive-bayes"}
    assert w.filter(w["model"] == "linear")["n"].sum() == 3_000


def test_replay_notebook_draws_inline_and_leaves_the_lake_untouched(synthetic_lake, monkeypatch, tmp_path):
    run_replay(synthetic_lake, "linear", window="10m", grace="1m")
    monkeypatch.setenv("RIVERLAKE_LAKE", synthetic_lake)
    monkeypatch.delenv("RIVERLAKE_FIGURES", raising=False)
    before = lake_files(synthetic_lake)
    run = execute("replay_overview.ipynb")
    assert "prequential, whole run" in run.text
    assert run.figure_cells == 1 and len(run.figures) == 1 and run.figures[0] > 5_000
    assert lake_files(synthetic_lake) == before  # read-only: nothing written into the lake

    figures = tmp_path / "figures"
    figures.mkdir()
    monkeypatch.setenv("RIVERLAKE_FIGURES", str(figures))
    execute("replay_overview.ipynb")
    assert (figures / "replay_overview.png").stat().st_size > 5_000
    assert lake_files(synthetic_lake) == before


def test_readme_nbconvert_command(synthetic_lake, subprocess_env, tmp_path):
    """The command the README and `make notebooks` give: jupyter nbconvert executes a notebook in place of Jupyter."""
    run_replay(synthetic_lake, "linear", window="10m", grace="1m")
    out = tmp_path / "executed"
    env = {**subprocess_env, "RIVERLAKE_LAKE": synthetic_lake}
    done = subprocess.run([str(Path(sys.executable).parent / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
                           str(NOTEBOOKS / "replay_overview.ipynb"), "--output-dir", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    nb = nbformat.read(out / "replay_overview.ipynb", as_version=4)
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
