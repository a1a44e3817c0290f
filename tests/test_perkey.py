"""One model per key: each key's model learns its key's events only, so any sharding predicts the same."""

from __future__ import annotations

import pickle

import mlflow
import pandas as pd
import polars as pl
import pytest
from bytewax.testing import run_main
from river import linear_model, tree

from dataflows.learner import RunConfig
from dataflows.models import score_one
from dataflows.online import build_flow, defaults_from_env
from dataflows.perkey import PerKeyModel
from dataflows.replay import balanced_shards
from flows.registry import client_for, using
from flows.versioning import sync_lake
from lake.reproduce import reproduce
from lake.table import append, read_table
from tests.synthetic import synthetic_frames

KEYS = "abcdefgh"


def _stream(n: int = 600, seed: int = 3) -> list[tuple[dict, bool, str]]:
    frames, labels = synthetic_frames(n, seed=seed, keys="abc")
    ys = dict(zip(labels["event_id"], labels["label"], strict=True))
    return [({"x1": r["x1"], "x2": r["x2"]}, ys[r["event_id"]] == 1, r["key"])
            for r in frames.iter_rows(named=True)]


def test_each_key_has_the_model_it_would_have_learned_alone():
    stream = _stream()
    keyed = PerKeyModel(linear_model.LogisticRegression())
    alone = {k: linear_model.LogisticRegression() for k in "abc"}
    for x, y, k in stream:
        assert keyed.predict_proba_one(x, k) == alone[k].predict_proba_one(x)
        keyed.learn_one(x, y, k)
        alone[k].learn_one(x, y)
    assert keyed.n_keys == 3
    for k in "abc":
        assert keyed.model_for(k).weights == alone[k].weights
    # a key never learned from is served by the blank model, which stays blank
    assert keyed.predict_proba_one({"x1": 3.0}, "z") == linear_model.LogisticRegression().predict_proba_one(
        {"x1": 3.0})
    assert keyed.blank.weights == {}


def test_keys_that_learned_least_recently_are_forgotten_past_max_keys():
    m = PerKeyModel(tree.HoeffdingTreeClassifier(), max_keys=10)
    for i in range(10):
        m.learn_one({"x": float(i)}, i % 2 == 0, f"k{i}")
    m.learn_one({"x": 0.0}, True, "k0")  # k0 learned again: now the most recent
    assert m.n_keys == 10 and m.keys_forgotten == 0
    m.learn_one({"x": 1.0}, False, "k10")
    # past 10 keys: down to 8, the least recently learned (k1, k2, k3) forgotten
    assert m.n_keys == 8 and m.keys_forgotten == 3
    assert list(m.models) == [*(f"k{i}" for i in range(4, 10)), "k0", "k10"]
    assert m.model_for("k1") is m.blank


def test_round_trips_through_pickle_and_rejects_bad_settings():
    m = PerKeyModel(linear_model.LogisticRegression(), max_keys=5)
    for x, y, k in _stream(100):
        m.learn_one(x, y, k)
    again = pickle.loads(pickle.dumps(m))
    x = {"x1": 0.4, "x2": -0.2}
    assert all(again.predict_proba_one(x, k) == m.predict_proba_one(x, k) for k in "abcz")
    assert again.max_keys == 5 and again.n_keys == 3
    with pytest.raises(ValueError, match="max_keys must be an integer >= 1, got 0"):
        PerKeyModel(linear_model.LogisticRegression(), max_keys=0)
    with pytest.raises(TypeError, match="River binary classifier"):
        PerKeyModel(object())
    with pytest.raises(ValueError, match="max_key_models must be >= 1"):
        RunConfig(run_id="r", per_key=True, max_key_models=0)


