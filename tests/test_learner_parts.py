"""The learner's parts talk through public methods: detector specs (one grammar for drift= and watch=),
the featurizer's key history, and no module of dataflows/ reaching into another class's private state."""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path

import pytest
from river.drift import ADWIN

from dataflows.features import KeyedFeaturizer
from dataflows.items import EVENT, LABEL, Batch
from dataflows.learner import RunConfig, ShardLearner
from dataflows.online import replay_job
from dataflows.validate import validate_batch
from monitoring.detectors import make_detector
from monitoring.error_drift import ErrorDriftDetector
from monitoring.error_drift import make_detector as error_detector
from monitoring.stream import MonitorConfig

ROOT = Path(__file__).resolve().parent.parent


# -- detector specs: one grammar in both positions ----------------------------------------------------
@pytest.mark.parametrize("spec", ["adwin(delta=0.01)", "page-hinkley(threshold=40, mode=up)", "kswin(alpha=0.001)"])
def test_a_detector_spec_that_works_in_watch_works_in_drift(spec):
    watched = MonitorConfig(watch=f"score={spec}")
    learner = ShardLearner(RunConfig(run_id="r", drift_detectors=(spec,)), shard=0)
    assert watched.watch == f"score={spec}"
    assert [d.label for d in learner.slots[0].detectors] == [make_detector(spec).label]


@pytest.mark.parametrize(("spec", "message"), [
    ("adwin(delta=2)", "adwin: delta must be in (0, 1), got 2"),
    ("nope", "unknown drift detector 'nope'; known: adwin, ddm"),
    ("adwin(delta=", "detector spec must look like 'name' or 'name(k=v, ...)', got 'adwin(delta='"),
    ("adwin(window=3)", "adwin: unknown parameter(s) ['window']"),
])
def test_a_bad_spec_fails_with_the_same_one_line_error_in_drift_and_watch(spec, message):
    errors = []
    for build in (lambda: RunConfig(run_id="r", drift_detectors=(spec,)),
                  lambda: MonitorConfig(watch=f"score={spec}")):
        with pytest.raises(ValueError) as err:
            build()
        errors.append(str(err.value))
    assert errors[0] == errors[1]
    assert message in errors[0] and "\n" not in errors[0]


def test_the_drift_setting_splits_specs_as_watch_does(synthetic_lake):
    job = replay_job(synthetic_lake, "linear", drift="adwin(delta=0.01), page-hinkley(threshold=40, mode=up)")
    assert job.config.drift_detectors == ("adwin(delta=0.01)", "page-hinkley(threshold=40, mode=up)")


def _errors(n: int = 6_000, flip: int = 4_000, seed: int = 5) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.random() < (0.1 if i < flip else 0.5)) for i in range(n)]


def test_the_error_stream_keeps_rivers_adwin_default_and_names_only_what_differs():
    errors = _errors()
    river = ADWIN()  # delta=0.002: what drift="adwin" has always run
    expected = []
    for i, e in enumerate(errors):
        river.update(e)
        if river.drift_detected:
            expected.append(i)
    det = error_detector("adwin")
    assert expected and det.update_many(errors) == expected
    assert error_detector("adwin(delta=0.002)").label == "adwin"
    assert error_detector("adwin(delta=0.01)").label == "adwin(delta=0.01)"


def test_drift_events_name_the_detector_by_its_spec():
    learner = ShardLearner(RunConfig(run_id="r", drift_detectors=("adwin(delta=0.05)",)), shard=0)
    items, seq = [], 0
    for i in range(3_000):
        v = float(i % 2)
        y = int(v == 1.0) if i < 2_000 else int(v == 0.0)  # the concept flips at event 2,000
        items += [(seq, EVENT, f"e{i}", i * 10**6, "k", {"v": v}), (seq + 1, LABEL, f"e{i}", y, i * 10**6, "k")]
        seq += 2
    out = learner.process(validate_batch(Batch(0, items)))
    rows = out.tables["drift_events"].to_pylist()
    assert rows and {r["detector"] for r in rows} == {"adwin(delta=0.05)"}


class _OldErrorDriftDetector:
    """Pickles as an ErrorDriftDetector did before specs: its name and the River detector, nothing else."""

    def __init__(self, name, detector):
        self.state = {"name": name, "_detector": detector}

    def __reduce_ex__(self, protocol):
        return object.__new__, (ErrorDriftDetector,), (None, self.state)


def test_an_error_detector_from_an_older_snapshot_keeps_detecting():
    errors = _errors()
    river = ADWIN()
    for e in errors[:3_000]:
        river.update(e)
    old = pickle.dumps(_OldErrorDriftDetector("adwin", river))
    reference = pickle.loads(pickle.dumps(river))
    expected = []
    for i, e in enumerate(errors[3_000:]):
        reference.update(e)
        if reference.drift_detected:
            expected.append(i)
    restored = pickle.loads(old)
    assert type(restored) is ErrorDriftDetector and restored.label == "adwin"
    assert expected and restored.update_many(errors[3_000:]) == expected


# -- the featurizer's key history through public methods --------------------------------------------------
def test_prune_forgets_the_keys_idle_longest_down_to_80_percent():
    f = KeyedFeaturizer(max_keys=10)
    for i in range(10):
        f.learn_one({}, key=f"k{i}", event_time_us=(100 - i) * 10**6)  # k9 idle longest
    f.learn_label(key="k0", y=True)
    assert f.n_keys == 10 and f.label_totals == (1, 1)
    f.prune()
    assert f.n_keys == 8 and f.keys_forgotten == 2
    assert f.key_state("k9") is None and f.key_state("k8") is None
    assert f.key_state("k0") == (1, 100 * 10**6, 1, 1, 1.0)
    f.set_key_state("k9", (3, 5, 1, 0, 0.0))
    assert f.key_state("k9") == (3, 5, 1, 0, 0.0) and f.n_keys == 9
    f.set_key_states(["new", "k0"], [(1, 7, 0, 0, None), (2, 8, 1, 1, 1.0)])
    assert f.key_states(["new", "k0", "gone"]) == [[1, 7, 0, 0, None], [2, 8, 1, 1, 1.0], None]


# -- no reaching into other classes' private state -----------------------------------------------------------
# Private state of the featurizer, the detectors (ours and River's) and the learner that the learner's
# parts once read directly; each has a public method or attribute now.
_PRIVATE = ("_keys", "_prune", "_n_labels", "_n_positive", "_detector", "_helper", "_drift_detected", "_reset",
            "_arena", "_col_layout", "_arrivals", "_clock_us", "_undo", "_checkpoint", "_expire", "_build")
_REACH = re.compile(r"\b(?!self\b|cls\b)([A-Za-z_]\w*)\.(" + "|".join(_PRIVATE) + r")\b")


def _reaches(source: str) -> list[str]:
    return [m.group(0) for m in _REACH.finditer(source)]


def test_the_reach_check_finds_a_private_attribute_of_another_object():
    assert _reaches("keys = featurizer._keys\nfor L in _alarms(det._detector, errors):") == [
        "featurizer._keys", "det._detector"]
    assert _reaches("self._keys[key] = state\nlearner.expiry.clock_us") == []


def test_no_module_of_dataflows_reads_another_objects_private_state():
    found = {str(path.relative_to(ROOT)): hits for path in sorted((ROOT / "dataflows").rglob("*.py"))
             if (hits := _reaches(path.read_text()))}
    assert found == {}
