"""A versioned model of a regression or multiclass lake serves its task's answer, as the dataflow wrote it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from bytewax.testing import run_main

from dataflows.online import build_flow
from flows.registry import client_for, load_verified
from flows.versioning import sync_lake
from lake.table import read_table

ROOT = Path(__file__).resolve().parents[1]


def _ingest(lake: str, scenario: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "lake", "ingest", "--lake", lake, "--scenario", scenario,
                           "--n", "1500"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module", params=["friedman-drift", "rbf-drift"])
def replayed(request, tmp_path_factory) -> str:
    lake = str(tmp_path_factory.mktemp("served-tasks") / request.param)
    _ingest(lake, request.param)
    run_main(build_flow(lake=lake, run_id="r1", checkpoint_every=400, window="5m", grace="1m", batch_size=300))
    return lake


def _after_checkpoints(lake: str) -> pl.DataFrame:
    """Per trained checkpoint, the prediction of the event right after it."""
    ck = read_table(lake, "checkpoints").filter(pl.col("n_learned") > 0).select(
        "run_id", "model", "checkpoint_id", (pl.col("seq") + 1).alias("seq"))
    return ck.join(read_table(lake, "predictions"), on=["run_id", "model", "seq"]).sort("seq")


def test_a_versioned_model_answers_its_task_as_the_dataflow_did(replayed, mlflow_uri, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    task = "regression" if replayed.endswith("friedman-drift") else "multiclass"
    report = sync_lake(replayed, mlflow_uri)
    versions = {r["checkpoint"]: (r["registered_model"], r["version"]) for r in report["registered"]}
    after = _after_checkpoints(replayed)
    assert after.height >= 2
    events = read_table(replayed, "events")
    client = client_for(mlflow_uri)
    for p in after.iter_rows(named=True):
        name, version = versions[f"{p['run_id']}/{p['checkpoint_id']}"]
        model = load_verified(client, name, version=version)
        raw = events.filter(pl.col("event_id") == p["event_id"]).drop("offset").to_pandas()
        served = model.predict(raw).to_dict("records")
        assert len(served) == 1
        if task == "regression":
            assert isinstance(served[0]["prediction"], float)
            assert served[0] == {"score": p["score"], "prediction": p["prediction"]}, p
        else:
            probabilities = dict(p["probabilities"])
            assert len(probabilities) >= 2 and isinstance(served[0]["prediction"], str)
            assert served[0] == {"score": p["score"], "prediction": p["prediction"],
                                 "probabilities": probabilities}, p
        # the features the dataflow stored serve the same answer
        again = model.predict([dict(p["features"])]).to_dict("records")
        assert again == served


def test_the_task_answer_is_logged_with_the_model(replayed, mlflow_uri, subprocess_env, tmp_path):
    """Where riverlake is not importable the model answers its task with the rule logged beside it."""
    p = _after_checkpoints(replayed).row(-1, named=True)
    done = sync_lake(replayed, mlflow_uri, run_id="r1", checkpoint_ids=[p["checkpoint_id"]])["registered"][0]
    code = ("import sys, json, mlflow\n"
            "sys.modules['lake'] = None  # riverlake not installed\n"
            f"model = mlflow.pyfunc.load_model('models:/{done['registered_model']}/{done['version']}')\n"
            f"print(json.dumps(model.predict([{dict(p['features'])!r}]).to_dict('records')))\n")
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env | {"MLFLOW_TRACKING_URI": mlflow_uri},
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    served = json.loads(out.stdout.strip().splitlines()[-1])[0]
    assert served["prediction"] == p["prediction"] and served["score"] == p["score"]
    assert served.get("probabilities") == (None if p.get("probabilities") is None else dict(p["probabilities"]))