@pytest.fixture(scope="module")
def keyed_lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    """3,000 events of 8 keys where half the keys have the opposite concept: per-key models pay."""
    lake = str(tmp_path_factory.mktemp("perkey") / "lake")
    events, labels = synthetic_frames(3_000, seed=11, keys=KEYS)
    flipped = {e for e, k in zip(events["event_id"], events["key"], strict=True) if k in KEYS[::2]}
    labels = labels.with_columns(label=pl.Series([1 - y if e in flipped else y for e, y in
                                                  zip(labels["event_id"], labels["label"], strict=True)]))
    append(lake, "events", events, writer_id="synthetic", position=1)
    append(lake, "labels", labels, writer_id="synthetic", position=1)
    settings = {"model": "linear,tree", "checkpoint_every": 700, "batch_size": 300}
    for run_id, shards, per_key, balance in (("k1", 1, True, False), ("k3", 3, True, False),
                                             ("kb3", 3, True, True), ("g1", 1, False, False), ("g3", 3, False, False)):
        run_main(build_flow(lake=lake, run_id=run_id, shards=shards, per_key=per_key, balance=balance, **settings))
    return lake


def _served(lake: str, run_id: str) -> pl.DataFrame:
    return (read_table(lake, "predictions").filter(pl.col("run_id") == run_id)
            .select("event_id", "key", "model", "score", "prediction", "features").sort("event_id", "model"))


def _learned(lake: str, run_id: str) -> pl.DataFrame:
    return (read_table(lake, "learn_log").filter(pl.col("run_id") == run_id)
            .select("event_id", "model", "label", "score").sort("event_id", "model"))


def test_per_key_runs_predict_and_learn_the_same_at_any_number_of_shards(keyed_lake):
    one, three = _served(keyed_lake, "k1"), _served(keyed_lake, "k3")
    assert one.height == 6_000 and one.equals(three)
    assert _learned(keyed_lake, "k1").equals(_learned(keyed_lake, "k3"))
    # keys placed by their event counts instead of CRC-32: other shards, the same predictions
    assert one.equals(_served(keyed_lake, "kb3")) and _learned(keyed_lake, "k1").equals(_learned(keyed_lake, "kb3"))
    placed = read_table(keyed_lake, "predictions").filter(pl.col("run_id") == "kb3").select("key", "shard").unique()
    assert dict(placed.iter_rows()) == balanced_shards(
        dict(read_table(keyed_lake, "events")["key"].value_counts().iter_rows()), 3)
    # the keys were spread: three shards served them
    shards = read_table(keyed_lake, "predictions").filter(pl.col("run_id") == "k3").select("key", "shard").unique()
    assert shards["shard"].n_unique() == 3 and shards["key"].is_unique().all()
    # whereas one model per shard depends on the sharding
    assert not _served(keyed_lake, "g1")["score"].equals(_served(keyed_lake, "g3")["score"])


def test_per_key_models_learn_each_keys_concept(keyed_lake):
    def accuracy(run_id: str, model: str) -> float:
        m = read_table(keyed_lake, "metrics").filter((pl.col("run_id") == run_id) & (pl.col("model") == model))
        return m["n_correct"].sum() / m["n"].sum()

    # half the keys have the opposite concept: one global linear model cannot fit both
    assert accuracy("k1", "linear") > accuracy("g1", "linear") + 0.15
    ck = read_table(keyed_lake, "checkpoints").filter(pl.col("run_id") == "k1").sort("n_learned")
    final = pickle.loads(ck.filter(pl.col("model") == "linear")["model_bytes"][-1])
    assert isinstance(final, PerKeyModel) and set(final.models) == set(KEYS)
    assert ck["spec"][0].startswith("one model per key: ")


def test_a_per_key_prediction_is_reproduced_from_the_lake(keyed_lake):
    late = _served(keyed_lake, "k3").filter(pl.col("model") == "linear").tail(1)["event_id"][0]
    for r in reproduce(keyed_lake, late, run_id="k3"):
        assert r.learned > 0
        assert r.reproduced_score == pytest.approx(r.stored_score, abs=1e-12), r


