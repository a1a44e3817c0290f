"""One extreme value cannot poison the models: it is dead-lettered, and a learn step is all or nothing."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import polars as pl
import pytest

from dataflows.guard import MAX_ABS_FEATURE, LearnUndo, weights_check
from dataflows.items import EVENT, LABEL, Batch
from dataflows.learner import RunConfig, ShardLearner
from dataflows.models import SPECS, ModelSpec, get_spec
from dataflows.online import run_replay
from dataflows.sparse import SparseLogisticRegression
from dataflows.validate import check_event, validate_batch
from lake.cli import main as lake_main
from lake.ingest import ingest_file
from lake.reproduce import reproduce
from lake.table import read_table

S = 1_000_000


# -- the reproduction, end to end -------------------------------------------------------------
@pytest.fixture(scope="module")
def poisoned_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A 400-row Parquet file with a feature of 1e308 in two rows, ingested and replayed with linear,tree."""
    root = tmp_path_factory.mktemp("guards")
    rng = np.random.default_rng(0)
    n = 400
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = (x1 + 0.5 * x2 + rng.normal(scale=0.5, size=n) > 0).astype(int)
    x1[[100, 250]] = 1e308
    path = root / "d.parquet"
    pl.DataFrame({"id": [f"e{i}" for i in range(n)], "ts": [1_700_000_000 + 60 * i for i in range(n)],
                  "x1": x1, "x2": x2, "y": y}).write_parquet(path)
    lake = str(root / "lake")
    ingest_file(lake, path, id_col="id", time_col="ts", label_col="y", label_delay=30)
    run_id = run_replay(lake, "linear,tree", recovery=False)
    return lake, run_id


def test_two_rows_of_1e308_are_dead_lettered_and_no_score_is_nan(poisoned_lake):
    lake, _ = poisoned_lake
    preds = read_table(lake, "predictions")
    assert preds.group_by("model").len().sort("model").rows() == [("linear", 398), ("tree", 398)]
    assert preds["score"].is_finite().all()
    dead = read_table(lake, "dead_letters").sort("seq")
    assert dead.select("event_id", "step").rows() == [("e100", "validate"), ("e100", "learn"),
                                                      ("e250", "validate"), ("e250", "learn")]
    assert dead["reason"].to_list()[0] == (
        "value 1e+308 in field 'x1' is beyond what the models can learn from (|value| <= 1e+100)")
    assert dead["reason"].to_list()[1] == "label for an unknown event"  # (as for any event dead-lettered)
    metrics = read_table(lake, "metrics")
    assert metrics["log_loss"].is_finite().all() and metrics["cum_log_loss"].is_finite().all()


def test_learn_log_and_models_agree_and_reproduce_is_bit_equal(poisoned_lake, capsys):
    lake, run_id = poisoned_lake
    learns = read_table(lake, "learn_log")
    assert learns.group_by("model").len().sort("model").rows() == [("linear", 398), ("tree", 398)]
    assert not set(learns["event_id"]) & {"e100", "e250"}
    # the final checkpoints hold the models the learn log describes: replaying it from the first
    # checkpoint gives the last checkpoint's scores
    for event_id in ("e101", "e251", "e399"):
        results = reproduce(lake, event_id, run_id=run_id)
        assert len(results) == 2 and all(r.bit_equal for r in results), [r.describe() for r in results]
    assert lake_main(["reproduce", "--lake", lake, "--event-id", "e399"]) == 0
    out = capsys.readouterr().out
    assert out.count("bit-equal      yes") == 2 and "NO" not in out


# -- the learn step is all or nothing across the models ----------------------------------------------
class FailsOnLarge:
    """A binary classifier (River's protocol) that raises while learning from a large ``v``."""

    def __init__(self) -> None:
        self.n = 0

    def predict_proba_one(self, x: dict) -> dict:
        return {True: 1.0 / (2.0 + self.n), False: 1.0 - 1.0 / (2.0 + self.n)}

    def learn_one(self, x: dict, y: bool) -> None:
        if x.get("v", 0.0) > 1e6:
            raise OverflowError("learning from v overflows")
        self.n += 1


