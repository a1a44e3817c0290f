"""Every README command, with its defaults, on streams unlike the scenarios (issue 22, item 7).

Each shape of :mod:`lake.scenarios.shapes` is written as the CSV file a user would have and
run through the commands exactly as typed (subprocesses, defaults only): each succeeds, or
refuses in one ``error:`` line with exit status 2 and no traceback. The flows run against one
Prefect test server (``PREFECT_API_URL``) instead of starting their own each time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import polars as pl
import pytest

from flows.bench.shapes_matrix import Outcome, run_shape
from lake.scenarios.shapes import SHAPES, shape_rows

ROOT = Path(__file__).resolve().parents[1]
CHEAP = ("ingest", "replay", "info", "reproduce", "drift")
LEARNED = re.compile(r"shard 0 ended: ([\d,]+) events predicted, ([\d,]+) of ([\d,]+) labels learned")


@pytest.fixture(scope="module")
def flow_env(prefect_harness, tmp_path_factory) -> dict[str, str]:
    """The environment of a user's shell, pointed at the session's Prefect test server."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)  # each lake's own store, as a user's shell has it
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    env["MPLCONFIGDIR"] = str(tmp_path_factory.mktemp("mpl"))
    return env


def _by_command(outcomes: list[Outcome]) -> dict[str, Outcome]:
    by = {o.command: o for o in outcomes}
    for o in outcomes:
        assert o.status in ("ok", "refused"), f"{o.command} failed (exit {o.returncode}):\n{o.stderr[-3000:]}"
        assert "Traceback" not in o.stderr, o.stderr[-3000:]
        if o.status == "refused":  # one line, nothing else
            assert o.stderr.strip().count("\n") == 0, o.stderr
    return by


def _learned(replay: Outcome) -> tuple[int, int, int]:
    m = LEARNED.search(replay.stderr)
    assert m, replay.stderr[-2000:]
    return tuple(int(g.replace(",", "")) for g in m.groups())  # type: ignore[return-value]


def _chosen(outcome: Outcome) -> dict[str, str]:
    return dict(c.split(": ", 1) for c in outcome.chosen if not c.startswith("drift windows"))


FAST = [name for name, shape in SHAPES.items() if not shape.slow]


