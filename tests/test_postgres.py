"""MLflow and Prefect on a real PostgreSQL server, started here on 127.0.0.1 with a free port.

The binaries are the system's PostgreSQL (Debian's ``postgresql-15`` and
``postgresql-contrib``; Prefect needs the contrib extension ``pg_trgm``), else
the ones in the ``pgserver`` wheel (a dev dependency; no contrib, so the Prefect
test fails there), or ``$RIVERLAKE_PG_BIN``. When the server cannot start the
tests fail with its log; they never skip.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from bytewax.testing import run_main

from dataflows.bench.scaling import free_ports
from dataflows.models import score_one
from dataflows.online import build_flow
from flows.registry import ARTIFACTS_ENV, CHECKPOINT_TAG, artifact_location, client_for, using
from flows.versioning import sync_lake
from lake.table import read_table
from tests.synthetic import make_lake

ROOT = Path(__file__).resolve().parent.parent


def _pg_bin() -> Path:
    """PostgreSQL binaries: ``$RIVERLAKE_PG_BIN``, else the system's newest (Debian: with contrib), else pgserver's."""
    if os.environ.get("RIVERLAKE_PG_BIN"):
        return Path(os.environ["RIVERLAKE_PG_BIN"])
    system = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if system:
        return system[-1].parent
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("no PostgreSQL binaries: install postgresql-15 (Debian) or run `make install` (pgserver)")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _free_port() -> int:
    return free_ports(1)[0]


def _stop(proc: subprocess.Popen) -> None:
    """Stop a server started in its own session: SIGTERM to its process group, SIGKILL after 20 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_http(url: str, proc: subprocess.Popen, log: Path, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{what} did not answer on {url}: {log.read_text()[-3000:]}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1:<free port>; yields ``postgres@127.0.0.1:PORT`` (trust auth, local only).

    PostgreSQL refuses to run as root, so under root (CI, containers) it runs as ``nobody``
    in a folder that user owns.
    """
    import psycopg2

    pg_bin = _pg_bin()
    base = Path(tempfile.mkdtemp(prefix="riverlake-pg-"))
    user = None
    if os.geteuid() == 0:
        user = "nobody"
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    data, log = base / "data", base / "postgres.log"
    init = subprocess.run([str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                           "--encoding=UTF8", "--no-sync"], user=user, capture_output=True, text=True)
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed ({init.returncode}): {init.stdout}{init.stderr}")
    port = _free_port()
    with open(log, "wb") as out:
        if user:
            os.chown(log, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        proc = subprocess.Popen([str(pg_bin / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                                 "-k", str(base), "-c", "fsync=off", "-c", "max_connections=200"],
                                user=user, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres").close()
            break
        except psycopg2.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"PostgreSQL did not start on 127.0.0.1:{port}: {log.read_text()[-3000:]}") \
                    from None
            time.sleep(0.1)
    try:
        yield f"postgres@127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)  # fast shutdown: disconnects clients
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def _create_database(server: str, name: str, *, template: str | None = None) -> None:
    import psycopg2

    host, port = server.split("@")[1].split(":")
    conn = psycopg2.connect(host=host, port=int(port), user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    conn.close()


def _query(server: str, database: str, sql: str) -> list[tuple]:
    import psycopg2

    host, port = server.split("@")[1].split(":")
    conn = psycopg2.connect(host=host, port=int(port), user="postgres", dbname=database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def mlflow_template(postgres: str) -> str:
    """A database with MLflow's schema made (its migrations take seconds), to copy per test; yields its name.

    Made in a subprocess, so that no connection to it stays open: PostgreSQL copies
    a template only while nobody is connected to it.
    """
    _create_database(postgres, "mlflow_template")
    code = ("import sys; from mlflow.tracking import MlflowClient; "
            "MlflowClient(sys.argv[1], registry_uri=sys.argv[1]).search_experiments()")
    done = subprocess.run([sys.executable, "-c", code, f"postgresql+psycopg2://{postgres}/mlflow_template"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return "mlflow_template"


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> str:
    """1,200 synthetic events through linear + tree, checkpoints at 0, 600 and 1,200 learns: 6 checkpoints."""
    lake = str(tmp_path_factory.mktemp("pg-lake") / "lake")
    make_lake(lake, n=1_200, seed=7)
    run_main(build_flow(lake=lake, model="linear,tree", run_id="r1", checkpoint_every=600, window="5m",
                        grace="1m", batch_size=300))
    assert read_table(lake, "checkpoints").height == 6
    return lake


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MLflow settings from the environment cleared; the working directory is an empty tmp folder."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", ARTIFACTS_ENV):
        monkeypatch.delenv(key, raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def _assert_registered_and_served(client, store: str, lake: str) -> None:
    """Every checkpoint once per model version; the latest linear version serves the checkpoint's scores."""
    ckpts = read_table(lake, "checkpoints")
    tags = {}
    for model in ("linear", "tree"):
        for mv in client.search_model_versions(f"name = 'riverlake-{model}'"):
            assert mv.tags[CHECKPOINT_TAG] not in tags, "registered twice"
            tags[mv.tags[CHECKPOINT_TAG]] = mv.version
    # every trained checkpoint (one that learned nothing is no version)
    assert set(tags) == {f"r1/{c}" for c in ckpts.filter(pl.col("n_learned") > 0)["checkpoint_id"]}
    final = ckpts.filter(pl.col("checkpoint_id") == "linear:s0:1200").row(0, named=True)
    x = read_table(lake, "predictions").filter(pl.col("model") == "linear").tail(10)["features"].to_list()
    with using(store):
        served = mlflow_load(f"models:/riverlake-linear/{tags['r1/linear:s0:1200']}").predict(pd.DataFrame(x))["score"]
    estimator = pickle.loads(final["model_bytes"])
    assert served.tolist() == pytest.approx([score_one(estimator, xi) for xi in x], rel=1e-12)


def mlflow_load(uri: str):
    import mlflow

    return mlflow.pyfunc.load_model(uri)


def test_model_versioning_on_a_postgresql_tracking_store(postgres, mlflow_template, replayed, clean_env, tmp_path,
                                                         monkeypatch):
    _create_database(postgres, "mlflow_direct", template=mlflow_template)
    store = f"postgresql+psycopg2://{postgres}/mlflow_direct"
    # a database store has no place for artifacts of its own: the flow says so instead of using ./mlruns
    with pytest.raises(ValueError, match=ARTIFACTS_ENV):
        artifact_location(store)
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path / "mlartifacts"))

    report = sync_lake(replayed, store)
    assert len(report["registered"]) == 4 and report["already_synced"] == 0
    again = sync_lake(replayed, store)
    assert again == {"registered": [], "already_synced": 4, "untrained": 2}
    client = client_for(store)
    _assert_registered_and_served(client, store, replayed)

    # it is all in PostgreSQL: MLflow's own tables hold the versions and their lineage tags
    rows = _query(postgres, "mlflow_direct", "SELECT name, count(*) FROM model_versions GROUP BY name ORDER BY name")
    assert rows == [("riverlake-linear", 2), ("riverlake-tree", 2)]  # trained checkpoints only
    tagged = _query(postgres, "mlflow_direct",
                    f"SELECT count(*) FROM model_version_tags WHERE key = '{CHECKPOINT_TAG}'")
    assert tagged == [(4,)]
    # artifacts went to the configured store, nothing to the working directory
    assert any((tmp_path / "mlartifacts").rglob("model.pkl"))
    assert list(clean_env.iterdir()) == []


