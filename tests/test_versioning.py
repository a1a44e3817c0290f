"""Checkpoints in the lake become MLflow model versions: complete, once each, and nothing lost when MLflow is down."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from bytewax.testing import run_main
from deltalake import DeltaTable, write_deltalake
from mlflow.entities import RunStatus, ViewType

from dataflows.models import score_one
from dataflows.online import build_flow
from flows.registry import (
    CHECKPOINT_TAG,
    KIND_TAG,
    artifact_location,
    client_for,
    ensure_experiment,
    tracking_uri_for,
    using,
)
from flows.versioning import main as versioning_main
from flows.versioning import sync_lake, version_checkpoints
from lake.reproduce import ChecksumError
from lake.table import read_table, table_uri, table_version
from tests.synthetic import make_lake

MODELS = ("linear", "tree")


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> str:
    """3,000 synthetic events through linear + tree: checkpoints at 0, 1500, 3000 learns; 5-minute windows."""
    lake = str(tmp_path_factory.mktemp("versioning") / "lake")
    make_lake(lake, n=3_000, seed=7)
    run_main(build_flow(lake=lake, model="linear,tree", run_id="r1", checkpoint_every=1_500, window="5m",
                        grace="1m", batch_size=500))
    return lake


@pytest.fixture
def lake(replayed: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private copy of the replayed lake; MLflow settings from the environment cleared."""
    dest = str(tmp_path / "lake")
    shutil.copytree(replayed, dest)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the flow's retries decide, not the client's
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    return dest


@pytest.fixture(scope="module")
def _empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its tables made (migrations take seconds), and nothing in it."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    client_for(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(_empty_store: Path, mlflow_uri: str) -> str:
    """A fresh, real MLflow SQLite store on a tmp path (a copy of the empty template)."""
    shutil.copyfile(_empty_store, mlflow_uri[len("sqlite:///"):])
    return mlflow_uri


def _versions(client, name: str) -> dict[str, str]:
    """``{checkpoint tag: version}`` of every version of ``name``, failing on duplicates."""
    found: dict[str, str] = {}
    for mv in client.search_model_versions(f"name = '{name}'"):
        key = mv.tags[CHECKPOINT_TAG]
        assert key not in found, f"{key} registered twice"
        found[key] = str(mv.version)
    return found


