"""Summary drift signals on the urls stream: new-token rate, token-frequency divergence, loss."""

from __future__ import annotations

import pickle

import numpy as np
import polars as pl
import pytest

from dataflows.features import KeyedFeaturizer
from dataflows.models import get_spec, score_one
from lake.ingest import ingest_scenario
from lake.scenarios.urls import urls
from monitoring.monitor import DriftMonitor
from monitoring.tokens import TokenDriftMonitor, js_divergence, url_signals, windows_frame

WINDOW = 2_000


@pytest.mark.parametrize("seed", [2, 11])
def test_a_campaign_appearing_moves_the_token_signals_and_the_loss(seed):
    f = urls(n=40_000, seed=seed, campaigns=1)
    start = f.drifts["position"][0]
    assert 20_000 < start < 30_000  # after the monitor's warm-up, before the end
    mon = TokenDriftMonitor(window=WINDOW)
    for chunk in range(0, 40_000, 7_000):  # batch boundaries do not matter
        mon.update_many(f.events["url"].slice(chunk, 7_000))
    w = windows_frame(mon).with_columns(first=pl.col("position") - WINDOW)
    before = w.filter((pl.col("position") <= start) & (pl.col("first") >= 6_000))
    hit = w.filter((pl.col("position") > start) & (pl.col("first") <= start + WINDOW))  # the two after it
    # the window the campaign fills first: the divergence jumps above anything before it, the
    # new-token rate (falling as the vocabulary warms up) above its recent level
    js = before["token_js"]
    assert hit["token_js"].max() > js.max() + 8 * js.std()
    assert hit["new_token_rate"].max() > before["new_token_rate"][-1] + 0.02
    # the spike rule alarms on the divergence within two windows of the start, never before it
    js_alarms = [a.position for a in mon.alarms if a.signal == "token_js"]
    assert js_alarms and start < js_alarms[0] <= start + 2 * WINDOW + WINDOW
    assert not [a for a in mon.alarms if a.position <= start]

    # loss: an online linear model on hashed tokens is surprised by the campaign's fresh tokens
    labels = dict(zip(f.labels["event_id"], f.labels["label"], strict=True))
    feat = KeyedFeaturizer(hash_fields=["url"], time_features=False)
    model = get_spec("linear-hash").build(seed=0)
    ys, scores = [], []
    for eid, key, url in f.events.select("event_id", "key", "url").iter_rows():
        x = feat.transform_one({"url": url}, key=key, event_time_us=0)
        scores.append(score_one(model, x))
        y = labels[eid] == 1
        ys.append(y)
        model.learn_one(x, y)
        feat.learn_one({"url": url}, key=key, event_time_us=0)
        feat.learn_label(key=key, y=y)
    p = np.clip(np.where(ys, scores, 1 - np.asarray(scores)), 1e-15, 1)
    loss = -np.log(p)
    assert loss[start:start + 200].mean() > 5 * loss[start - 4_000:start].mean()
    alarms = DriftMonitor({"log_loss": ["adwin"]}).update_many(
        ys=ys, scores=scores, event_ids=f.events["event_id"].to_list(), event_times=list(range(40_000)))
    assert any(start < a.position <= start + WINDOW for a in alarms)


def test_memory_is_bounded_and_state_pickles():
    mon = TokenDriftMonitor(window=500, n_buckets=256, seen_bits=2**16, horizon=3)
    f = urls(n=6_000, seed=4)
    mon.update_many(f.events["url"])
    assert len(mon.windows) == 12
    # fresh tokens keep coming (ids, new sites), so the rate never drops to zero
    assert min(w.new_token_rate for w in mon.windows) > 0.05
    clone = pickle.loads(pickle.dumps(mon))
    more = f.events["url"].head(500)
    assert clone.update_many(more) == mon.update_many(more)
    assert mon._seen[0].nbytes == 2**16  # two generations of seen_bits, whatever the vocabulary


def test_js_divergence_and_arguments():
    assert js_divergence(np.array([5, 5]), np.array([1, 1])) == 0.0
    assert js_divergence(np.array([1, 0]), np.array([0, 1])) == 1.0
    assert 0.0 < js_divergence(np.array([3, 1]), np.array([1, 3])) < 1.0
    with pytest.raises(ValueError, match="window must be an integer >= 1, got 0"):
        TokenDriftMonitor(window=0)
    with pytest.raises(ValueError, match="unknown drift detector 'nope'; known: spike, adwin"):
        TokenDriftMonitor(detectors=["nope"])


def test_url_signals_from_the_lake(tmp_path):
    lake = str(tmp_path / "lake")
    ingest_scenario(lake, "urls", n=12_000, seed=3)
    frame, alarms = url_signals(lake, window=3_000)
    assert frame["position"].to_list() == [3_000, 6_000, 9_000, 12_000]
    assert frame["token_js"][0] is None and frame["token_js"][1:].is_between(0, 1).all()
    assert all(a.signal in ("new_token_rate", "token_js") for a in alarms)
