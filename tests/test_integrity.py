"""Write access to a lake is not code execution: forged pickles are refused, never unpickled.

Each attack rewrites what an attacker who can write the lake (but not read the
key) can write: a checkpoint's bytes with its sha256 to match, a recovery
snapshot, a logged MLflow model. The forged pickle would create a file when
unpickled; every test asserts the refusal the user sees and that the file was
never created.
"""

from __future__ import annotations

import glob
import hashlib
import pickle
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import mlflow
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from bytewax.testing import run_main
from deltalake import DeltaTable, write_deltalake

from dataflows.models import score_one
from dataflows.online import build_flow, recovery_dir, run_replay
from flows.registry import client_for, using
from flows.versioning import sync_lake
from lake import integrity
from lake.cli import main as lake_main
from lake.integrity import IntegrityError
from lake.reproduce import load_checkpoint, reproduce
from lake.table import read_table, table_uri


class _Trap:
    """Unpickling this creates a file: proof that forged bytes were (or were not) unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def _replayed(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.synthetic import make_lake

    lake = str(tmp_path_factory.mktemp("integrity") / "lake")
    make_lake(lake, n=1_000, seed=7)
    run_main(build_flow(lake=lake, model="linear", run_id="r1", checkpoint_every=500, batch_size=250))
    return lake


@pytest.fixture
def lake(_replayed: str, tmp_path: Path) -> str:
    """A private copy of a lake replayed through ``linear``: checkpoints at 0, 500 and 1,000 learns."""
    dest = str(tmp_path / "lake")
    shutil.copytree(_replayed, dest)
    return dest


def _forge(lake: str, checkpoint_id: str, model_bytes: bytes, *, drop_hmac: bool = False) -> None:
    """Rewrite one checkpoint's bytes and its sha256 to match, as someone with write access to the lake can."""
    uri = table_uri(lake, "checkpoints")
    table = DeltaTable(uri).to_pyarrow_table()
    hit = pc.equal(table.column("checkpoint_id"), checkpoint_id)
    assert pc.sum(hit.cast(pa.int64())).as_py() == 1
    for name, value in (("model_bytes", model_bytes), ("sha256", hashlib.sha256(model_bytes).hexdigest())):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, table.schema.field(name),
                                 pc.if_else(hit, pa.scalar(value, table.schema.field(name).type), table.column(name)))
    if drop_hmac:  # a lake written before checkpoints were signed
        table = table.drop_columns(["hmac"])
    write_deltalake(uri, table, mode="overwrite", schema_mode="overwrite" if drop_hmac else None)


def _prediction_of(lake: str, checkpoint_id: str) -> str:
    preds = read_table(lake, "predictions").filter(pl.col("model_version") == checkpoint_id)
    return preds.sort("seq")["event_id"][0]


# -- the key ---------------------------------------------------------------------------------------