def _all_registered(client) -> dict[str, str]:
    return {k: v for m in MODELS for k, v in _versions(client, f"riverlake-{m}").items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_checkpoint_is_registered_once_with_its_lake_lineage(lake, store):
    ckpts = read_table(lake, "checkpoints")
    assert ckpts.height == 6
    report = sync_lake(lake, store)
    # the checkpoints taken before a model learned anything are no versions (they serve the prior)
    assert len(report["registered"]) == 4 and report["already_synced"] == 0 and report["untrained"] == 2
    client = client_for(store)
    registered = _all_registered(client)
    assert set(registered) == {f"r1/{c}" for c in ckpts.filter(pl.col("n_learned") > 0)["checkpoint_id"]}
    # versions of one model follow its learning
    assert [registered[f"r1/linear:s0:{n}"] for n in (1500, 3000)] == ["1", "2"]

    final = ckpts.filter(pl.col("checkpoint_id") == "linear:s0:3000").row(0, named=True)
    mv = client.get_model_version("riverlake-linear", registered["r1/linear:s0:3000"])
    learns = read_table(lake, "learn_log").filter(pl.col("model") == "linear").sort("learn_order")
    # a handful of tags on the version: what finds it and what vouches for it
    assert {k: mv.tags.get(k) for k in ("riverlake.run_id", "riverlake.checkpoint_id", "riverlake.n_learned",
                                        "riverlake.sha256", "riverlake.lake")} == {
        "riverlake.run_id": "r1", "riverlake.checkpoint_id": "linear:s0:3000", "riverlake.n_learned": "3000",
        "riverlake.sha256": final["sha256"], "riverlake.lake": os.path.abspath(lake)}
    assert len([k for k in mv.tags if k.startswith("riverlake.")]) <= 9
    # the lineage: run params and lineage.json
    lineage = {
        "first_event_id": learns["event_id"][0], "last_event_id": learns["event_id"][-1],
        "last_event_time": learns["event_time"][-1].isoformat(),
        "events_version_at_checkpoint": "0", "labels_version_at_checkpoint": "0",
        "events_version_at_sync": str(table_version(lake, "events")),
    }
    params = client.get_run(mv.run_id).data.params
    assert {k: params.get(k) for k in lineage} == lineage
    assert {k: mlflow.artifacts.load_dict(f"{client.get_run(mv.run_id).info.artifact_uri}/lineage.json").get(k)
            for k in lineage} == lineage

    # the run: a child of the lake run's parent, prequential metrics as steps up to the checkpoint
    run = client.get_run(mv.run_id)
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.info.run_name == "r1"
    # the parent run sums the lake run up: each model's prequential figures, side by side
    last = read_table(lake, "metrics").filter(pl.col("model") == "linear").sort("cum_n")[-1]
    assert parent.data.metrics["linear.cum_n"] == last["cum_n"][0]
    assert parent.data.metrics["linear.cum_accuracy"] == pytest.approx(last["cum_accuracy"][0])
    assert {"tree.cum_accuracy", "tree.cum_log_loss"} <= set(parent.data.metrics)
    history = client.get_metric_history(mv.run_id, "cum_log_loss")
    windows = read_table(lake, "metrics").filter((pl.col("model") == "linear") & (pl.col("seq") <= final["seq"]))
    assert len(history) == windows.height >= 5
    assert [m.step for m in history] == sorted(windows["cum_n"].to_list())
    assert history[-1].value == windows.sort("cum_n")["cum_log_loss"][-1]
    early = client.get_model_version("riverlake-linear", registered["r1/linear:s0:1500"])
    assert len(client.get_metric_history(early.run_id, "cum_log_loss")) < len(history)

    # the registered model serves what the checkpoint computes
    x = read_table(lake, "predictions").filter(pl.col("model") == "linear").tail(20)["features"].to_list()
    with using(store):
        served = mlflow.pyfunc.load_model(f"models:/riverlake-linear/{mv.version}").predict(pd.DataFrame(x))["score"]
    estimator = pickle.loads(final["model_bytes"])
    assert served.tolist() == pytest.approx([score_one(estimator, xi) for xi in x], rel=1e-12)

    # a second sync finds everything and registers nothing
    runs_before = len(client.search_runs([run.info.experiment_id], max_results=1000))
    again = sync_lake(lake, store)
    assert again == {"registered": [], "already_synced": 4, "untrained": 2}
    assert _all_registered(client) == registered
    assert len(client.search_runs([run.info.experiment_id], max_results=1000)) == runs_before


def test_leftovers_of_a_crash_are_replaced_and_tampered_bytes_refused(lake, store, tmp_path):
    client = client_for(store)
    exp = ensure_experiment(client, "riverlake", store)
    # MLflow went away an hour ago after the run of linear:s0:1500 was created, before its version was registered
    orphan = client.create_run(exp, start_time=int((time.time() - 3_600) * 1000),
                               tags={CHECKPOINT_TAG: "r1/linear:s0:1500", KIND_TAG: "checkpoint"})
    # and someone rewrote the bytes of tree:s0:1500
    uri = table_uri(lake, "checkpoints")
    table = DeltaTable(uri).to_pyarrow_table()
    field = table.schema.field("model_bytes")
    tampered = pc.if_else(pc.equal(table["checkpoint_id"], "tree:s0:1500"), pa.scalar(b"\x80\x04N.", field.type),
                          table["model_bytes"])
    write_deltalake(uri, table.set_column(table.schema.get_field_index("model_bytes"), field, tampered),
                    mode="overwrite")

    with pytest.raises(ChecksumError, match=r"1 checkpoint\(s\) refused, 3 registered; refused: r1/tree:s0:1500"):
        sync_lake(lake, store)
    registered = _all_registered(client)
    assert len(registered) == 3 and "r1/tree:s0:1500" not in registered
    assert client.get_run(orphan.info.run_id).info.lifecycle_stage == "deleted"
    live = client.search_runs([exp], f"tags.`{CHECKPOINT_TAG}` = 'r1/linear:s0:1500'")
    assert len(live) == 1 and live[0].info.status == RunStatus.to_string(RunStatus.FINISHED)
    # nothing of the tampered checkpoint reached MLflow
    assert not client.search_runs([exp], f"tags.`{CHECKPOINT_TAG}` = 'r1/tree:s0:1500'", ViewType.ALL)

    # bytes changed in the artifact store are refused too, when the model loads
    mv = client.get_model_version("riverlake-linear", registered["r1/linear:s0:1500"])
    location = client.get_logged_model(mv.source.removeprefix("models:/")).artifact_location
    artifact = Path(location.removeprefix("file://")) / "artifacts" / "model.pkl"
    artifact.write_bytes(pickle.dumps(_Trap(tmp_path / "unpickled")))
    with using(store), pytest.raises(Exception, match="model bytes have sha256 .* the model was logged with"):
        mlflow.pyfunc.load_model(f"models:/riverlake-linear/{mv.version}")
    assert not (tmp_path / "unpickled").exists()


class _Trap:
    """Unpickling this creates a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_flow_fails_cleanly_while_mlflow_is_down_and_the_next_run_catches_up(lake, prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    lake_before = {t: table_version(lake, t) for t in ("checkpoints", "predictions", "learn_log")}
    dead = f"http://127.0.0.1:{_free_port()}"
    state = version_checkpoints(lake, tracking_uri=dead, retries=2, retry_delay_s=0.1, return_state=True)
    assert state.is_failed()
    with get_client(sync_client=True) as prefect:
        task_runs = prefect.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert [(t.name.rsplit("-", 1)[0], t.run_count) for t in task_runs] == [("plan-versioning", 3)]  # 1 + 2 retries
    assert {t: table_version(lake, t) for t in lake_before} == lake_before  # the lake is untouched
    assert not (Path(lake) / "mlflow.db").exists()

    # MLflow is back (here: the default store in the lake); the next run registers everything
    report = version_checkpoints(lake, retries=2, retry_delay_s=0.1)
    assert report["tracking_uri"] == f"sqlite:///{os.path.abspath(lake)}/mlflow.db"
    assert len(report["registered"]) == 4
    assert any((Path(lake) / "mlartifacts").rglob("model.pkl"))
    assert len(_all_registered(client_for(report["tracking_uri"]))) == 4
    assert version_checkpoints(lake)["registered"] == []


def test_tracking_store_defaults_to_the_lake_and_the_environment_overrides(lake, monkeypatch):
    default = f"sqlite:///{os.path.abspath(lake)}/mlflow.db"
    assert tracking_uri_for(lake) == default
    assert artifact_location(default) == os.path.join(os.path.abspath(lake), "mlartifacts")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri_for(lake) == "http://127.0.0.1:5999"
    assert tracking_uri_for(lake, "sqlite:////x/y.db") == "sqlite:////x/y.db"
    assert artifact_location("http://127.0.0.1:5999") is None


def test_command_line_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        versioning_main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "python -m flows.versioning" in out and "--lake" in out and "--tracking-uri" in out and "--retries" in out


# ----------------------------------------------------------------------------------- a real MLflow server


def _start_server(port: int, root: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "art")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
        assert proc.poll() is None, "mlflow server exited"
    _stop_server(proc)
    raise AssertionError("mlflow server not healthy after 90 s")


def _stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group (gunicorn/uvicorn workers)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def mlflow_server(tmp_path: Path):
    port = _free_port()
    root = tmp_path / "server"
    root.mkdir()
    procs = [_start_server(port, root)]

    class Server:
        uri = f"http://127.0.0.1:{port}"

        def stop(self) -> None:
            _stop_server(procs[-1])

        def start(self) -> None:
            procs.append(_start_server(port, root))

    yield Server()
    for proc in procs:
        _stop_server(proc)


@pytest.mark.slow
def test_against_a_real_mlflow_server_that_goes_down_mid_way(lake, mlflow_server, prefect_harness, subprocess_env):
    report = version_checkpoints(lake, tracking_uri=mlflow_server.uri, run_id="r1", retries=1, retry_delay_s=0.1)
    assert len(report["registered"]) == 4

    # the model loads from the server where riverlake is not importable, and predicts P(y=1)
    final = read_table(lake, "checkpoints").filter(pl.col("checkpoint_id") == "tree:s0:3000").row(0, named=True)
    x = read_table(lake, "predictions").filter(pl.col("model") == "tree").tail(5)["features"].to_list()
    version = next(r["version"] for r in report["registered"] if r["checkpoint"] == "r1/tree:s0:3000")
    script = (
        "import sys, json; sys.path = [p for p in sys.path if p.rstrip('/') != sys.argv[1]]\n"
        "try:\n    import dataflows; raise SystemExit('riverlake is importable')\nexcept ImportError: pass\n"
        "import mlflow, pandas as pd; mlflow.set_tracking_uri(sys.argv[2])\n"
        "m = mlflow.pyfunc.load_model(sys.argv[3])\n"
        "print(json.dumps(m.predict(pd.DataFrame(json.loads(sys.argv[4])))['score'].tolist()))\n")
    root = str(Path(__file__).resolve().parent.parent)
    env = {k: v for k, v in subprocess_env.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script, root, mlflow_server.uri, f"models:/riverlake-tree/{version}",
                           json.dumps(x)], env=env, capture_output=True, text=True, timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    estimator = pickle.loads(final["model_bytes"])
    assert served == pytest.approx([score_one(estimator, xi) for xi in x], rel=1e-12)

    # a second lake run lands while the server is down: the flow fails, nothing is lost
    run_main(build_flow(lake=lake, model="linear", run_id="r2", checkpoint_every=1_500, batch_size=500))
    mlflow_server.stop()
    state = version_checkpoints(lake, tracking_uri=mlflow_server.uri, retries=1, retry_delay_s=0.1,
                                return_state=True)
    assert state.is_failed()
    mlflow_server.start()
    again = version_checkpoints(lake, tracking_uri=mlflow_server.uri, retries=1, retry_delay_s=0.1)
    assert sorted(r["checkpoint"] for r in again["registered"]) == ["r2/linear:s0:1500", "r2/linear:s0:3000"]
    assert again["already_synced"] == 4
    assert len(_versions(client_for(mlflow_server.uri), "riverlake-linear")) == 4



_SYNC_AT = """
import json, sys, time
from flows.versioning import plan_sync, sync_checkpoint
lake, store, at = sys.argv[1], sys.argv[2], float(sys.argv[3])
item = plan_sync(lake, store).pending[0]
time.sleep(max(0.0, at - time.time()))
print(json.dumps(sync_checkpoint(lake, item, tracking_uri=store)))
"""


@pytest.mark.slow
def test_two_syncs_whose_schedules_meet_register_a_checkpoint_once(lake, store, subprocess_env):
    # Versioning and promotion (or two versioning runs) syncing one checkpoint at the same moment:
    # before, both found it unregistered and both created a model version.
    at = str(time.time() + 25)  # both processes have imported MLflow and planned by then
    procs = [subprocess.Popen([sys.executable, "-c", _SYNC_AT, lake, store, at], env=subprocess_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-6000:] for _, e in outs]
    results = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    name = results[0]["registered_model"]
    registered = _versions(client_for(store), name)  # fails on a checkpoint registered twice
    assert registered == {results[0]["checkpoint"]: results[0]["version"]}
    assert results[1]["version"] == results[0]["version"], "both report the one version kept"


def test_versioning_keeps_mlflow_notices_that_say_nothing_out_of_the_output(lake, store):
    """A demo versions dozens of checkpoints: MLflow's CloudPickle, pip-version and input-example notices, three
    per version, are noise (the model checks its input itself); its errors would still show."""
    import logging

    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(f"{record.name}: {record.getMessage()}")

    handler = Catch(level=logging.INFO)
    loggers = [logging.getLogger(n) for n in ("mlflow.pyfunc", "mlflow.utils.environment")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        report = sync_lake(lake, store)
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    assert report["registered"]
    assert not [m for m in seen if "CloudPickle" in m or "pip version" in m or "input example" in m], seen[:3]
