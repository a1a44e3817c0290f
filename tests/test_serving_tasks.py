"""The prediction API on a regression and a multiclass lake: the task's answers and labels, and refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from lake.table import read_table
from serving.config import ServeConfig
from serving.engine import Engine
from serving.launch import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
N = 400


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> dict[str, str]:
    """A regression (friedman-drift) and a multiclass (rbf-drift) lake, made by ``python -m lake ingest``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    lakes = {}
    for task, scenario in (("regression", "friedman-drift"), ("multiclass", "rbf-drift")):
        lake = str(tmp_path_factory.mktemp("serving-tasks") / scenario)
        done = subprocess.run([sys.executable, "-m", "lake", "ingest", "--lake", lake, "--scenario", scenario,
                               "--n", str(N)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and f"task {task}" in done.stdout + done.stderr, done.stderr[-2000:]
        lakes[task] = lake
    return lakes


@pytest.fixture
def lake(ingested, request, tmp_path) -> str:
    import shutil

    dest = str(tmp_path / "lake")
    shutil.copytree(ingested[request.param], dest)
    return dest


def requests_of(lake: str, n: int) -> list[tuple[str, dict]]:
    """The lake's first ``n`` events and their labels as API requests (new event ids), in time order."""
    events = read_table(lake, "events").sort("offset").head(n)
    labels = read_table(lake, "labels").join(events.select("event_id"), on="event_id")
    timed = []
    for e in events.iter_rows(named=True):
        payload = {k: v for k, v in e.items() if k not in ("event_id", "event_time", "key", "offset")}
        timed.append((e["event_time"].timestamp(), 0, "predict",
                      {"event_id": "s-" + e["event_id"], "key": e["key"], "event_time": e["event_time"].timestamp(),
                       "payload": payload}))
    for lb in labels.iter_rows(named=True):
        timed.append((lb["label_time"].timestamp(), 1, "labels",
                      {"event_id": "s-" + lb["event_id"], "label": lb["label"],
                       "label_time": lb["label_time"].timestamp()}))
    timed.sort(key=lambda r: (r[0], r[1]))
    return [(kind, body) for _, _, kind, body in timed]


def feed(engine: Engine, reqs) -> dict[str, dict]:
    answers = {}
    for kind, body in reqs:
        status, out = (engine.predict if kind == "predict" else engine.labels)(json.dumps(body).encode())
        assert status == 200, out
        if kind == "predict":
            answers[out["event_id"]] = out
    return answers


def _served(lake: str, server_id: str) -> pl.DataFrame:
    return read_table(lake, "predictions").filter(pl.col("run_id") == server_id)


@pytest.mark.parametrize("lake", ["regression"], indirect=True)
def test_a_regression_lake_answers_values_and_takes_numeric_labels(lake):
    engine = Engine(ServeConfig(lake=lake, checkpoint_every=50))
    try:
        assert engine.config.task == "regression"
        answers = feed(engine, requests_of(lake, 300))
        status, out = engine.labels(json.dumps({"event_id": "s-friedman-drift-00000000", "label": "late"}).encode())
        assert status == 422 and out["detail"][0]["field"] == "label"
        assert "finite number" in out["detail"][0]["reason"]
    finally:
        engine.close()
    values = [a["prediction"] for a in answers.values()]
    assert all(isinstance(v, float) for v in values) and len(set(values)) > 100  # the model learned
    assert all(a["score"] == a["prediction"] and "probabilities" not in a for a in answers.values())
    preds = _served(lake, "serve")
    assert preds.schema["prediction"] == pl.Float64 and preds.height == 300
    stored = dict(zip(preds["event_id"], preds["prediction"], strict=True))
    assert {e: a["prediction"] for e, a in answers.items()} == stored
    labels = read_table(lake, "labels").filter(pl.col("event_id").str.starts_with("s-"))
    assert labels.schema["label"] == pl.Float64 and labels.height > 250
    learned = read_table(lake, "learn_log").filter(pl.col("run_id") == "serve")
    assert learned.height == labels.height


@pytest.mark.parametrize("lake", ["multiclass"], indirect=True)
def test_a_multiclass_lake_answers_classes_with_probabilities_and_takes_class_labels(lake):
    engine = Engine(ServeConfig(lake=lake, checkpoint_every=50))
    try:
        assert engine.config.task == "multiclass"
        answers = feed(engine, requests_of(lake, 300))
        for bad in ("", None, {"class": "c1"}):
            status, out = engine.labels(json.dumps({"event_id": "s-rbf-drift-00000000", "label": bad}).encode())
            assert status == 422 and out["detail"][0]["field"] == "label", (bad, out)
    finally:
        engine.close()
    classes = set(read_table(lake, "labels")["label"])
    late = list(answers.values())[-100:]
    for a in late:
        proba = a["probabilities"]
        assert set(proba) <= classes and len(proba) >= 2 and abs(sum(proba.values()) - 1) < 1e-6
        assert proba[a["prediction"]] == max(proba.values())  # the most probable class
        assert a["score"] == proba[a["prediction"]]
    preds = _served(lake, "serve")
    assert preds.schema["prediction"] == pl.String
    stored = {r["event_id"]: (r["prediction"], dict(r["probabilities"] or {})) for r in preds.iter_rows(named=True)}
    assert {e: (a["prediction"], a.get("probabilities", {})) for e, a in answers.items()} == stored
    labels = read_table(lake, "labels").filter(pl.col("event_id").str.starts_with("s-"))
    assert labels.schema["label"] == pl.String and set(labels["label"]) <= classes


@pytest.mark.parametrize("lake", ["multiclass"], indirect=True)
def test_a_given_task_other_than_the_lakes_is_refused(lake):
    with pytest.raises(ValueError, match="task 'regression' is not the lake's: .* holds a multiclass task"):
        ServeConfig(lake=lake, task="regression")


@pytest.mark.parametrize("lake", ["multiclass"], indirect=True)
def test_uvicorn_server_on_a_multiclass_lake(lake, subprocess_env):
    server = ServerProcess(lake, args=["--flush-seconds", "0.2", "--checkpoint-every", "20"],
                           env=subprocess_env).wait_ready()
    try:
        client = server.client()
        served = {}
        for kind, body in requests_of(lake, 120):
            status, out = client.post("/" + kind, body)
            assert status == 200, out
            if kind == "predict":
                served[out["event_id"]] = out
        status, out = client.post("/labels", {"event_id": "s-rbf-drift-00000000", "label": ""})
        assert status == 422 and out["detail"][0]["field"] == "label"
        last = list(served.values())[-1]
        assert isinstance(last["prediction"], str) and last["score"] == last["probabilities"][last["prediction"]]
        client.close()
    finally:
        assert server.stop() in (0, -15)
    preds = _served(lake, "serve")
    assert preds.height == 120 and preds.schema["prediction"] == pl.String