def test_default_key_is_created_once_private_and_outside_the_lake(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RIVERLAKE_KEY_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = tmp_path / "config" / "riverlake" / "key"
    with pytest.raises(IntegrityError, match="no riverlake key on this machine"):  # reading never makes one
        integrity.verify(b"x", "00", purpose="p", what="checkpoint 'c'")
    assert not path.exists()
    tag = integrity.sign(b"x", purpose="p")
    assert f"created a new integrity key at {path}" in capsys.readouterr().err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(bytes.fromhex(path.read_text())) == 32
    assert integrity.sign(b"x", purpose="p") == tag  # the same key from then on, created once
    assert capsys.readouterr().err == ""
    integrity.verify(b"x", tag, purpose="p", what="checkpoint 'c'")


def test_a_named_key_file_that_is_missing_is_an_error_not_a_new_key(tmp_path, monkeypatch):
    missing = tmp_path / "shared" / "key"
    monkeypatch.setenv("RIVERLAKE_KEY_FILE", str(missing))
    with pytest.raises(IntegrityError, match=r"riverlake key file .*/shared/key \(\$RIVERLAKE_KEY_FILE\) does not "
                                             r"exist: copy the key"):
        integrity.sign(b"x", purpose="p")
    assert not missing.exists()
    monkeypatch.setenv("RIVERLAKE_KEY", "abcd")
    with pytest.raises(IntegrityError, match=r"riverlake key in \$RIVERLAKE_KEY has 2 bytes, at least 16"):
        integrity.sign(b"x", purpose="p")


def test_a_key_file_inside_the_lake_is_refused(synthetic_lake, monkeypatch):
    inside = Path(synthetic_lake) / "key"
    inside.write_text("11" * 32)
    monkeypatch.setenv("RIVERLAKE_KEY_FILE", str(inside))
    with pytest.raises(IntegrityError, match="is inside the lake .*: whoever can write the lake could read it"):
        run_replay(synthetic_lake, "linear", run_id="r1", recovery=False)
    assert not (Path(synthetic_lake) / "predictions").exists()


# -- checkpoints: reproduce and versioning ---------------------------------------------------------


def test_forged_checkpoint_with_matching_sha256_is_refused_by_reproduce(lake, tmp_path, capsys):
    marker = tmp_path / "pwned"
    event = _prediction_of(lake, "linear:s0:500")
    _forge(lake, "linear:s0:500", pickle.dumps(_Trap(marker)))
    assert lake_main(["reproduce", "--lake", lake, "--event-id", event]) == 2
    err = capsys.readouterr().err
    assert ("checkpoint 'linear:s0:500' of run 'r1' (table 'checkpoints'): HMAC does not match the key" in err
            and "refusing to unpickle" in err)
    assert not marker.exists()
    # untouched checkpoints still reproduce bit for bit
    assert all(r.bit_equal for r in reproduce(lake, _prediction_of(lake, "linear:s0:0")))


def test_forged_checkpoint_is_refused_by_the_command_line_in_a_fresh_process(lake, tmp_path, subprocess_env):
    marker = tmp_path / "pwned"
    event = _prediction_of(lake, "linear:s0:0")
    _forge(lake, "linear:s0:0", pickle.dumps(_Trap(marker)))
    proc = subprocess.run([sys.executable, "-m", "lake", "reproduce", "--lake", lake, "--event-id", event],
                          env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "HMAC does not match" in proc.stderr
    assert not marker.exists()


def test_a_checkpoint_moved_to_another_row_does_not_pass(lake):
    other = read_table(lake, "checkpoints").filter(pl.col("checkpoint_id") == "linear:s0:1000")["model_bytes"][0]
    _forge(lake, "linear:s0:500", other)  # genuine bytes, signed for another checkpoint
    with pytest.raises(IntegrityError, match="checkpoint 'linear:s0:500' of run 'r1'.*HMAC does not match"):
        reproduce(lake, _prediction_of(lake, "linear:s0:500"))


def test_checkpoints_without_an_hmac_are_refused_not_trusted(lake, tmp_path):
    marker = tmp_path / "pwned"
    _forge(lake, "linear:s0:500", pickle.dumps(_Trap(marker)), drop_hmac=True)
    with pytest.raises(IntegrityError, match="checkpoint 'linear:s0:500' of run 'r1' .*: no HMAC recorded"):
        reproduce(lake, _prediction_of(lake, "linear:s0:500"))
    assert not marker.exists()


def test_checkpoints_signed_with_another_key_are_refused(lake, tmp_path, monkeypatch):
    monkeypatch.setenv("RIVERLAKE_KEY", "22" * 32)
    with pytest.raises(IntegrityError, match=r"HMAC does not match the key from \$RIVERLAKE_KEY"):
        reproduce(lake, _prediction_of(lake, "linear:s0:500"))


def test_forged_checkpoint_is_never_registered(lake, tmp_path, mlflow_uri, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    marker = tmp_path / "pwned"
    _forge(lake, "linear:s0:500", pickle.dumps(_Trap(marker)))
    with pytest.raises(IntegrityError, match=r"1 checkpoint\(s\) refused, 1 registered; refused: "
                                             r"r1/linear:s0:500: checkpoint 'linear:s0:500' .*HMAC does not match"):
        sync_lake(lake, mlflow_uri)
    assert not marker.exists()
    client = client_for(mlflow_uri)
    registered = {mv.tags["riverlake.checkpoint"] for mv in client.search_model_versions("name = 'riverlake-linear'")}
    assert registered == {"r1/linear:s0:1000"}  # the untrained linear:s0:0 is no version


# -- MLflow models ---------------------------------------------------------------------------------


def _logged_model_dir(client, version: str) -> Path:
    mv = client.get_model_version("riverlake-linear", version)
    location = client.get_logged_model(mv.source.removeprefix("models:/")).artifact_location
    return Path(location.removeprefix("file://"))


def test_pyfunc_refuses_forged_model_bytes_even_with_sha256_and_config_rewritten(lake, tmp_path, mlflow_uri,
                                                                                  monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    done = sync_lake(lake, mlflow_uri, checkpoint_ids=["linear:s0:500"])["registered"]
    model_dir = _logged_model_dir(client_for(mlflow_uri), done[0]["version"])
    uri = f"models:/riverlake-linear/{done[0]['version']}"
    with using(mlflow_uri):
        assert mlflow.pyfunc.load_model(uri) is not None  # the genuine model loads

    marker = tmp_path / "pwned"
    forged = pickle.dumps(_Trap(marker))
    (model_dir / "artifacts" / "model.pkl").write_bytes(forged)
    mlmodel = model_dir / "MLmodel"
    spec = yaml.safe_load(mlmodel.read_text())
    spec["flavors"]["python_function"]["config"]["sha256"] = hashlib.sha256(forged).hexdigest()
    mlmodel.write_text(yaml.safe_dump(spec))
    with using(mlflow_uri), pytest.raises(IntegrityError, match="MLflow model of checkpoint 'linear:s0:500' of "
                                                                "run 'r1': HMAC does not match"):
        mlflow.pyfunc.load_model(uri)
    assert not marker.exists()

    del spec["flavors"]["python_function"]["config"]["hmac"]  # the check is never skipped
    mlmodel.write_text(yaml.safe_dump(spec))
    with using(mlflow_uri), pytest.raises(IntegrityError, match="no HMAC recorded"):
        mlflow.pyfunc.load_model(uri)
    assert not marker.exists()


# -- recovery snapshots ----------------------------------------------------------------------------


@pytest.fixture
def recovered(synthetic_lake) -> str:
    """A lake whose run ``r1`` left its recovery snapshots behind."""
    run_replay(synthetic_lake, "linear", run_id="r1", snapshot_s=0.5, batch_size=500, checkpoint_every=1_000)
    return synthetic_lake


def _rewrite_learner_snapshots(lake: str, blob: bytes) -> None:
    parts = glob.glob(str(recovery_dir(lake, "r1") / "*.sqlite3"))
    assert parts
    n = 0
    for part in parts:
        with sqlite3.connect(part) as conn:
            n += conn.execute("UPDATE snaps SET ser_change = ? WHERE step_id LIKE '%.learn' "
                              "AND ser_change IS NOT NULL", (blob,)).rowcount
    assert n >= 1


def test_a_snapshot_that_names_code_stops_the_resume_before_bytewax_unpickles_it(recovered, tmp_path, capsys):
    folder = str(recovery_dir(recovered, "r1"))
    assert lake_main(["check-recovery", folder]) == 0  # what riverlake wrote is plain data
    marker = tmp_path / "pwned"
    _rewrite_learner_snapshots(recovered, pickle.dumps(_Trap(marker)))
    with pytest.raises(IntegrityError, match=r"recovery snapshot of step 'riverlake-replay.learn', key '0', epoch "
                                             r"\d+ in .*part-0.sqlite3: refers to io.open; only plain data"):
        run_replay(recovered, "linear", run_id="r1", snapshot_s=0.5, batch_size=500, checkpoint_every=1_000)
    assert not marker.exists()
    # the check a `bytewax.run -r DIR` deployment runs first
    capsys.readouterr()
    assert lake_main(["check-recovery", folder]) == 2
    assert "refers to io.open; only plain data may be there" in capsys.readouterr().err
    assert not marker.exists()


def test_learner_state_without_the_key_is_refused_on_resume(recovered, tmp_path):
    marker = tmp_path / "pwned"
    # plain data on the outside, as riverlake writes it, with a forged learner inside
    _rewrite_learner_snapshots(recovered, pickle.dumps(("0" * 64, pickle.dumps(_Trap(marker)))))
    with pytest.raises(IntegrityError, match="recovery state of run 'r1': HMAC does not match"):
        run_replay(recovered, "linear", run_id="r1", snapshot_s=0.5, batch_size=500, checkpoint_every=1_000)
    assert not marker.exists()
    # state from before it was sealed (the bare pickle) is refused too
    _rewrite_learner_snapshots(recovered, pickle.dumps(pickle.dumps(_Trap(marker))))
    with pytest.raises(IntegrityError, match="recovery state of run 'r1': not sealed with an HMAC"):
        run_replay(recovered, "linear", run_id="r1", snapshot_s=0.5, batch_size=500, checkpoint_every=1_000)
    assert not marker.exists()


def test_verified_loading_checks_every_file_before_mlflow_unpickles_any(lake, tmp_path, mlflow_uri, monkeypatch):
    import pandas as pd

    from flows.registry import load_verified

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    done = sync_lake(lake, mlflow_uri, checkpoint_ids=["linear:s0:1000"])["registered"]
    client = client_for(mlflow_uri)
    version = done[0]["version"]
    x = read_table(lake, "predictions").tail(3)["features"].to_list()
    served = load_verified(client, "riverlake-linear", version=version).predict(pd.DataFrame(x))["score"]
    row = read_table(lake, "checkpoints").filter(pl.col("checkpoint_id") == "linear:s0:1000").row(0, named=True)
    estimator = load_checkpoint(row)
    assert served.tolist() == [score_one(estimator, xi) for xi in x]

    # the wrapper MLflow unpickles itself (cloudpickle), before any code of ours runs
    marker = tmp_path / "pwned"
    (_logged_model_dir(client, version) / "python_model.pkl").write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(IntegrityError, match=f"MLflow model 'riverlake-linear' version {version}: HMAC does not "
                                             "match"):
        load_verified(client, "riverlake-linear", version=version)
    assert not marker.exists()
