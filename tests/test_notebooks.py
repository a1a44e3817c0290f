"""Notebooks run headless against a real lake."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from dataflows.online import run_replay
from lake.summary import summarize, windows

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


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


@pytest.mark.parametrize("name", ["replay_overview.ipynb"])
def test_notebook_executes(name, synthetic_lake, monkeypatch):
    run_replay(synthetic_lake, "linear", window="10m", grace="1m")
    monkeypatch.setenv("RIVERLAKE_LAKE", synthetic_lake)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS.parent)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "prequential, whole run" in outputs
    assert (Path(synthetic_lake) / "replay_overview.png").stat().st_size > 1_000
