"""A versioned model serves raw events: it featurizes them with the featurizer state of its checkpoint."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from bytewax.testing import run_main
from deltalake import DeltaTable, write_deltalake

from dataflows.online import build_flow
from flows.registry import client_for, load_verified, using
from flows.versioning import sync_lake
from lake import integrity
from lake.reproduce import ChecksumError, load_checkpoint
from lake.table import read_table, table_uri
from tests.synthetic import make_lake

RUNS = {"r1": {"model": "linear,tree"},  # the item-by-item path
        "r2": {"model": "linear-hash", "anomaly": None, "hash_fields": "colour"}}  # the columnar step


class _Trap:
    """Unpickling this creates a file: proof that forged bytes were (or were not) unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> str:
    """3,000 synthetic events through two runs, a checkpoint every 700 learns (inside source batches)."""
    lake = str(tmp_path_factory.mktemp("served") / "lake")
    make_lake(lake, n=3_000, seed=7)
    for run_id, settings in RUNS.items():
        run_main(build_flow(lake=lake, **settings, run_id=run_id, checkpoint_every=700, window="5m",
                            grace="1m", batch_size=500))
    return lake


@pytest.fixture
def lake(replayed: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    dest = str(tmp_path / "lake")
    shutil.copytree(replayed, dest)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return dest


def _raw(lake: str, event_ids: list[str]) -> pd.DataFrame:
    """The lake's events as a user has them: key, event_time, payload (and event_id)."""
    return (read_table(lake, "events").filter(pl.col("event_id").is_in(event_ids)).sort("offset")
            .drop("offset").to_pandas())


def _model_dir(client, mv) -> Path:
    """The folder of a model version's logged model in the artifact store."""
    return Path(client.get_logged_model(mv.source.removeprefix("models:/")).artifact_location.removeprefix("file://"))


def _next_events(lake: str) -> pl.DataFrame:
    """Per trained checkpoint, the prediction of the event right after it (none where a label came next)."""
    ck = read_table(lake, "checkpoints").filter(pl.col("n_learned") > 0).select(
        "run_id", "model", "checkpoint_id", (pl.col("seq") + 1).alias("seq"))
    return ck.join(read_table(lake, "predictions"), on=["run_id", "model", "seq"]).sort("run_id", "seq", "model")


def test_a_versioned_model_scores_raw_events_as_the_dataflow_did(lake, mlflow_uri):
    report = sync_lake(lake, mlflow_uri)
    versions = {r["checkpoint"]: (r["registered_model"], r["version"]) for r in report["registered"]}
    after = _next_events(lake)
    # both paths wrote checkpoints with an event right after them (the columnar one inside a batch)
    assert set(after["run_id"]) == {"r1", "r2"} and set(after["model"]) == {"linear", "tree", "linear-hash"}
    client = client_for(mlflow_uri)
    for p in after.iter_rows(named=True):
        name, version = versions[f"{p['run_id']}/{p['checkpoint_id']}"]
        assert p["model_version"] == p["checkpoint_id"]
        model = load_verified(client, name, version=version)
        raw = _raw(lake, [p["event_id"]])
        served = model.predict(raw)
        assert served.to_dict("records") == [{"score": p["score"], "prediction": p["prediction"]}], p
        # the payload columns plus key and event_time (a tz-aware time, or naive UTC) serve the same
        payload = raw.drop(columns=["event_id"]).assign(event_time=raw["event_time"].dt.tz_localize(None))
        assert model.predict(payload)["score"].tolist() == [p["score"]]
        # and the features the dataflow stored (the form served until now)
        assert model.predict(pd.DataFrame([dict(p["features"])]))["score"].tolist() == [p["score"]]

    # serving reads the checkpoint's state and changes none of it: a batch of one key's later events
    # scores each as if it came right after the checkpoint, and again the same
    name, version = versions["r2/linear-hash:s0:1400"]
    with using(mlflow_uri):
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    key = _raw(lake, [after.filter(pl.col("checkpoint_id") == "linear-hash:s0:1400")["event_id"][0]])["key"][0]
    later = read_table(lake, "events").filter(pl.col("key") == key).tail(5).drop("offset").to_pandas()
    once = model.predict(later)
    assert model.predict(later).equals(once)
    assert [model.predict(later.iloc[[i]])["score"][0] for i in range(5)] == once["score"].tolist()


def test_every_version_shows_a_raw_event_signature_and_input_example(lake, mlflow_uri, subprocess_env):
    done = sync_lake(lake, mlflow_uri, run_id="r1", checkpoint_ids=["linear:s0:1400"])["registered"]
    client = client_for(mlflow_uri)
    mv = client.get_model_version("riverlake-linear", done[0]["version"])
    with using(mlflow_uri):
        info = mlflow.models.get_model_info(mv.source)
    inputs = info.signature.inputs.to_dict()
    assert [(c["name"], c["type"], c["required"]) for c in inputs] == [
        ("key", "string", True), ("event_time", "datetime", True), ("event_id", "string", False),
        ("x1", "double", False), ("x2", "double", False), ("colour", "string", False)]
    logged = _model_dir(client, mv)
    example = json.loads((logged / "serving_input_example.json").read_text())["inputs"]
    learned = read_table(lake, "checkpoints").filter(pl.col("checkpoint_id") == "linear:s0:1400")["last_event_id"][0]
    assert example[0]["event_id"] == learned and set(example[0]) == {c["name"] for c in inputs}

    # `mlflow models predict` on the example, as the MLflow UI shows it to a user
    env = subprocess_env | {"MLFLOW_TRACKING_URI": mlflow_uri}
    out = subprocess.run([sys.executable, "-m", "mlflow", "models", "predict", "-m", mv.source, "-t", "json",
                          "-i", str(logged / "serving_input_example.json"), "--env-manager", "local"],
                         env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    predictions = json.loads(out[out.index("{"):])["predictions"]
    with using(mlflow_uri):
        local = mlflow.pyfunc.load_model(mv.source).predict(pd.DataFrame(example))
    assert predictions == local.to_dict("records")
    assert set(predictions[0]) == {"score", "prediction"}


def _rewrite_checkpoints(lake: str, change) -> None:
    uri = table_uri(lake, "checkpoints")
    table = change(DeltaTable(uri).to_pyarrow_table())
    write_deltalake(uri, table, mode="overwrite", schema_mode="overwrite")


def test_a_checkpoint_from_before_featurizer_state_was_kept_still_serves_features(lake, mlflow_uri):
    def old_style(table: pa.Table) -> pa.Table:
        # as riverlake wrote them before: no featurizer_bytes column, the HMAC over the model bytes alone
        rows = table.drop_columns(["featurizer_bytes"]).to_pylist()
        for r in rows:
            r["hmac"] = integrity.sign(r["model_bytes"],
                                       purpose=integrity.checkpoint_purpose(r["run_id"], r["checkpoint_id"]))
        return pa.Table.from_pylist(rows, schema=table.schema.remove(table.schema.get_field_index("featurizer_bytes")))

    _rewrite_checkpoints(lake, old_style)
    row = read_table(lake, "checkpoints").filter(pl.col("checkpoint_id") == "linear:s0:1400").row(0, named=True)
    assert "featurizer_bytes" not in row
    load_checkpoint(row)  # verifies
    done = sync_lake(lake, mlflow_uri, run_id="r1", checkpoint_ids=["linear:s0:1400"])["registered"]
    model = load_verified(client_for(mlflow_uri), "riverlake-linear", version=done[0]["version"])
    p = _next_events(lake).filter(pl.col("checkpoint_id") == "linear:s0:1400").row(0, named=True)
    assert model.predict(pd.DataFrame([dict(p["features"])]))["score"].tolist() == [p["score"]]
    with pytest.raises(ValueError, match="^checkpoint 'r1/linear:s0:1400' was written before checkpoints kept "
                                         "their featurizer state: give this model feature columns"):
        model.predict(_raw(lake, [p["event_id"]]))


def test_forged_featurizer_state_is_never_unpickled(lake, mlflow_uri, tmp_path):
    marker = tmp_path / "pwned"
    forged = pickle.dumps(_Trap(marker))

    def forge(table: pa.Table) -> pa.Table:
        rows = table.to_pylist()
        for r in rows:
            if r["checkpoint_id"] == "linear:s0:1400":
                r["featurizer_bytes"] = forged  # model bytes, sha256 and HMAC untouched
            if r["checkpoint_id"] == "tree:s0:1400":
                r["featurizer_bytes"] = None  # the state dropped: the HMAC covered it
        return pa.Table.from_pylist(rows, schema=table.schema)

    _rewrite_checkpoints(lake, forge)
    with pytest.raises(ChecksumError, match=r"2 checkpoint\(s\) refused, .*r1/linear:s0:1400: checkpoint "
                                            r"'linear:s0:1400' of run 'r1' \(table 'checkpoints'\): HMAC does not match"
                       ) as refused:
        sync_lake(lake, mlflow_uri, run_id="r1")
    assert "r1/tree:s0:1400: checkpoint 'tree:s0:1400' of run 'r1' (table 'checkpoints'): HMAC does not match" in str(
        refused.value)
    assert not marker.exists()

    # the featurizer state of a logged model, changed in the artifact store: refused when the model loads
    client = client_for(mlflow_uri)
    mv = client.search_model_versions("name = 'riverlake-linear'")[0]
    logged = _model_dir(client, mv) / "artifacts" / "featurizer.pkl"
    assert logged.exists()
    logged.write_bytes(forged)
    with using(mlflow_uri), pytest.raises(Exception, match="HMAC does not match"):
        mlflow.pyfunc.load_model(mv.source)
    assert not marker.exists()


def test_the_readme_example_predicts_raw_events(lake, mlflow_uri, subprocess_env):
    """The MLflow section's raw-event prediction, in a process of its own."""
    sync_lake(lake, mlflow_uri, run_id="r1", checkpoint_ids=["linear:s0:2100"])
    code = ("import mlflow, pandas as pd\n"
            "model = mlflow.pyfunc.load_model('models:/riverlake-linear/1')\n"
            "print(model.predict(pd.DataFrame([{'key': 'a', 'event_time': '2026-01-01T01:00:00Z', 'x1': 0.9, "
            "'x2': 0.1, 'colour': 'red'}])).to_json(orient='records'))\n")
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env | {"MLFLOW_TRACKING_URI": mlflow_uri},
                         capture_output=True, text=True, timeout=120, check=True, cwd=os.path.dirname(lake)).stdout
    served = json.loads(out.strip().splitlines()[-1])
    assert served[0]["prediction"] == 1 and served[0]["score"] > 0.5
