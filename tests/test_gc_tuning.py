"""The collector settings of the dataflow process (dataflows.gc_tuning)."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from dataflows.gc_tuning import THRESHOLDS, freeze_survivors, tune_gc


@pytest.fixture
def restore_thresholds():
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_tune_gc_raises_thresholds_but_never_lowers_them(restore_thresholds):
    gc.set_threshold(700, 10, 10)
    assert tune_gc((50_000, 20, 10)) == (700, 10, 10)
    assert gc.get_threshold() == (50_000, 20, 10)
    gc.set_threshold(100_000, 5, 50)
    tune_gc((50_000, 20, 10))
    assert gc.get_threshold() == (100_000, 20, 50)


def test_tune_gc_leaves_a_collector_switched_off_by_threshold_zero_off(restore_thresholds):
    gc.set_threshold(0, 10, 10)
    tune_gc()
    assert gc.get_threshold() == (0, 10, 10)


@pytest.mark.parametrize("bad", [(0, 20, 10), (50_000, 20), (1.5, 20, 10)])
def test_tune_gc_rejects_bad_thresholds(bad, restore_thresholds):
    with pytest.raises(ValueError, match="three integers"):
        tune_gc(bad)


def test_building_a_flow_tunes_the_collector_of_its_process(synthetic_lake, subprocess_env):
    code = ("import gc; from dataflows.online import build_flow; before = gc.get_threshold(); "
            f"build_flow(lake={synthetic_lake!r}); print(before); print(gc.get_threshold())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=subprocess_env).stdout.splitlines()
    assert out[-2:] == ["(700, 10, 10)", str(THRESHOLDS)]


def test_freeze_survivors_takes_what_is_alive_out_of_every_later_collection():
    # A serving process freezes what its start-up (and each snapshot) left alive, so a full collection
    # while a request waits walks only what came after (~100 ms per full collection before, at ~100k
    # requests served).
    state = [{"answer": [i]} for i in range(2_000)]
    ids = {id(x) for x in state}
    try:
        assert sum(id(o) in ids for o in gc.get_objects()) == len(state)
        freeze_survivors()
        assert gc.get_freeze_count() >= len(state)
        assert sum(id(o) in ids for o in gc.get_objects()) == 0
        later = [{"answer": [-1]}]
        assert any(o is later[0] for o in gc.get_objects())
        freeze_survivors(collect=False)  # what came after too, without a collection first
        assert not any(o is later[0] for o in gc.get_objects())
    finally:
        gc.unfreeze()
