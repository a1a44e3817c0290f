"""kill -9 at random moments, restart with recovery: the lake holds every row exactly once."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from dataflows.online import run_replay
from lake.table import read_table

pytestmark = pytest.mark.slow


def _replay_cmd(lake: str, colocate: bool) -> list[str]:
    return [sys.executable, "-m", "dataflows.online", "--lake", lake, "--model", "linear,tree",
            "--run-id", "crashy", "--rate", "1000", "--batch-size", "150", "--snapshot-s", "0.4",
            "--checkpoint-every", "500", *(["--colocate"] if colocate else [])]


@pytest.mark.parametrize("colocate", [False, True], ids=["keyed-step", "colocated"])
def test_kill_9_and_resume_gives_the_uninterrupted_result(synthetic_lake, subprocess_env, colocate):
    clean = run_replay(synthetic_lake, "linear,tree", run_id="clean", recovery=False, checkpoint_every=500)
    rng = random.Random(20261122)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(_replay_cmd(synthetic_lake, colocate), env=subprocess_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(3.0, 4.5))  # imports take 1-2.5 s; the paced replay (6,000 items) 6 s more
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    final = subprocess.run(_replay_cmd(synthetic_lake, colocate), env=subprocess_env, capture_output=True, text=True,
                           timeout=180)
    assert final.returncode == 0, final.stderr[-3000:]
    assert kills >= 1, "the test must really interrupt the dataflow"

    def rows(table, run_id, cols):
        return (read_table(synthetic_lake, table).filter(pl.col("run_id") == run_id)
                .select(cols).sort(cols[:2]))

    pred_cols = ["event_id", "model", "seq", "score", "prediction", "model_version", "features"]
    a, b = rows("predictions", clean, pred_cols), rows("predictions", "crashy", pred_cols)
    assert a.height == 6_000
    assert b.height == 6_000, "every event has exactly one prediction per model"
    assert a.equals(b), "the model state after recovery equals the uninterrupted run's"
    learn_cols = ["event_id", "model", "learn_order", "label", "score"]
    la, lb = rows("learn_log", clean, learn_cols), rows("learn_log", "crashy", learn_cols)
    assert lb.select("event_id", "model").is_unique().all()
    assert la.equals(lb)
    ca = rows("checkpoints", clean, ["checkpoint_id", "model", "sha256"])
    cb = rows("checkpoints", "crashy", ["checkpoint_id", "model", "sha256"])
    assert ca["checkpoint_id"].to_list() == cb["checkpoint_id"].to_list()
