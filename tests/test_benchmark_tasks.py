"""The online-vs-batch benchmark on regression and multiclass lakes (issue 18): the task's learners,
metrics and naive baselines in the lake tables, the Markdown table and the HTML report."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from dataflows.replay import pin_versions
from flows.bench.report import no_skill, overall
from flows.bench.strategies import BenchConfig, StrategySpec, run_strategy
from flows.bench.stream import build_stream
from flows.benchmark import benchmark, markdown_table
from lake.table import read_table
from tests.tasklakes import task_lake

CONFIG = BenchConfig(retrain_every_events=250, sliding_events=1_000, latency_samples=100)
STRATEGIES = {
    "regression": ["online/tree", "periodic-expanding/sk-ridge", "periodic-sliding/hgb", "online/mean",
                   "online/persistence"],
    "multiclass": ["online/linear", "periodic-sliding/sk-logreg", "periodic-expanding/hgb", "online/majority"],
}


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {task: task_lake(str(tmp_path_factory.mktemp(task) / "lake"), task, n=2_500)
            for task in ("regression", "multiclass")}


def test_metrics_agree_with_scikit_learn():
    from sklearn.metrics import f1_score, log_loss, mean_absolute_error, mean_squared_error, r2_score

    rng = np.random.default_rng(3)
    y, p = rng.normal(10, 3, 400), rng.normal(10, 3, 400)
    m = overall(y, p, task="regression")
    assert m["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, p)))
    assert m["r2"] == pytest.approx(r2_score(y, p))
    assert no_skill(y, task="regression")["mae"] == pytest.approx(mean_absolute_error(y, np.full(400, y.mean())))
    classes = rng.integers(0, 4, 400)
    proba = rng.dirichlet(np.ones(4), 400)
    m = overall(classes, proba, task="multiclass")
    assert m["accuracy"] == pytest.approx(np.mean(proba.argmax(1) == classes))
    assert m["macro_f1"] == pytest.approx(f1_score(classes, proba.argmax(1), average="macro"))
    assert m["log_loss"] == pytest.approx(log_loss(classes, proba, labels=[0, 1, 2, 3]))
    shares = np.bincount(classes, minlength=4) / 400
    assert no_skill(classes, task="multiclass", n_classes=4)["log_loss"] == pytest.approx(
        log_loss(classes, np.tile(shares, (400, 1))))


def test_the_task_decides_which_learners_a_strategy_may_name():
    assert StrategySpec.parse("periodic-sliding/sk-ridge", task="regression").learner == "sk-ridge"
    with pytest.raises(ValueError, match="'sk-logreg'.*known for regression: sk-ridge, sk-sgd, hgb"):
        StrategySpec.parse("periodic-sliding/sk-logreg", task="regression")
    with pytest.raises(ValueError, match="unknown River spec 'mean'.*known for multiclass"):
        StrategySpec.parse("online/mean", task="multiclass")
    with pytest.raises(ValueError, match="unknown batch learner 'sk-ridge'"):
        StrategySpec.parse("static/sk-ridge")  # binary lakes: classifiers only, as before


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_strategies_learn_the_task_without_leaks_and_beat_the_naive_baselines(lakes, task):
    stream = build_stream(lakes[task], pin_versions(lakes[task]))
    assert stream.task == task and len(stream.scored) == 2_500
    if task == "multiclass":
        assert stream.classes == sorted(stream.classes) and len(stream.classes) >= 3
    runs = {name: run_strategy(stream, name, CONFIG, keep_rows=True) for name in STRATEGIES[task]}
    sc = stream.scored
    scored = {name: overall(stream.y[sc], run.scores[sc], task=task) for name, run in runs.items()}
    for name, run in runs.items():
        assert run.audit.n_served == stream.n_events or name.startswith("periodic")
        if task == "multiclass":
            assert run.scores.shape == (stream.n_events, len(stream.classes))
            assert np.allclose(run.scores.sum(axis=1), 1.0)
        assert np.isfinite(run.scores).all()
    if task == "regression":
        for model in ("online/tree", "periodic-sliding/hgb"):
            assert scored[model]["mae"] < scored["online/mean"]["mae"] < scored["online/persistence"]["mae"]
        assert scored["periodic-sliding/hgb"]["r2"] > 0.3
    else:
        for model in ("online/linear", "periodic-expanding/hgb", "periodic-sliding/sk-logreg"):
            assert scored[model]["accuracy"] > scored["online/majority"]["accuracy"] + 0.05
            assert scored[model]["macro_f1"] > scored["online/majority"]["macro_f1"]


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_the_flow_writes_the_tasks_metrics_to_the_lake_the_report_and_the_table(prefect_harness, lakes, task,
                                                                                  mlflow_uri):
    lake = lakes[task]
    out = benchmark(lake=lake, strategies=STRATEGIES[task], retrain_every_events=250, sliding_events=1_000,
                    isolate=False, tracking_uri=mlflow_uri, budget=None)
    bid = out["benchmark_id"]
    runs = read_table(lake, "benchmark_runs").filter(pl.col("benchmark_id") == bid)
    assert sorted(runs["strategy"]) == sorted(STRATEGIES[task]) and set(runs["task"]) == {task}
    wins = read_table(lake, "benchmark_windows").filter(pl.col("benchmark_id") == bid)
    assert wins.group_by("strategy").agg(pl.col("n").sum())["n"].to_list() == [2_500] * len(STRATEGIES[task])
    with open(out["report"], encoding="utf-8") as f:
        page = f.read()
    table = markdown_table(out["results"], task=task)
    if task == "regression":
        assert runs["mae"].is_not_null().all() and runs["accuracy"].is_null().all()
        assert wins["mae"].is_not_null().all() and wins["cum_mae"].is_not_null().all()
        best = runs.sort("mae").row(0, named=True)["strategy"]
        assert best in ("online/tree", "periodic-sliding/hgb", "periodic-expanding/sk-ridge")
        assert ">MAE</th>" in page and ">R²</th>" in page and "no skill (mean)" in page
        assert ">ROC AUC</th>" not in page
        assert table.startswith("| strategy | MAE | RMSE | R² |") and "*no skill (mean of the labels)*" in table
    else:
        assert runs["macro_f1"].is_not_null().all() and runs["roc_auc"].is_null().all()
        majority = runs.filter(pl.col("strategy") == "online/majority")["accuracy"][0]
        assert runs.filter(pl.col("strategy") == "periodic-expanding/hgb")["accuracy"][0] > majority
        assert ">macro-F1</th>" in page and "no skill (class shares)" in page and ">ROC AUC</th>" not in page
        assert table.startswith("| strategy | accuracy | macro-F1 | log loss |")
