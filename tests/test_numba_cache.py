"""The compiled loops loaded from numba's cache in a new process (``dataflows._numba_cache``): the same
scores as the process that compiled them, and a signature the cache lacks still compiles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataflows.tabular import available

pytestmark = pytest.mark.skipif(not available(), reason="numba not available")

_RUN = """
import json, sys
import numpy as np
import polars as pl
from dataflows import _kernels, _tabular_kernels
from dataflows.features import KeyedFeaturizer
from dataflows.models import get_spec
from dataflows.tabular import TabularStep

step = TabularStep(KeyedFeaturizer(), [get_spec(name).build(seed=0) for name in ("linear", "naive-bayes")])
events = pl.DataFrame({"event_id": ["a", "b", "c", "d"], "event_time": [0, 60_000_000, 120_000_000, 180_000_000],
                       "key": ["k", "k", "j", "k"], "amount": [3.5, None, 1.0, 2.25], "shop": ["x", "y", "x", None]})
out = step.process(kinds=np.array([0, 1, 0, 1, 0, 1, 0], np.int8), events=events,
                   labels=pl.DataFrame({"event_id": ["a", "b", "c"], "label": [1, 0, 1]}))
step.arena.compact(step.pending)
hits = {d.__name__: sum(d.stats.cache_hits.values()) for d in (_kernels._featurize, _tabular_kernels._linear_tabular)}
new = np.empty(2, np.float32)
if sys.argv[1] == "new-signature":  # float32: a signature no run caches
    _tabular_kernels._exp_diff(np.array([1.0, 2.0], np.float32), np.zeros(2, np.float32), new)
print(json.dumps({"scores": np.asarray(out.scores).tolist(), "hits": hits, "new": new.tolist()}))
"""


def _run(cache: Path, mode: str) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", _RUN, mode], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_new_process_loads_the_cached_loops_and_scores_as_the_one_that_compiled_them(tmp_path: Path) -> None:
    compiled = _run(tmp_path, "plain")
    loaded = _run(tmp_path, "plain")
    assert compiled["hits"] == {"_featurize": 0, "_linear_tabular": 0}
    assert loaded["hits"] == {"_featurize": 1, "_linear_tabular": 1}
    assert loaded["scores"] == compiled["scores"]
    assert len(set(loaded["scores"][0])) == 4  # the linear model learned between its four events


def test_a_signature_the_cache_lacks_still_compiles_after_cached_loads(tmp_path: Path) -> None:
    _run(tmp_path, "plain")
    loaded = _run(tmp_path, "new-signature")
    assert loaded["hits"] == {"_featurize": 1, "_linear_tabular": 1}
    assert loaded["new"] == pytest.approx([2.718281828, 7.389056099])
