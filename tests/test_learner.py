from __future__ import annotations

import hashlib
import pickle

import pytest

from dataflows.items import EVENT, LABEL, Batch
from dataflows.learner import RunConfig, ShardLearner
from dataflows.validate import validate_batch

S = 1_000_000


def _ev(seq, eid, t, x=None, key="k"):
    return (seq, EVENT, eid, t * S, key, x if x is not None else {"v": float(seq % 3)})


def _lb(seq, eid, y, t):
    return (seq, LABEL, eid, y, t * S, "k")


def _run(learner, items):
    out = learner.process(validate_batch(Batch(0, items)))
    return {name: t.to_pylist() for name, t in out.tables.items()}


def test_config_is_validated():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        RunConfig(run_id="r", models=("nope",))
    with pytest.raises(ValueError, match="checkpoint_every must be >= 1, got 0"):
        RunConfig(run_id="r", checkpoint_every=0)
    with pytest.raises(ValueError, match="distinct"):
        RunConfig(run_id="r", models=("linear", "linear"))


def test_predict_then_learn_with_champion_and_challenger():
    learner = ShardLearner(RunConfig(run_id="r", models=("linear", "tree"), checkpoint_every=2), shard=0)
    out = _run(learner, [_ev(0, "a", 0), _ev(1, "b", 1), _lb(2, "a", 1, 2), _lb(3, "b", 0, 3), _ev(4, "c", 4)])
    preds = sorted(out["predictions"], key=lambda p: (p["seq"], p["role"] != "champion"))
    assert [(p["event_id"], p["model"], p["role"]) for p in preds] == [
        ("a", "linear", "champion"), ("a", "tree", "challenger"),
        ("b", "linear", "champion"), ("b", "tree", "challenger"),
        ("c", "linear", "champion"), ("c", "tree", "challenger"),
    ]
    # before any learning, the version is the initial checkpoint; after 2 learns, the next one
    assert preds[0]["model_version"] == "linear:s0:0"
    assert preds[4]["model_version"] == "linear:s0:2"
    assert preds[0]["features"] == preds[1]["features"]
    learns = sorted(out["learn_log"], key=lambda r: (r["seq"], r["model"]))
    assert [(r["event_id"], r["model"], r["label"], r["learn_order"]) for r in learns] == [
        ("a", "linear", 1, 1), ("a", "tree", 1, 1), ("b", "linear", 0, 2), ("b", "tree", 0, 2)]
    # the learn log keeps the score the model gave at prediction time
    assert learns[0]["score"] == preds[0]["score"]
    ckpts = out["checkpoints"]
    assert [(c["checkpoint_id"], c["n_learned"]) for c in ckpts] == [
        ("linear:s0:0", 0), ("tree:s0:0", 0), ("linear:s0:2", 2), ("tree:s0:2", 2)]
    for c in ckpts:
        assert hashlib.sha256(c["model_bytes"]).hexdigest() == c["sha256"]
    restored = pickle.loads(ckpts[2]["model_bytes"])
    assert restored.predict_proba_one({"v": 1.0}) == learner.slots[0].estimator.predict_proba_one({"v": 1.0})


def test_bad_items_become_dead_letters_and_are_counted():
    learner = ShardLearner(RunConfig(run_id="r"), shard=0)
    items = [
        _ev(0, "a", 0),
        _ev(1, "a", 1),  # duplicate id
        (2, EVENT, "b", 2 * S, "k", {"v": float("inf")}),  # non-finite
        (3, EVENT, "", 3 * S, "k", {}),  # empty id
        (4, EVENT, "c", "yesterday", "k", {}),  # bad time
        (5, EVENT, "d", 5 * S, "k", {"v": [1, 2]}),  # nested value
        _lb(6, "zzz", 1, 6),  # unknown event
        _lb(7, "a", 1, 7),
        _lb(8, "a", 1, 8),  # twice
        _lb(9, "a", 3, 9),  # not a class
    ]
    out = _run(learner, items)
    dead = {d["seq"]: (d["step"], d["reason"]) for d in out["dead_letters"]}
    assert dead == {
        1: ("predict", "duplicate event_id"),
        2: ("validate", "non-finite value in field 'v'"),
        3: ("validate", "event_id must be a non-empty string, got ''"),
        4: ("validate", "event_time must be an integer of microseconds, got 'yesterday'"),
        5: ("validate", "field 'v' must be a number, string, bool or null, got list"),
        6: ("learn", "label for an unknown event"),
        8: ("learn", "label arrived twice"),
        9: ("validate", "label must be 0 or 1, got 3"),
    }
    n_events = sum(1 for i in items if i[1] == EVENT)
    n_dead_events = sum(1 for s in dead if items[s][1] == EVENT)
    assert len(out["predictions"]) + n_dead_events == n_events
    assert '"payload": {"v": "inf"}' in next(d["raw"] for d in out["dead_letters"] if d["seq"] == 2)


