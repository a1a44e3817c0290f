"""Drift detectors by name, the drift monitor, the new-feature rate and detection-quality scoring."""

from __future__ import annotations

import pickle
import random

import numpy as np
import polars as pl
import pytest

from dataflows.bench.drift_quality import main
from lake.table import append, conform, read_table
from monitoring.detectors import DETECTORS, Detector, make_detector, parse_spec, split_specs
from monitoring.monitor import Alarm, DriftMonitor, NewFeatureRate, drift_events_table, parse_watch
from monitoring.quality import evaluate_known_drifts, score_alarms


def error_stream(n: int = 20_000, drift: int = 10_000, before: float = 0.1, after: float = 0.4,
                 seed: int = 3) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.random() < (before if i < drift else after)) for i in range(n)]


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_registered_detector_builds_with_defaults_and_pickles(name):
    det = make_detector(name)
    n = 600 if name == "kswin" else 3_000  # kswin costs ~230 us per item
    stream = error_stream(n, drift=n // 2, before=0.05, after=0.6)
    det.update_many(stream[: n // 3])
    clone = pickle.loads(pickle.dumps(det))
    rest = stream[n // 3:]
    hits = det.update_many(rest)
    assert clone.update_many(rest) == hits
    assert hits, f"{name} missed a jump of the error rate from 5% to 60%"


@pytest.mark.parametrize(("spec", "message"), [
    ("nope", "unknown drift detector 'nope'; known: adwin, ddm"),
    ("adwin(delta=0)", "adwin: delta must be in (0, 1), got 0"),
    ("adwin(delta=1.5)", "adwin: delta must be in (0, 1), got 1.5"),
    ("adwin(clock=0)", "adwin: clock must be an integer >= 1, got 0"),
    ("adwin(clock=2.5)", "adwin: clock must be an integer >= 1, got 2.5"),
    ("adwin(window=3)", "adwin: unknown parameter(s) ['window']"),
    ("page-hinkley(mode=sideways)", "page-hinkley: mode must be one of 'up', 'down', 'both', got 'sideways'"),
    ("page-hinkley(threshold=-1)", "page-hinkley: threshold must be > 0, got -1"),
    ("kswin(window_size=50, stat_size=50)", "kswin: stat_size must be < window_size, got 50 >= 50"),
    ("ddm(warning_threshold=3.0, drift_threshold=2.0)", "ddm: drift_threshold must be >= warning_threshold"),
    ("eddm(alpha=0.8, beta=0.9)", "eddm: alpha must be >= beta, got 0.8 < 0.9"),
    ("hddm-a(two_sided_test=1)", "hddm-a: two_sided_test must be True or False, got 1"),
    ("adwin(cooldown=-1)", "adwin: cooldown must be an integer >= 0, got -1"),
    ("adwin(delta=", "detector spec must look like"),
    ("adwin(0.1)", "expected k=v, got '0.1'"),
])
def test_bad_configuration_fails_at_construction_with_the_value(spec, message):
    with pytest.raises(ValueError) as err:
        make_detector(spec)
    assert message in str(err.value)


def test_spec_strings_round_trip_through_the_label():
    det = make_detector("page-hinkley(threshold=40, mode=up)")
    assert det.label == "page-hinkley(mode='up', threshold=40.0)"
    assert det.params["threshold"] == 40.0 and det.params["delta"] == 0.005
    assert make_detector("adwin").label == "adwin"
    name, params = parse_spec(det.label)
    assert Detector(name, **params).label == det.label
    assert split_specs("adwin, kswin(alpha=0.01, window_size=200),ddm") == [
        "adwin", "kswin(alpha=0.01, window_size=200)", "ddm"]


def test_adwin_finds_an_abrupt_rise_in_the_error_rate_and_stays_quiet_before():
    hits = make_detector("adwin").update_many(error_stream())
    assert hits and 10_000 <= hits[0] < 11_000
    assert all(h >= 10_000 for h in hits)


def test_cooldown_reports_one_alarm_per_incident():
    stream = error_stream(30_000, drift=10_000) + error_stream(10_000, drift=0, after=0.9)
    raw = make_detector("page-hinkley(threshold=10.0)").update_many(stream)
    cooled = make_detector("page-hinkley(threshold=10.0, cooldown=5000)").update_many(stream)
    assert len(cooled) < len(raw)
    assert all(b - a > 5_000 for a, b in zip(cooled, cooled[1:], strict=False))
    assert set(cooled) <= set(raw)


def test_adwin_batch_leaves_the_detector_river_leaves():
    # update_many drives ADWIN's window directly: the alarms and the state (pickled: a checkpoint's bytes)
    # must be those of River's own update loop, also across alarms (a reset) and batch boundaries.
    stream = error_stream(12_000, drift=4_000, before=0.05, after=0.5) + error_stream(8_000, drift=4_000,
                                                                                      before=0.5, after=0.1)
    ref = make_detector("adwin")._det  # River's ADWIN with the defaults, fed by River's own method
    ref_hits = []
    for i, x in enumerate(stream):
        ref.update(x)
        if ref.drift_detected:
            ref_hits.append(i)
    det = make_detector("adwin")
    hits = []
    for a in range(0, len(stream), 997):
        hits += [a + i for i in det.update_many(stream[a: a + 997])]
    assert hits == ref_hits and len(hits) >= 2
    assert pickle.dumps(det._det) == pickle.dumps(ref)


@pytest.mark.parametrize("spec", ["adwin", "fhddm", "page-hinkley(cooldown=500, threshold=10.0)"])
def test_one_value_at_a_time_gives_the_batch_alarms(spec):
    stream = error_stream(6_000, drift=3_000, before=0.05, after=0.5)
    one = make_detector(spec)
    assert [i for i, x in enumerate(stream) if one.update(x)] == make_detector(spec).update_many(stream) != []


def test_nan_values_are_skipped():
    det = make_detector("adwin")
    stream = error_stream()
    with_gaps = [x if i % 3 else float("nan") for i, x in enumerate(stream)]
    plain = make_detector("adwin").update_many([x for x in with_gaps if x == x])
    hits = det.update_many(with_gaps)
    kept = [i for i, x in enumerate(with_gaps) if x == x]
    assert [kept.index(h) for h in hits] == plain


# --------------------------------------------------------------------------- monitor


def _batch(n: int, drift: int, seed: int = 5) -> dict:
    rng = random.Random(seed)
    ys = [rng.random() < 0.5 for _ in range(n)]
    # a model right 90% of the time, then 60%
    scores = [(0.8 if y else 0.2) if rng.random() < (0.9 if i < drift else 0.6) else (0.2 if y else 0.8)
              for i, y in enumerate(ys)]
    xs = [{"a": rng.gauss(0 if i < drift else 2, 1), "b": rng.random(), "c": "x"} for i in range(n)]
    return {"ys": ys, "scores": scores, "xs": xs, "event_ids": [f"e{i}" for i in range(n)],
            "event_times": [1_700_000_000_000_000 + i * 1_000_000 for i in range(n)], "seqs": list(range(n))}


WATCH = {"error": ["adwin", "ddm"], "log_loss": ["page-hinkley(threshold=100.0)"], "feature:a": ["adwin"],
         "score": ["kswin(alpha=0.0001)"]}


def test_monitor_batches_give_the_same_alarms_as_one_at_a_time_and_pickle():
    data = _batch(6_000, 3_000)
    whole = DriftMonitor(WATCH).update_many(**data)
    one = DriftMonitor(WATCH)
    singles = []
    for i in range(6_000):
        if i == 2_500:
            one = pickle.loads(pickle.dumps(one))
        singles += one.update_one(y=data["ys"][i], score=data["scores"][i], x=data["xs"][i],
                                  event_id=data["event_ids"][i], event_time=data["event_times"][i], seq=i)
    chunked = DriftMonitor(WATCH)
    parts = []
    for lo in range(0, 6_000, 700):
        parts += chunked.update_many(**{k: v[lo:lo + 700] for k, v in data.items()})
    key = sorted
    assert key(whole) == key(singles) == key(parts)
    found = {(a.detector, a.signal) for a in whole if a.position > 3_000}
    assert ("adwin", "error") in found and ("adwin", "feature:a") in found
    assert not [a for a in whole if a.signal == "feature:a" and a.position <= 3_000]
    first = next(a for a in whole if a.signal == "error" and a.detector == "adwin")
    assert first.event_id == f"e{first.position - 1}" and first.seq == first.position - 1
    assert first.event_time == data["event_times"][first.position - 1]


def test_monitor_validates_its_configuration():
    with pytest.raises(ValueError, match="ddm takes 0/1 input only: it can watch 'error', not 'log_loss'"):
        DriftMonitor({"log_loss": ["ddm"]})
    with pytest.raises(ValueError, match="signal must be 'error', 'log_loss', 'score', 'new_features' or "
                                         "'feature:NAME', got 'loss'"):
        DriftMonitor({"loss": ["adwin"]})
    with pytest.raises(ValueError, match="threshold must be in"):
        DriftMonitor(threshold=1.5)
    with pytest.raises(ValueError, match="signal 'error' has no detector"):
        DriftMonitor({"error": []})
    with pytest.raises(ValueError, match=r"need 3 labels \(ys\)"):
        DriftMonitor().update_many(scores=[0.1] * 3, event_ids=["a", "b", "c"], event_times=[1, 2, 3])
    assert parse_watch("error=adwin,ddm; feature:x=kswin(alpha=0.01, window_size=200)") == {
        "error": ["adwin", "ddm"], "feature:x": ["kswin(alpha=0.01, window_size=200)"]}


def test_feature_signal_skips_items_without_the_feature():
    data = _batch(4_000, 2_000)
    data["xs"] = [x if i % 2 else {} for i, x in enumerate(data["xs"])]
    alarms = DriftMonitor({"feature:a": ["adwin"]}).update_many(**data)
    assert alarms and all(a.position > 2_000 and a.position % 2 == 0 for a in alarms)


def test_kswin_is_seeded():
    data = _batch(3_000, 1_500)
    a = DriftMonitor({"feature:a": ["kswin(alpha=0.001)"]}, seed=1).update_many(**data)
    b = DriftMonitor({"feature:a": ["kswin(alpha=0.001)"]}, seed=1).update_many(**data)
    assert a == b and a


def test_new_feature_rate_signals_a_feature_evolving_stream():
    rng = random.Random(2)
    vocab = [f"t{i}" for i in range(50)]
    xs = [{w: 1.0 for w in rng.sample(vocab, 5)} for _ in range(20_000)]
    xs += [{f"new{i}_{j}": 1.0 for j in range(3)} | {rng.choice(vocab): 1.0} for i in range(5_000)]
    rate = NewFeatureRate(window=500)
    closed = rate.update_many(xs)
    assert len(closed) == 50 and closed[0] == (499, 1.0)
    assert max(r for _, r in closed[1:40]) == 0.0 and min(r for _, r in closed[40:]) > 0.9
    one = NewFeatureRate(window=500)
    assert [(i, r) for i, x in enumerate(xs) if (r := one.update(x)) is not None] == closed
    n = len(xs)
    alarms = DriftMonitor({"new_features": ["page-hinkley(threshold=1.0, min_instances=5, mode=up)"]},
                          new_feature_window=500).update_many(xs=xs, event_ids=[None] * n, event_times=range(n))
    assert [a.position for a in alarms if a.position <= 20_000] == [] and alarms
    assert alarms[0].position % 500 == 0
    with pytest.raises(ValueError, match="window must be an integer >= 1, got 0"):
        NewFeatureRate(0)


def test_alarms_become_drift_events_rows(tmp_path):
    alarms = [Alarm("adwin", "error", 12, "e11", 1_700_000_000_000_000, 40),
              Alarm("adwin", "feature:a", 13, None, 1_700_000_001_000_000)]
    table = drift_events_table(alarms, run_id="r1", shard=2, model="linear", seq=41)
    conform("drift_events", table)
    append(str(tmp_path), "drift_events", table, writer_id="t", position=1)
    back = read_table(str(tmp_path), "drift_events").sort("position")
    assert back["seq"].to_list() == [40, 41] and back["shard"].to_list() == [2, 2]
    assert back["event_time"][0].isoformat() == "2023-11-14T22:13:20+00:00"
    with pytest.raises(ValueError, match="has no seq"):
        drift_events_table(alarms, run_id="r1")


# --------------------------------------------------------------------------- scoring


def test_scoring_counts_delays_misses_repeats_and_false_alarms():
    q = score_alarms(alarms=[5, 1_050, 1_060, 1_900, 3_500, 9_000], positions=range(10_000),
                     drifts=[1_000, 3_000, 6_000], max_delay=600)
    assert q.delays == [50, 500]  # 1,050 finds the drift at 1,000; 3,500 the one at 3,000
    assert q.repeats == 1  # 1,060
    assert q.missed == 1  # nothing within 600 after 6,000
    assert q.false_alarms == 3  # 5, 1,900, 9,000
    assert q.false_per_100k == pytest.approx(30.0)
    assert q.alarms == 6


def test_scoring_counts_delay_in_labels_of_the_new_concept_when_labels_arrive_out_of_order():
    rng = random.Random(0)
    # label i belongs to event positions[i]; labels arrive up to 50 events late
    order = sorted(range(5_000), key=lambda i: i + rng.randint(0, 50))
    alarm_at = next(k for k, p in enumerate(order) if p >= 2_000) + 1  # the first label of the new concept
    q = score_alarms(alarms=[alarm_at + 99], positions=order, drifts=[2_000])
    seen_new = sum(1 for p in order[: alarm_at + 99] if p >= 2_000)
    assert q.delays == [seen_new] and 1 <= seen_new <= 100


def test_scoring_rejects_alarms_outside_the_stream():
    with pytest.raises(ValueError, match=r"alarm positions must be in \[1, 10\], got \[11\]"):
        score_alarms(alarms=[11], positions=range(10), drifts=[5])


def test_quality_of_detectors_on_a_stream_with_a_known_drift():
    stream = error_stream()
    frame = pl.DataFrame({"label": [1] * len(stream), "score": [0.0 if e else 1.0 for e in stream],
                          "offset": list(range(len(stream)))})
    results = {q.detector: q for q in evaluate_known_drifts(frame, [10_000], ["adwin", "ddm"], ["error", "log_loss"])}
    assert set(results) == {"adwin", "ddm"}  # ddm runs on error only
    adwin = results["adwin"]
    assert adwin.missed == 0 and adwin.false_alarms == 0 and adwin.delays[0] < 1_000
    assert np.isfinite(adwin.us_per_item)


@pytest.mark.slow
def test_quality_command_scores_a_replay_of_agrawal_drift(tmp_path, capsys):
    lake = str(tmp_path / "lake")
    assert main(["--lake", lake, "--n", "8000", "--seed", "7", "--detectors", "adwin,ddm", "--signals", "error"]) == 0
    out = capsys.readouterr().out
    assert "known drifts at event positions [2000, 4000, 6000]" in out
    rows = [line for line in out.splitlines() if line.startswith("| linear |")]
    assert len(rows) == 2 and rows[0].startswith("| linear | adwin | error | ")
    assert read_table(lake, "learn_log").height == 8_000
