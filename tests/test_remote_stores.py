"""The lake on object storage: a real S3-protocol server (moto in server mode, its own process) on 127.0.0.1.

Credentials and the endpoint come from the environment (``AWS_ENDPOINT_URL``,
``AWS_ALLOW_HTTP``, ...), as in production; the tests run the project's own
commands and functions with an ``s3://bucket/prefix`` lake root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from dataflows.bench.scaling import free_ports
from dataflows.online import recovery_dir, run_replay
from lake.ingest import ingest_scenario
from lake.maintain import maintain
from lake.schemas import FEATURES
from lake.storage import state_dir
from lake.table import TableWriter, append, exists, read_table, table_uri, table_version
from monitoring.evidently_report import append_report_row, make_report, read_reports
from tests.processes import run_processes

ROOT = Path(__file__).resolve().parent.parent
N_EVENTS = 1_500


def _free_port() -> int:
    return free_ports(1)[0]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A moto S3 server in a subprocess; yields the AWS_* settings that point deltalake and polars at it.

    A subprocess, not moto's in-process thread: some deltalake calls hold the GIL
    while they wait for the server, which would deadlock a server in the same process.
    """
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto S3 server did not start on {endpoint}: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)
    settings = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "riverlake", "AWS_SECRET_ACCESS_KEY": "riverlake",
                "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true", "AWS_CONDITIONAL_PUT": "etag"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in settings.items():
            mp.setenv(key, value)
        mp.delenv("AWS_S3_ALLOW_UNSAFE_RENAME", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        yield settings
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_lake(s3_server: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3://<fresh bucket>/lake`` on the moto server; local state (recovery) under ``tmp_path``."""
    import boto3

    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"], region_name="us-east-1").create_bucket(
        Bucket=bucket)
    monkeypatch.setenv("RIVERLAKE_STATE_DIR", str(tmp_path / "state"))
    return f"s3://{bucket}/lake"


def _keys(s3_server: dict[str, str], lake: str) -> list[str]:
    import boto3

    bucket, _, prefix = lake.removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"], region_name="us-east-1")
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def _cli(args: list[str], cwd: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


PRED_COLS = ["shard", "seq", "event_id", "event_time", "key", "model", "role", "model_version", "score",
             "prediction", "features"]


def test_ingest_replay_and_read_back_a_lake_on_s3(s3_server, s3_lake, tmp_path):
    work = tmp_path / "cwd"
    work.mkdir()
    ingest = ["-m", "lake", "ingest", "--scenario", "agrawal-drift", "--n", str(N_EVENTS), "--seed", "3"]
    _cli([*ingest, "--lake", s3_lake], work)
    keys = _keys(s3_server, s3_lake)
    assert any(k.endswith("lake/events/_delta_log/00000000000000000000.json") for k in keys)
    assert read_table(s3_lake, "events").height == N_EVENTS

    run_id = run_replay(s3_lake, "linear,tree", run_id="s3run", batch_size=250, flush_rows=500, snapshot_s=1.0)
    preds = read_table(s3_lake, "predictions")
    assert preds.height == 2 * N_EVENTS
    assert preds.group_by("model").agg(pl.col("event_id").n_unique())["event_id"].to_list() == [N_EVENTS] * 2
    assert read_table(s3_lake, "learn_log").height == 2 * N_EVENTS
    assert any("lake/predictions/" in k and k.endswith(".parquet") for k in _keys(s3_server, s3_lake))

    # recovery state stayed local, under RIVERLAKE_STATE_DIR, never under a folder named "s3:"
    rec = recovery_dir(s3_lake, run_id)
    assert rec == state_dir(s3_lake, "_recovery", run_id) and rec.is_relative_to(tmp_path / "state")
    assert any(rec.iterdir()), "Bytewax wrote its recovery files locally"
    assert not any(p.name.startswith("s3:") for p in work.rglob("*")) and not Path("s3:").exists()

    # a second replay of the same run writes nothing: app transactions read back from S3
    versions = {t: table_version(s3_lake, t) for t in ("predictions", "learn_log", "metrics")}
    run_replay(s3_lake, "linear,tree", run_id="s3run", batch_size=250, flush_rows=500, snapshot_s=1.0, recovery=False)
    assert {t: table_version(s3_lake, t) for t in versions} == versions

    # the same history on a local lake gives bit-identical predictions: storage changes nothing
    local = str(tmp_path / "local-lake")
    ingest_scenario(local, "agrawal-drift", n=N_EVENTS, seed=3)
    run_replay(local, "linear,tree", run_id="s3run", batch_size=250, flush_rows=500, recovery=False)
    on_s3 = preds.sort(["shard", "seq", "model"]).select(PRED_COLS)
    on_disk = read_table(local, "predictions").sort(["shard", "seq", "model"]).select(PRED_COLS)
    assert on_s3.equals(on_disk)

    # the flows' work on an S3 lake: maintenance, and a drift report over the two halves of the history
    done = maintain(s3_lake, ["predictions"], retention_hours=0)
    assert done["predictions"]["files_removed_by_compaction"] > 1 and done["predictions"]["files_vacuumed"] > 1, done
    assert read_table(s3_lake, "predictions").sort(["shard", "seq", "model"]).select(PRED_COLS).equals(on_s3)
    times = read_table(s3_lake, "events", columns=["event_time"])["event_time"].sort()
    middle, end = times[N_EVENTS // 2], times[-1] + timedelta(seconds=1)
    report = make_report(s3_lake, (times[0], middle), (middle, end))
    assert append_report_row(s3_lake, report) == 1
    assert read_reports(s3_lake)["report_id"].to_list() == [report.report_id]
    assert Path(report.html_path).is_relative_to(tmp_path / "state")  # report files stay local

    # the command line reads it too
    assert "predictions" in _cli(["-m", "lake", "info", "--lake", s3_lake], work)


def test_appends_to_s3_are_idempotent_across_writer_instances(s3_lake):
    rows = pl.DataFrame({"event_id": [f"e{i}" for i in range(4)], "label": [0, 1, 0, 1],
                         "label_time": pl.Series([0, 1, 2, 3], dtype=pl.Datetime("us", "UTC"))})
    assert not exists(s3_lake, "labels")
    assert append(s3_lake, "labels", rows, writer_id="w", position=1) == 4
    assert append(s3_lake, "labels", rows, writer_id="w", position=1) == 0  # replayed batch: skipped
    assert table_uri(s3_lake, "labels") == s3_lake + "/labels"

    # a new writer (a restarted process) learns its committed position from the Delta log on S3
    writer = TableWriter(s3_lake, "predictions", writer_id="run/predictions/shard-0")
    assert writer.committed_position is None
    batch = pl.DataFrame({
        "run_id": ["run"] * 3, "shard": [0] * 3, "seq": [1, 2, 3], "event_id": ["a", "b", "c"],
        "event_time": pl.Series([0, 1, 2], dtype=pl.Datetime("us", "UTC")), "key": ["k"] * 3,
        "model": ["linear"] * 3, "role": ["champion"] * 3, "model_version": ["m:0"] * 3,
        "score": [0.1, 0.2, 0.3], "prediction": [0, 0, 0],
    })
    batch = batch.to_arrow().append_column("features", pa.array([[("x", 1.0)]] * 3, type=FEATURES))
    assert writer.append(batch.slice(0, 2), position=2) == 2
    again = TableWriter(s3_lake, "predictions", writer_id="run/predictions/shard-0")
    assert again.committed_position == 2
    assert again.append(batch, position=3) == 1  # rows at or below seq 2 are dropped, seq 3 is new
    assert read_table(s3_lake, "predictions")["seq"].sort().to_list() == [1, 2, 3]


def test_concurrent_writers_on_s3_lose_nothing(s3_lake, tmp_path):
    """Two processes append to one table at once: deltalake's conditional puts serialize their commits."""
    append(s3_lake, "labels", pl.DataFrame({"event_id": ["seed"], "label": [0],
                                            "label_time": pl.Series([0], dtype=pl.Datetime("us", "UTC"))}),
           writer_id="seed", position=1)
    child = (
        "import sys, polars as pl\n"
        "from lake.table import append\n"
        "lake, w = sys.argv[1], sys.argv[2]\n"
        "for i in range(1, 13):\n"
        "    rows = pl.DataFrame({'event_id': [f'{w}-{i}'], 'label': [1],\n"
        "                         'label_time': pl.Series([i], dtype=pl.Datetime('us', 'UTC'))})\n"
        "    assert append(lake, 'labels', rows, writer_id=w, position=i) == 1\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-c", child, s3_lake, w], env=env, stderr=subprocess.PIPE, text=True)
             for w in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    labels = read_table(s3_lake, "labels")
    assert labels.height == 1 + 2 * 12 and labels["event_id"].is_unique().all()
    assert table_version(s3_lake, "labels") == 24  # one commit each, none overwritten


@pytest.mark.cluster
def test_two_bytewax_processes_write_one_s3_lake_as_one_worker(s3_lake):
    """The production layout in small: two dataflow processes (``-i``/``-a``) share one lake on S3."""
    from bytewax.testing import run_main

    from dataflows.online import build_flow
    from tests.synthetic import make_lake

    make_lake(s3_lake, n=1_000, seed=11)
    settings = dict(model="linear", shards=2, checkpoint_every=500, batch_size=250)
    run_main(build_flow(lake=s3_lake, run_id="one", **settings))
    flow = (f"dataflows.online:build_flow(lake='{s3_lake}', model='linear', run_id='p2', shards=2, "
            "checkpoint_every=500, batch_size=250)")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run_processes(flow, env)
    preds = read_table(s3_lake, "predictions")
    one = preds.filter(pl.col("run_id") == "one").sort(["shard", "seq", "model"]).select(PRED_COLS)
    two = preds.filter(pl.col("run_id") == "p2").sort(["shard", "seq", "model"]).select(PRED_COLS)
    assert one.height == 1_000 and two.equals(one)
    assert two["shard"].n_unique() == 2