@pytest.mark.parametrize("shape", FAST)
def test_ingest_replay_info_reproduce_and_drift_work_on_every_shape_with_defaults(shape, tmp_path, flow_env):
    run = _by_command(run_shape(shape, tmp_path, commands=CHEAP, env=flow_env, timeout=300))
    rows = shape_rows(shape)
    n_labels = sum(r["label"] is not None for r in rows)
    assert all(run[c].status == "ok" for c in ("ingest", "replay", "info", "reproduce")), {
        c: run[c].refusal for c in run}
    assert re.search(r"bit-equal\s+yes", run["reproduce"].stdout), run["reproduce"].stdout  # also with no learn_log
    assert f"ingested {len(rows):,} events, {n_labels:,} labels" in run["ingest"].stdout + run["ingest"].stderr

    # the replay says what it chose and learns every label that arrived, whatever the time scale
    chosen = _chosen(run["replay"])
    assert set(chosen) == {"window", "label_ttl", "grace", "stats_window"}, run["replay"].stderr[-2000:]
    predicted, learned, arrived = _learned(run["replay"])
    assert predicted == len(rows) and arrived == n_labels and learned == n_labels
    assert "warning:" not in run["replay"].stderr
    summaries = pl.read_delta(str(tmp_path / shape / "lake" / "run_summaries"))
    assert summaries["n_learned"].to_list() == [n_labels]
    assert "run_summaries" in run["info"].stdout and "shard 0 ended" in run["info"].stdout

    # the drift report picks windows the history can fill, and says which
    assert run["drift"].status == "ok", run["drift"].stderr[-2000:]
    assert any(c.startswith("drift windows: ") for c in run["drift"].chosen), run["drift"].stdout[-2000:]

    if shape == "daily-decades":  # a day between events: windows of months or years, a label a day later
        assert chosen["label_ttl"] == "1d" and chosen["window"].endswith(("d", "y")) and chosen["window"] != "1d"
    if shape == "subsecond-bursts":  # labels within 2 s: a ttl of seconds, not days
        assert chosen["label_ttl"].endswith("s") and not chosen["label_ttl"].endswith("ms")
    if shape == "long-delays":  # every label comes after the last event and is still learned
        assert int(chosen["label_ttl"].rstrip("d")) >= 50
    if shape == "labels-never-come":
        assert learned == 0 and "labels vNone" in run["ingest"].stdout


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["tiny", "labels-never-come"])
def test_the_lifecycle_commands_work_on_edge_shapes(shape, tmp_path, flow_env):
    """bytewax.run, versioning, promotion, benchmark (small budget) and maintain after the replay."""
    commands = ("ingest", "replay", "bytewax.run", "versioning", "promotion", "benchmark", "maintain")
    run = _by_command(run_shape(shape, tmp_path, commands=commands, budget="1m", env=flow_env, timeout=600))
    # without labels there is nothing to compare models on: said in one line, naming the table
    refused = {"promotion", "benchmark"} if shape == "labels-never-come" else set()
    assert {c for c in commands if run[c].status != "ok"} == refused, {c: run[c].refusal for c in commands}
    for c in refused:
        assert run[c].refusal.startswith("error: table 'labels' does not exist at ")
        assert run[c].refusal.endswith("no label has been ingested yet")
    assert "shard 0 ended" in run["bytewax.run"].stderr  # the same run under bytewax.run: nothing predicted twice
    assert pl.read_delta(str(tmp_path / shape / "lake" / "predictions")).height == len(shape_rows(shape))
    if not refused:
        assert any(c.startswith("retrain every") for c in run["benchmark"].chosen), run["benchmark"].stdout[-2000:]


@pytest.mark.slow
def test_a_hundred_thousand_keys_replay_with_defaults(tmp_path, flow_env):
    run = _by_command(run_shape("many-keys", tmp_path, commands=("ingest", "replay", "info"), env=flow_env,
                                timeout=600))
    predicted, learned, arrived = _learned(run["replay"])
    assert predicted == 100_000 and learned == arrived == 100_000


TASK_SHAPES = [("regression", "daily-decades"), ("regression", "all-one-class"), ("regression", "nulls-everywhere"),
               ("multiclass", "categorical-only"), ("multiclass", "long-delays"), ("multiclass", "subsecond-bursts")]


@pytest.mark.parametrize(("task", "shape"), TASK_SHAPES)
def test_regression_and_multiclass_shapes_ingest_replay_and_reproduce_with_defaults(task, shape, tmp_path, flow_env):
    run = _by_command(run_shape(shape, tmp_path, commands=("ingest", "replay", "info", "reproduce"), env=flow_env,
                                timeout=300, task=task))
    assert all(o.status == "ok" for o in run.values()), {c: o.refusal for c, o in run.items()}
    rows = shape_rows(shape, task=task)
    n_labels = sum(r["label"] is not None for r in rows)
    assert f"task {task}" in run["ingest"].stdout + run["ingest"].stderr
    predicted, learned, arrived = _learned(run["replay"])
    assert predicted == len(rows) and learned == arrived == n_labels
    assert re.search(r"bit-equal\s+yes", run["reproduce"].stdout), run["reproduce"].stdout
    labels = pl.read_delta(str(tmp_path / shape / "lake" / "labels"))["label"]
    assert labels.dtype == (pl.Float64 if task == "regression" else pl.String)
    predictions = pl.read_delta(str(tmp_path / shape / "lake" / "predictions"))
    assert predictions.height == len(rows) and predictions["prediction"].null_count() == 0
