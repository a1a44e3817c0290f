"""MLflow plumbing that must not leak or mismatch: passwords in tracking URIs, quotes in searched values."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from bytewax.testing import run_main

from dataflows.online import build_flow
from flows.registry import (
    CHECKPOINT_TAG,
    KIND_TAG,
    RUN_TAG,
    client_for,
    ensure_experiment,
    find_version,
    redact_uri,
    runs_tagged,
)
from flows.versioning import main as versioning_main
from flows.versioning import sync_lake
from tests.synthetic import make_lake
from tests.test_versioning import mlflow_server  # noqa: F401  (a fixture: a real MLflow server)

ODD_VALUES = ["it's r1", 'say "hi"', "C:\\runs\\r1", "trailing\\", "it's \"both\"", "plain"]


@pytest.fixture(scope="module")
def quoted_lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    """600 synthetic events replayed as run ``it's r1`` with a checkpoint every 200 learns."""
    lake = str(tmp_path_factory.mktemp("quoted") / "lake")
    make_lake(lake, n=600, seed=5)
    run_main(build_flow(lake=lake, model="linear", run_id="it's r1", checkpoint_every=200, batch_size=200))
    return lake


def test_a_run_id_with_a_quote_keeps_one_parent_run(quoted_lake, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = sync_lake(quoted_lake, uri, checkpoint_ids=["linear:s0:200"])  # (s0:0 learned nothing: no version)
    rest = sync_lake(quoted_lake, uri)  # a later sync: it must find the run's parent, not make another
    assert len(first["registered"]) == 1 and len(rest["registered"]) >= 2
    client = client_for(uri)
    exp = client.get_experiment_by_name("riverlake")
    parents = [r for r in client.search_runs([exp.experiment_id], "") if r.data.tags.get(KIND_TAG) == "run"]
    assert [p.data.tags[RUN_TAG] for p in parents] == ["it's r1"]
    again = sync_lake(quoted_lake, uri)  # everything is found as registered
    assert again["registered"] == [] and again["already_synced"] == len(first["registered"]) + len(rest["registered"])


@pytest.mark.parametrize("value", ODD_VALUES)
def test_runs_and_versions_are_found_by_values_holding_quotes_and_backslashes(value, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = client_for(uri)
    exp = ensure_experiment(client, "e", uri)
    run = client.create_run(exp, tags={RUN_TAG: value, KIND_TAG: "run"})
    client.create_run(exp, tags={RUN_TAG: value + "x", KIND_TAG: "run"})  # a near miss
    assert [r.info.run_id for r in runs_tagged(client, exp, kind="run", run_id=value)] == [run.info.run_id]
    client.create_registered_model("m")
    mv = client.create_model_version("m", str(tmp_path / "art"), run_id=run.info.run_id,
                                     tags={CHECKPOINT_TAG: value})
    client.create_model_version("m", str(tmp_path / "art"), run_id=run.info.run_id,
                                tags={CHECKPOINT_TAG: value + "x"})
    assert find_version(client, "m", value) == str(mv.version)


SECRET = "s3cr3t-pw"


def test_deployments_carry_no_tracking_uri(tmp_path, monkeypatch):
    from flows.serve import deployments

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql+psycopg2://mlflow:{SECRET}@db.internal/mlflow")
    deps = deployments(str(tmp_path / "lake"))
    stored = json.dumps([{"name": d.name, "parameters": d.parameters, "job_variables": d.job_variables}
                         for d in deps], default=str)
    assert SECRET not in stored and "tracking_uri" not in stored


def test_redact_uri_hides_passwords_of_any_store():
    for uri in (f"postgresql://u:{SECRET}@h:5432/db", f"mysql+pymysql://u:{SECRET}@h/db?charset=utf8",
                f"https://u:{SECRET}@mlflow.example", f"postgresql://h/db?user=u&password={SECRET}"):
        assert SECRET not in redact_uri(uri) and "***" in redact_uri(uri)
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


@pytest.mark.slow
def test_a_password_in_the_tracking_uri_never_reaches_output_logs_or_flow_parameters(
        quoted_lake, mlflow_server, prefect_harness, capfd, caplog, monkeypatch, tmp_path):  # noqa: F811
    import shutil

    from prefect.client.orchestration import get_client

    lake = str(tmp_path / "lake")
    shutil.copytree(quoted_lake, lake)
    # recorded by monkeypatch, so the value main exports (--tracking-uri) is undone after the test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    secret_uri = mlflow_server.uri.replace("http://", f"http://riverlake:{SECRET}@")  # basic auth, ignored here
    caplog.set_level(logging.DEBUG)
    assert versioning_main(["--lake", lake, "--tracking-uri", secret_uri, "--retries", "0"]) == 0
    out, err = capfd.readouterr()
    assert "registered" in out and SECRET not in out + err + caplog.text
    assert "riverlake:***@127.0.0.1" in out  # the store is named, its password is not

    async def flow_run_parameters() -> str:
        async with get_client() as client:
            runs = await client.read_flow_runs()
            return json.dumps([r.parameters for r in runs], default=str)

    import asyncio

    stored = asyncio.run(flow_run_parameters())
    assert SECRET not in stored and os.environ["MLFLOW_TRACKING_URI"] == secret_uri


def test_the_command_line_needs_no_uri_in_flow_parameters(tmp_path: Path):
    """`--tracking-uri` becomes the process's MLFLOW_TRACKING_URI: flows read it at run time."""
    from flows.registry import use_tracking_uri

    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        use_tracking_uri(f"postgresql://u:{SECRET}@h/db")
        assert os.environ["MLFLOW_TRACKING_URI"].endswith("@h/db")
        use_tracking_uri(None)  # nothing given: the environment stays as it is
        assert os.environ["MLFLOW_TRACKING_URI"].endswith("@h/db")
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