def test_metrics_windows_close_on_the_label_clock_and_at_the_end():
    cfg = RunConfig(run_id="r", window_us=10 * S, grace_us=5 * S)
    learner = ShardLearner(cfg, shard=0)
    items = []
    seq = 0
    for i in range(30):
        items.append(_ev(seq, f"e{i}", i))
        seq += 1
        items.append(_lb(seq, f"e{i}", i % 2, i + 1))
        seq += 1
    out = _run(learner, items)
    # windows [0,10) and [10,20) are closed by labels at >= 15 s and >= 25 s
    assert [(m["window_start"].timestamp(), m["n"]) for m in out["metrics"]] == [(0.0, 10), (10.0, 10)]
    final = {t: tb.to_pylist() for t, tb in learner.finish().tables.items()}
    assert [(m["window_start"].timestamp(), m["n"], m["cum_n"]) for m in final["metrics"]] == [(20.0, 10, 30)]
    assert [(c["n_learned"], c["last_event_id"]) for c in final["checkpoints"]] == [(30, "e29")]


def test_learner_state_pickles_midstream():
    learner = ShardLearner(RunConfig(run_id="r"), shard=0)
    _run(learner, [_ev(0, "a", 0), _ev(1, "b", 1), _lb(2, "a", 1, 2)])
    clone = pickle.loads(pickle.dumps(learner))
    rest = [_lb(3, "b", 0, 3), _ev(4, "c", 4)]
    assert _run(clone, rest)["predictions"] == _run(learner, rest)["predictions"]


class _Fragile:
    """A model that fails on one input, as a buggy user model would."""

    def predict_proba_one(self, x):
        if "boom" in x:
            raise ArithmeticError("cannot score boom")
        return {True: 0.25, False: 0.75}

    def learn_one(self, x, y):
        if "bad_learn" in x:
            raise ValueError("cannot learn this")


def test_a_model_error_dead_letters_the_item_and_the_stream_goes_on():
    from dataflows.models import SPECS, ModelSpec, register

    register(ModelSpec("fragile", "fails on purpose", lambda seed: _Fragile()))
    try:
        learner = ShardLearner(RunConfig(run_id="r", models=("fragile",)), shard=0)
        out = _run(learner, [
            _ev(0, "a", 0, {"boom": 1.0}), _ev(1, "b", 1), _ev(2, "c", 2, {"bad_learn": 1.0}),
            _lb(3, "b", 1, 3), _lb(4, "c", 1, 4), _ev(5, "d", 5)])
    finally:
        SPECS.pop("fragile")
    assert [p["event_id"] for p in out["predictions"]] == ["b", "c", "d"]
    assert [r["event_id"] for r in out["learn_log"]] == ["b"]
    assert {(d["seq"], d["step"], d["reason"]) for d in out["dead_letters"]} == {
        (0, "predict", "ArithmeticError: cannot score boom"),
        (4, "learn", "ValueError: cannot learn this"),
    }


def test_events_waiting_too_long_for_a_label_expire_and_are_recorded():
    day = 86_400
    learner = ShardLearner(RunConfig(run_id="r", label_ttl_us=2 * day * S), shard=0)
    out = _run(learner, [_ev(0, "old", 0), _ev(1, "kept", day), _lb(2, "kept", 1, day + 1),
                         _ev(3, "new", 3 * day)])
    assert [(r["event_id"], r["seq"]) for r in out["expired"]] == [("old", 3)]
    assert out["expired"][0]["expired_at"].timestamp() == 3 * day
    assert "old" not in learner.pending and "new" in learner.pending
    late = _run(learner, [_lb(4, "old", 1, 3 * day + 5)])
    assert [d["reason"] for d in late["dead_letters"]] == ["label arrived after its event expired"]


def test_without_ttl_nothing_expires():
    learner = ShardLearner(RunConfig(run_id="r", label_ttl_us=None), shard=0)
    out = _run(learner, [_ev(0, "old", 0), _ev(1, "new", 10**6)])
    assert "expired" not in out and len(learner.pending) == 2


def test_drift_detector_alarms_soon_after_the_concept_flips():
    learner = ShardLearner(RunConfig(run_id="r", drift_detectors=("adwin",)), shard=0)
    items, seq = [], 0
    for i in range(6_000):
        v = float(i % 2)
        y = int(v == 1.0) if i < 4_000 else int(v == 0.0)  # the concept flips at event 4,000
        items.append(_ev(seq, f"e{i}", i, {"v": v}))
        items.append(_lb(seq + 1, f"e{i}", y, i))
        seq += 2
    out = _run(learner, items)
    alarms = [d["position"] for d in out.get("drift_events", []) if d["model"] == "linear"]
    assert alarms and all(d["detector"] == "adwin" and d["signal"] == "error" for d in out["drift_events"])
    after = [p for p in alarms if p > 4_000]
    assert after and after[0] - 4_000 < 300
    assert not [p for p in alarms if 500 < p < 4_000], "no false alarm while the concept is stable"
    with pytest.raises(ValueError, match="unknown drift detector 'nope'"):
        RunConfig(run_id="r", drift_detectors=("nope",))