@pytest.fixture
def fragile_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SPECS, "fails-on-large", ModelSpec("fails-on-large", "raises on v > 1e6",
                                                           lambda seed: FailsOnLarge()))
    # a step of 1.7e308 overflows the weights to inf on a learn with a feature of |v| > 3
    monkeypatch.setitem(SPECS, "sgd-overflow", ModelSpec("sgd-overflow", "SGD with a huge step",
                                                         lambda seed: SparseLogisticRegression(lr=1.7e308)))


def _stream(n: int, *, bad: int | None, seed: int = 3, scale: float = 1.0) -> list[tuple]:
    """``n`` events each labelled two items later; event ``bad`` carries v=1e9 (within the feature bound)."""
    rng = random.Random(seed)
    items: list[tuple] = []
    for i in range(n):
        v = 1e9 if i == bad else rng.gauss(0, 1)
        items.append((len(items), EVENT, f"e{i}", i * S, "k", {"v": v, "w": rng.gauss(0, scale)}))
        if i >= 2:
            items.append((len(items), LABEL, f"e{i - 2}", int(rng.random() < 0.4), i * S, "k"))
    return items


def _process(models: tuple[str, ...], items: list[tuple], *, skip_label_of: str | None = None, **kw):
    learner = ShardLearner(RunConfig(run_id="g", models=models, **kw), shard=0)
    kept = [it for it in items if not (it[1] == LABEL and it[2] == skip_label_of)]
    tables: dict[str, list] = {}
    for s in range(0, len(kept), 25):  # several batches, so the undo spans batch boundaries
        out = learner.process(validate_batch(Batch(0, kept[s: s + 25])))
        for name, t in out.tables.items():
            tables.setdefault(name, []).extend(t.to_pylist())
    return learner, tables


@pytest.mark.parametrize("checkpoint_every", [7, 10_000])
def test_a_model_that_raises_while_learning_leaves_every_model_as_if_the_label_never_came(
        fragile_models, checkpoint_every):
    models = ("linear", "fails-on-large")
    items = _stream(120, bad=60)
    learner, got = _process(models, items, checkpoint_every=checkpoint_every)
    clean, want = _process(models, items, skip_label_of="e60", checkpoint_every=checkpoint_every)
    dead = [d for d in got["dead_letters"] if d["event_id"] == "e60"]
    assert [(d["step"], d["reason"]) for d in dead] == [
        ("learn", "OverflowError: learning from v overflows")]
    assert not [r for r in got["learn_log"] if r["event_id"] == "e60"]
    # the linear model did learn e60 before its challenger raised: that step was undone
    assert _rows(got["predictions"], "score", "model_version") == _rows(want["predictions"], "score", "model_version")
    assert _state(learner.slots[0].estimator) == _state(clean.slots[0].estimator)
    assert _rows(got["learn_log"], "learn_order") == _rows(want["learn_log"], "learn_order")


def _state(linear) -> tuple:
    """What a ``linear`` model learned: scaler statistics, weights and intercept."""
    scaler, lr = linear.steps.values()
    return dict(scaler.means), dict(scaler.vars), lr.weights, lr.intercept


def _rows(rows: list[dict], *columns: str) -> list[tuple]:
    """``rows`` by model and event, without ``seq`` (the runs compared differ by one label item)."""
    return sorted((r["model"], int(r["event_id"][1:]), *(r[c] for c in columns)) for r in rows)


def test_per_key_models_are_rolled_back_too(fragile_models):
    models = ("linear", "fails-on-large")
    items = _stream(120, bad=60)
    _, got = _process(models, items, per_key=True, checkpoint_every=11)
    _, want = _process(models, items, skip_label_of="e60", per_key=True, checkpoint_every=11)
    assert [d["reason"] for d in got["dead_letters"]] == ["OverflowError: learning from v overflows"]
    assert _rows(got["predictions"], "score", "model_version") == _rows(want["predictions"], "score", "model_version")
    assert _rows(got["learn_log"], "learn_order") == _rows(want["learn_log"], "learn_order")


def test_a_step_that_would_leave_non_finite_weights_is_not_applied(fragile_models):
    models = ("linear", "sgd-overflow")
    items = _stream(40, bad=None, scale=100.0)
    learner, got = _process(models, items)
    assert all(math.isfinite(p["score"]) for p in got["predictions"])
    dead = got["dead_letters"]
    assert dead and all(d["reason"] == "model 'sgd-overflow' would be left with non-finite weights"
                        for d in dead)
    assert all(math.isfinite(w) for w in learner.slots[1].estimator.weights.values())
    # nothing was learned by any model: the linear model is still the blank one
    assert _state(learner.slots[0].estimator) == _state(get_spec("linear").build(seed=42))
    assert "learn_log" not in got


