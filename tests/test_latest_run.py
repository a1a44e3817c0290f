"""``latest_run_id``: one definition (lake.summary), used by the summary, analysis and promotion."""

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from lake.errors import LakeError
from lake.schemas import TABLES
from lake.summary import latest_run_id
from lake.table import append


def _checkpoint(run_id: str, created_at: datetime) -> pa.Table:
    row = {"run_id": run_id, "shard": 0, "seq": 1, "checkpoint_id": f"{run_id}-c1", "model": "linear",
           "spec": "linear", "n_learned": 1, "last_event_id": "e1", "sha256": "0" * 64, "river_version": "x",
           "python_version": "x", "riverlake_version": "x", "model_bytes": b"m", "created_at": created_at,
           "hmac": None}
    return pa.Table.from_pylist([row], schema=TABLES["checkpoints"])


def test_latest_run_is_the_newest_checkpoint_not_the_last_row(tmp_path):
    lake = str(tmp_path / "lake")
    with pytest.raises(LakeError, match="no checkpoints in .*replay or run a dataflow first"):
        latest_run_id(lake)
    # the newer run's checkpoint is committed first: row order says "old", time says "new"
    append(lake, "checkpoints", _checkpoint("new", datetime(2026, 2, 1, tzinfo=UTC)), writer_id="new", position=1)
    append(lake, "checkpoints", _checkpoint("old", datetime(2026, 1, 1, tzinfo=UTC)), writer_id="old", position=1)
    assert latest_run_id(lake) == "new"