@pytest.mark.slow  # a server start: 10-50 s
def test_mlflow_server_on_postgresql_serves_the_versioning_flow(postgres, mlflow_template, replayed, clean_env,
                                                               tmp_path):
    """The production layout: an MLflow server (PostgreSQL backend, its own artifact store); flows speak http."""
    _create_database(postgres, "mlflow_server", template=mlflow_template)
    port = _free_port()
    log = tmp_path / "mlflow-server.log"
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"postgresql+psycopg2://{postgres}/mlflow_server",
             "--artifacts-destination", str(tmp_path / "server-artifacts")],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc, log, "MLflow server")
        store = f"http://127.0.0.1:{port}"
        report = sync_lake(replayed, store)
        assert len(report["registered"]) == 4
        assert sync_lake(replayed, store)["already_synced"] == 4
        _assert_registered_and_served(client_for(store), store, replayed)
        rows = _query(postgres, "mlflow_server", "SELECT count(*) FROM model_versions")
        assert rows == [(4,)]
        assert any((tmp_path / "server-artifacts").rglob("model.pkl")), "the server stored the artifacts"
        assert list(clean_env.iterdir()) == []
    finally:
        _stop(proc)


@pytest.mark.slow  # a server start: 10-50 s
def test_prefect_server_on_postgresql_records_a_flow_run(postgres, mlflow_template, replayed, clean_env, tmp_path):
    """A Prefect server whose API database is PostgreSQL (asyncpg); the versioning flow runs against it."""
    _create_database(postgres, "prefect")
    _create_database(postgres, "mlflow_prefect", template=mlflow_template)
    port = _free_port()
    log = tmp_path / "prefect-server.log"
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_API_DATABASE_CONNECTION_URL=f"postgresql+asyncpg://{postgres}/prefect",
               PREFECT_UI_ENABLED="false", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PREFECT_API_URL", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
             "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/health", proc, log, "Prefect server")
        flow_env = dict(env, PREFECT_API_URL=f"http://127.0.0.1:{port}/api", RIVERLAKE_MLFLOW_ARTIFACTS=str(
            tmp_path / "mlartifacts"), MLFLOW_TRACKING_URI=f"postgresql+psycopg2://{postgres}/mlflow_prefect")
        done = subprocess.run([sys.executable, "-m", "flows.versioning", "--lake", replayed], env=flow_env,
                              cwd=clean_env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr + log.read_text()[-2000:]
        assert "4 registered, 0 already in postgresql+psycopg2://" in done.stdout
        runs = _query(postgres, "prefect",
                      "SELECT f.name, r.state_type::text FROM flow_run r JOIN flow f ON f.id = r.flow_id")
        assert runs == [("version-checkpoints", "COMPLETED")]
        tasks = _query(postgres, "prefect", "SELECT count(*) FROM task_run WHERE state_type = 'COMPLETED'")
        assert tasks[0][0] >= 5  # the plan and one sync per trained checkpoint
    finally:
        _stop(proc)
