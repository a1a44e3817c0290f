"""An open metrics window keeps its labels and scores in few pieces, whatever the number of batches.

A live run's windows (one day by default) stay open for a day of small batches; a recovery snapshot pickles
them every few seconds, so a piece per batch made each snapshot longer with every batch. The window's row at
its close must be the row of the same labels in one batch.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from monitoring.prequential import TaskPrequential, WindowedPrequential

DAY_US = 86_400 * 10**6
T0 = 1_767_225_600 * 10**6


def _batches(n_batches: int, seed: int = 7) -> list[int]:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 20, n_batches).tolist()


def _feed(metrics, sizes: list[int], make) -> None:
    at = 0
    for m in sizes:
        t = T0 + (at + np.arange(m)) * 1000  # one window: a second of event time in all
        metrics.update_many(t, t + 500, *make(at, m))
        at += m


def _binary(at: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(at)
    return rng.random(m) < 0.3, rng.random(m)


def _pieces(metrics) -> int:
    (win,) = metrics._open.values()
    return len(win.labels) if hasattr(win, "labels") else len(win.parts)


def test_a_binary_window_of_thousands_of_batches_is_a_few_arrays_and_closes_to_the_same_row():
    sizes = _batches(5_000)
    many = WindowedPrequential(window_us=DAY_US)
    _feed(many, sizes, _binary)
    assert _pieces(many) <= 16 + 16, "pieces grow with the log of the batches, not with the batches"
    one = WindowedPrequential(window_us=DAY_US)
    ys, scores = zip(*(_binary(at, m) for at, m in zip(np.cumsum([0, *sizes[:-1]]).tolist(), sizes, strict=True)),
                     strict=True)
    t = T0 + np.arange(sum(sizes)) * 1000
    one.update_many(t, t + 500, np.concatenate(ys), np.concatenate(scores))
    restored = pickle.loads(pickle.dumps(many))  # (what a snapshot keeps)
    got, want = many.flush(), one.flush()
    assert restored.flush() == got and len(got) == len(want) == 1
    assert got[0]["roc_auc"] == want[0]["roc_auc"], "the same labels and scores in the same order"
    assert got[0] == pytest.approx(want[0], rel=1e-12)  # (sums added batch by batch)


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_a_task_window_keeps_few_pieces_and_the_same_row(task):
    def make(at: int, m: int):
        rng = np.random.default_rng(at)
        if task == "regression":
            return rng.normal(size=m), rng.normal(size=m)
        ys = rng.choice(["a", "b", "c"], m).tolist()
        return ys, rng.choice(["a", "b", "c"], m).tolist(), rng.random(m)

    sizes = _batches(3_000, seed=3)
    many = TaskPrequential(task=task, window_us=DAY_US)
    _feed(many, sizes, make)
    assert _pieces(many) <= 16 + 16
    one = TaskPrequential(task=task, window_us=DAY_US)
    cols = list(zip(*(make(at, m) for at, m in zip(np.cumsum([0, *sizes[:-1]]).tolist(), sizes, strict=True)),
                    strict=True))
    t = T0 + np.arange(sum(sizes)) * 1000
    one.update_many(t, t + 500, *(np.concatenate(c) if isinstance(c[0], np.ndarray) else sum(c, []) for c in cols))
    got, want = many.flush(), one.flush()
    assert len(got) == len(want) == 1
    for key, value in want[0].items():
        assert got[0][key] == pytest.approx(value, rel=1e-12), key


@pytest.mark.parametrize("batch", [1, 5, 40])
def test_a_live_batchs_labels_give_the_rows_the_numpy_steps_give(batch, monkeypatch):
    # Batches up to SMALL labels run on Python numbers; the rows must be the very doubles of the numpy steps:
    # windows closing mid-batch, labels arriving after their window closed, several windows in one batch.
    import monitoring.prequential as prequential

    rng = np.random.default_rng(3)
    n = 3_000
    t = T0 + np.sort(rng.integers(0, 600, n)) * 10**6 + rng.integers(-40, 1, n) * 10**6  # events out of order
    delay = rng.integers(0, 90, n) * 10**6
    order = np.argsort(t + delay, kind="stable")  # labels in the order they arrive
    ev, lb = t[order], (t + delay)[order]
    ys, scores = rng.random(n)[order] < 0.3, rng.random(n)[order]
    scores[::97] = 0.5  # the threshold itself, and ties

    def rows() -> tuple[list, WindowedPrequential]:
        m = WindowedPrequential(window_us=30 * 10**6, grace_us=10 * 10**6)
        out = []
        for lo in range(0, n, batch):
            out += [(lo + pos, row) for pos, row in m.update_many(ev[lo:lo + batch], lb[lo:lo + batch],
                                                                   ys[lo:lo + batch], scores[lo:lo + batch])]
        return out + [(-1, row) for row in m.flush()], m

    few, a = rows()
    monkeypatch.setattr(prequential, "SMALL", 0)
    bulk, b = rows()
    assert len(few) > 15 and sum(r["n_late_labels"] for _, r in few) > 0
    assert few == bulk  # (floats compared exactly)
    assert (a.cum_n, a.cum_correct, a.cum_ll, a._clock) == (b.cum_n, b.cum_correct, b.cum_ll, b._clock)