def test_a_per_key_checkpoint_serves_from_mlflow_by_key(keyed_lake, mlflow_uri):
    sync_lake(keyed_lake, mlflow_uri, run_id="k1")
    client = client_for(mlflow_uri)
    versions = client.search_model_versions("name = 'riverlake-linear'")
    ck = read_table(keyed_lake, "checkpoints").filter((pl.col("run_id") == "k1") & (pl.col("model") == "linear"))
    final = ck.sort("n_learned").row(-1, named=True)
    mv = next(v for v in versions if v.tags.get("riverlake.checkpoint_id") == final["checkpoint_id"]
              and v.tags.get("riverlake.run_id") == "k1")
    rows = _served(keyed_lake, "k1").filter(pl.col("model") == "linear").tail(16)
    x = [dict(f) | {"key": k} for f, k in zip(rows["features"].to_list(), rows["key"], strict=True)]
    estimator = pickle.loads(final["model_bytes"])
    with using(mlflow_uri):
        model = mlflow.pyfunc.load_model(f"models:/riverlake-linear/{mv.version}")
        served = model.predict(pd.DataFrame(x))["score"]
        with pytest.raises(ValueError, match="give each row a 'key' column"):
            model.predict(pd.DataFrame([dict(f) for f in rows["features"].to_list()]))
    expected = [score_one(estimator, {k: v for k, v in xi.items() if k != "key"}, xi["key"]) for xi in x]
    assert served.tolist() == pytest.approx(expected, rel=1e-12)
    assert len(set(expected)) > 1


def test_per_key_is_set_from_the_environment():
    assert defaults_from_env({"RIVERLAKE_PER_KEY": "true"})["per_key"] is True
    assert defaults_from_env({})["per_key"] is False
    with pytest.raises(ValueError, match="RIVERLAKE_PER_KEY must be a boolean"):
        defaults_from_env({"RIVERLAKE_PER_KEY": "maybe"})


def test_the_command_line_runs_per_key_models(tmp_path, capsys):
    from flows.cli import replay_main as main
    from tests.synthetic import make_lake

    lake = make_lake(str(tmp_path / "lake"), n=400, keys="abcd")
    assert main(["--lake", lake, "--per-key", "--max-key-models", "3", "--shards", "2", "--no-recovery",
                 "--stats-window", "none", "--anomaly", "none"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    ck = read_table(lake, "checkpoints").filter(pl.col("run_id") == run_id).sort("n_learned")
    assert ck["spec"].str.starts_with("one model per key: ").all()
    final = [pickle.loads(b) for b in ck.group_by("shard").agg(pl.col("model_bytes").last())["model_bytes"]]
    assert all(isinstance(m, PerKeyModel) and m.max_keys == 3 and 1 <= m.n_keys <= 3 for m in final)
    assert sum(m.n_keys for m in final) == 4  # two shards, four keys, each key's model on its shard


def test_a_drift_action_retrains_every_keys_model_from_recent_events(tmp_path):
    lake = str(tmp_path / "lake")
    events, labels = synthetic_frames(3_000, seed=5, keys="abcd")
    # the concept flips half-way: the error detector alarms, the action retrains per key
    labels = labels.with_columns(label=pl.when(pl.int_range(pl.len()) >= 1_500).then(1 - pl.col("label"))
                                 .otherwise(pl.col("label")))
    append(lake, "events", events, writer_id="synthetic", position=1)
    append(lake, "labels", labels, writer_id="synthetic", position=1)
    run_main(build_flow(lake=lake, model="linear", run_id="act", per_key=True, drift_action="retrain",
                        action_window=300, checkpoint_every=1_000, batch_size=250))
    actions = read_table(lake, "drift_actions")
    assert actions.height >= 1 and (actions["trained_on"] == 300).all()
    retrained = read_table(lake, "checkpoints").filter(pl.col("checkpoint_id").str.ends_with("-retrain"))
    assert retrained.height == actions.height
    model = pickle.loads(retrained["model_bytes"][0])
    assert isinstance(model, PerKeyModel) and model.n_keys == 4  # 300 recent events touched every key
