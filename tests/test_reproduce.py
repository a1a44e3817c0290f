"""Every prediction can be rebuilt, bit for bit, from its checkpoint plus the learn log."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from bytewax.testing import run_main
from deltalake import DeltaTable, write_deltalake

from dataflows.models import score_one
from dataflows.online import build_flow
from lake.cli import main as lake_main
from lake.reproduce import ChecksumError, ReproduceError, reproduce
from lake.table import read_table, table_uri
from tests.synthetic import make_lake

CHECKPOINT_EVERY = 200


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> str:
    """3,000 synthetic events replayed through linear + tree, a checkpoint every 200 learns."""
    lake = str(tmp_path_factory.mktemp("reproduce") / "lake")
    make_lake(lake, n=3_000, seed=7)
    run_main(build_flow(lake=lake, model="linear,tree", run_id="r1", checkpoint_every=CHECKPOINT_EVERY,
                        batch_size=256))
    return lake


def _sample(lake: str, n_per_model: int = 15) -> pl.DataFrame:
    preds = read_table(lake, "predictions", columns=["run_id", "seq", "event_id", "model", "model_version"])
    parts = []
    for model in ("linear", "tree"):
        mine = preds.filter(pl.col("model") == model).sort("seq")
        step = mine.height // n_per_model
        parts.append(mine.gather_every(step, offset=step // 2).head(n_per_model))
    return pl.concat(parts)


def test_sampled_predictions_are_rebuilt_bit_for_bit(replayed):
    sample = _sample(replayed)
    assert sample.height == 30
    assert sample["model_version"].n_unique() >= 20  # spread over many checkpoints of both models
    results = [r for row in sample.iter_rows(named=True)
               for r in reproduce(replayed, row["event_id"], model=row["model"])]
    assert len(results) == 30
    for r in results:
        assert r.reproduced_score == r.stored_score, (r.model_version, r.event_id)
        assert r.bit_equal
    # the learn log matters: the checkpoint alone scores most of these differently
    ckpts = read_table(replayed, "checkpoints").filter(pl.col("run_id") == "r1")
    by_id = {row["checkpoint_id"]: row for row in ckpts.iter_rows(named=True)}
    replayed_steps = [r for r in results if r.learned > 0]
    assert len(replayed_steps) >= 25
    differs = sum(score_one(pickle.loads(by_id[r.model_version]["model_bytes"]), r.features) != r.stored_score
                  for r in replayed_steps)
    assert differs >= len(replayed_steps) // 2
    assert max(r.learned for r in results) < CHECKPOINT_EVERY + 100  # never more than a checkpoint's worth


def test_command_prints_features_version_and_both_scores(replayed, subprocess_env):
    proc = subprocess.run(
        [sys.executable, "-m", "lake", "reproduce", "--lake", replayed, "--event-id", "e001500", "--model", "tree"],
        env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    stored = read_table(replayed, "predictions").filter(
        (pl.col("event_id") == "e001500") & (pl.col("model") == "tree")).row(0, named=True)
    assert f"model version  {stored['model_version']}" in out
    assert f"stored score     {stored['score']!r}" in out
    assert f"reproduced score {stored['score']!r}" in out
    assert "'x1': " in out and "'colour=" in out  # the features the model saw
    assert "bit-equal      yes" in out


def test_every_model_of_the_event_and_run_selection(replayed, capsys):
    assert lake_main(["reproduce", "--lake", replayed, "--event-id", "e000042"]) == 0
    out = capsys.readouterr().out
    assert out.index("model          linear (champion)") < out.index("model          tree (challenger)")
    assert out.count("bit-equal      yes") == 2
    assert lake_main(["reproduce", "--lake", replayed, "--event-id", "nope"]) == 2
    assert "no prediction for event 'nope'" in capsys.readouterr().err


def test_several_runs_need_a_run_id(replayed, tmp_path):
    lake = str(tmp_path / "lake")
    shutil.copytree(replayed, lake)
    run_main(build_flow(lake=lake, model="linear", run_id="r2", checkpoint_every=500, batch_size=512))
    with pytest.raises(ReproduceError, match=r"predicted in 2 runs \(r1, r2\); pick one with --run-id"):
        reproduce(lake, "e002000")
    (r,) = reproduce(lake, "e002000", run_id="r2")
    assert r.bit_equal and r.model_version.startswith("linear:s0:")


class _Trap:
    """Unpickling this creates a file: proof that tampered bytes were (or were not) unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _rewrite_checkpoint(lake: str, checkpoint_id: str, *, model_bytes: bytes | None = None,
                        sha256: str | None = None) -> None:
    uri = table_uri(lake, "checkpoints")
    table = DeltaTable(uri).to_pyarrow_table()
    hit = pc.equal(table.column("checkpoint_id"), checkpoint_id)
    assert pc.sum(hit.cast(pa.int64())).as_py() == 1
    for name, value in (("model_bytes", model_bytes), ("sha256", sha256)):
        if value is not None:
            i = table.schema.get_field_index(name)
            col = pc.if_else(hit, pa.scalar(value, table.schema.field(name).type), table.column(name))
            table = table.set_column(i, table.schema.field(name), col)
    write_deltalake(uri, table, mode="overwrite")


def test_tampered_checkpoint_is_refused_before_unpickling(replayed, tmp_path, capsys):
    lake = str(tmp_path / "lake")
    shutil.copytree(replayed, lake)
    target = read_table(lake, "predictions").filter(
        (pl.col("event_id") == "e002500") & (pl.col("model") == "linear")).row(0, named=True)
    version = target["model_version"]
    trap = tmp_path / "unpickled"
    _rewrite_checkpoint(lake, version, model_bytes=pickle.dumps(_Trap(trap)))
    code = lake_main(["reproduce", "--lake", lake, "--event-id", "e002500", "--model", "linear"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"checkpoint {version!r}: model bytes have sha256" in err and "refusing to unpickle" in err
    assert not trap.exists()
    # the other model's checkpoints are untouched and still reproduce
    assert lake_main(["reproduce", "--lake", lake, "--event-id", "e002500", "--model", "tree"]) == 0


def test_rewritten_sha_is_refused(replayed, tmp_path):
    lake = str(tmp_path / "lake")
    shutil.copytree(replayed, lake)
    target = read_table(lake, "predictions").filter(
        (pl.col("event_id") == "e000900") & (pl.col("model") == "tree")).row(0, named=True)
    _rewrite_checkpoint(lake, target["model_version"], sha256="0" * 64)
    with pytest.raises(ChecksumError, match="the lake records 0000...0000"):
        reproduce(lake, "e000900", model="tree")