def test_a_restored_learner_takes_a_new_base_and_still_undoes(fragile_models):
    models = ("linear", "fails-on-large")
    items = _stream(80, bad=50)
    learner = ShardLearner(RunConfig(run_id="g", models=models), shard=0)
    cut = next(i for i, it in enumerate(items) if it[1] == EVENT and it[2] == "e30")
    learner.process(validate_batch(Batch(0, items[:cut])))
    restored = pickle.loads(pickle.dumps(learner))  # a recovery snapshot holds no undo bytes
    assert restored.undo.base is None
    got = restored.process(validate_batch(Batch(0, items[cut:]))).tables["predictions"].to_pylist()
    _, want = _process(models, items, skip_label_of="e50")
    assert _rows(got, "score") == _rows([p for p in want["predictions"] if int(p["event_id"][1:]) >= 30], "score")


# -- the pieces --------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [1e308, -1e101, float("inf")])
def test_validation_names_the_field_and_value(value):
    reason = check_event((0, EVENT, "e", 0, "k", {"a": 1.0, "b": value}))
    assert "field 'b'" in reason and (repr(value) in reason or "non-finite" in reason)
    assert check_event((0, EVENT, "e", 0, "k", {"a": MAX_ABS_FEATURE, "b": -MAX_ABS_FEATURE, "c": math.nan})) is None


def test_weights_problem_sees_an_infinite_weight_of_a_river_pipeline():
    model = get_spec("linear").build(seed=0)
    model.learn_one({"a": 1.0}, True)
    check = weights_check(model)
    assert not check({"a": 1.0}, None)
    model.steps["LogisticRegression"]._weights["a"] = float("inf")
    assert check({"a": 1.0}, None)
    assert check({"b": 1.0}, None)  # a feature the step did not store a weight for: every weight is read
    assert weights_check(get_spec("tree").build(seed=0)) is None


def test_the_weights_check_reads_the_weights_a_learn_step_can_change():
    """Plain SGD without a penalty moves only the weights of the features learned from (and the intercept):
    the check reads those; a penalty or another optimizer can move every weight, and the check reads all."""
    from river import linear_model, optim, preprocessing

    def fitted(**kw):
        model = preprocessing.StandardScaler() | linear_model.LogisticRegression(**kw)
        for x in ({"a": 1.0, "b": 2.0}, {"a": 0.5, "b": 1.0, "c=x": 1.0}):
            model.learn_one(x, True)
        model.steps["LogisticRegression"]._weights["b"] = float("nan")
        return weights_check(model)

    sgd = fitted(optimizer=optim.SGD(0.01), l2=0.0)
    assert not sgd({"a": 1.0, "c=x": 1.0}, None)  # the NaN is in a weight this step could not have changed
    assert sgd({"a": 1.0, "b": 3.0}, None)
    for kw in ({"optimizer": optim.SGD(0.01), "l2": 0.1}, {"optimizer": optim.Adam(), "l2": 0.0},
               {"optimizer": optim.SGD(0.01), "l1": 0.1}):
        assert fitted(**kw)({"a": 1.0, "c=x": 1.0}, None), kw
    # the project's own scaler keeps the keys too; an unknown transformer before the model: every weight
    from dataflows.guard import _learns_locally

    assert _learns_locally(get_spec("linear").build(seed=0))
    from river import feature_extraction
    odd = feature_extraction.PolynomialExtender() | linear_model.LogisticRegression(optimizer=optim.SGD(0.01))
    odd.learn_one({"a": 1.0}, True)
    odd.steps["LogisticRegression"]._weights["zz"] = float("inf")
    assert weights_check(odd)({"a": 1.0}, None)


def test_undo_keeps_a_bounded_log(monkeypatch):
    monkeypatch.setattr("dataflows.guard.UNDO_STEPS", 3)
    undo = LearnUndo()
    undo.before_learn([SparseLogisticRegression()])
    for _ in range(3):
        undo.learned({"a": 1.0}, True, None)
    assert undo.base is None and undo.steps == []

