"""The same replay with the same seed writes the same checkpoint bytes (sha256 included)."""

from __future__ import annotations

import pickle
import random

import polars as pl
import pytest
from bytewax.testing import run_main

from dataflows.models import TASK_SPECS
from dataflows.online import build_flow
from lake.table import read_table


def test_two_replays_write_the_same_naive_bayes_checkpoints_on_either_path(synthetic_lake):
    # naive-bayes alone takes the tabular step; beside linear-hash (which it does not run) the learner
    # feeds River's objects the featurized items.
    for run_id, models in (("tab-a", "naive-bayes"), ("tab-b", "naive-bayes"),
                           ("items-a", "naive-bayes,linear-hash"), ("items-b", "naive-bayes,linear-hash")):
        run_main(build_flow(lake=synthetic_lake, model=models, run_id=run_id, checkpoint_every=500))
    ckpts = read_table(synthetic_lake, "checkpoints").filter(pl.col("model") == "naive-bayes")
    runs = {r: ckpts.filter(pl.col("run_id") == r).sort("n_learned") for r in ("tab-a", "tab-b", "items-a", "items-b")}
    first = runs["tab-a"]
    assert first["n_learned"].to_list() == list(range(0, 3_001, 500))
    for run_id, got in runs.items():
        assert got["checkpoint_id"].to_list() == first["checkpoint_id"].to_list(), run_id
        assert got["model_bytes"].to_list() == first["model_bytes"].to_list(), run_id
        assert got["sha256"].to_list() == first["sha256"].to_list(), run_id


def _stream(n: int = 600):
    rng = random.Random(5)
    for i in range(n):
        x = {"a": rng.gauss(0, 1), "b": rng.random() * 10, f"shop={rng.choice('pqr')}": 1.0}
        if i > n // 2:
            x["late"] = rng.random()
        yield x, x["a"] + 0.3 * x["b"] + rng.gauss(0, 0.5)


@pytest.mark.parametrize("task,name", [(t, n) for t in ("multiclass", "regression") for n in sorted(TASK_SPECS[t])])
def test_every_spec_pickles_the_same_bytes_under_the_same_seed(task, name):
    """(The binary specs: tests/test_contracts.py.)"""
    m1, m2 = (TASK_SPECS[task][name].build(seed=11) for _ in range(2))
    for x, v in _stream():
        y = "abc"[int(v) % 3] if task == "multiclass" else v
        for m in (m1, m2):
            m.learn_one(x, y)
    assert pickle.dumps(m1, protocol=5) == pickle.dumps(m2, protocol=5)
