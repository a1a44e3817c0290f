"""The urls scenario: a feature-evolving, high-dimensional stream, end to end."""

from __future__ import annotations

import polars as pl
import pytest

from dataflows.features import KeyedFeaturizer
from dataflows.online import run_replay
from lake.ingest import ingest_scenario
from lake.scenarios.urls import urls
from lake.table import read_table


def _tokens(urls_: pl.Series) -> pl.Series:
    return urls_.str.to_lowercase().str.extract_all("[a-z0-9]+").explode()


def test_urls_are_seeded_drifting_and_delayed():
    a, b = urls(n=20_000, seed=5), urls(n=20_000, seed=5)
    assert a.events.equals(b.events) and a.labels.equals(b.labels)
    assert not urls(n=20_000, seed=6).events.equals(a.events)
    assert a.events.columns == ["event_id", "event_time", "key", "url"]
    joined = a.events.join(a.labels, on="event_id")
    assert (joined["label_time"] > joined["event_time"]).all()
    assert 0.05 < joined["label"].mean() < 0.4
    # the vocabulary keeps growing: the second half brings hosts the first never had
    first, second = joined.head(10_000), joined.tail(10_000)
    new_hosts = second.filter(~pl.col("key").is_in(first["key"].implode()))
    assert new_hosts.height > 1_000
    # campaigns rotate their kit tokens: malicious URLs of the second half mostly carry new ones
    kit = pl.col("url").str.extract(r"/k(\d+)/", 1)
    seen = first.filter(pl.col("label") == 1).select(kit)["url"].implode()
    bad = second.filter(pl.col("label") == 1)
    assert bad.height > 100 and bad.filter(~kit.is_in(seen)).height > 0.5 * bad.height
    with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
        urls(n=0)
    with pytest.raises(ValueError, match="campaigns must be >= 0, got -1"):
        urls(n=10, campaigns=-1)


def test_urls_vocabulary_grows_with_the_stream_and_campaigns_are_known_drifts():
    f = urls(n=200_000, seed=11)
    tokens = _tokens(f.events["url"])
    # ~0.5+ distinct tokens per event: a million at 2M events, millions at tens of millions
    assert tokens.n_unique() > 100_000
    half = _tokens(f.events["url"].head(100_000)).n_unique()
    assert tokens.n_unique() > 1.6 * half  # the second half keeps minting tokens
    # URLs have the parts of real ones: scheme, host with a TLD, path; some carry a query
    assert f.events["url"].str.contains(r"^https?://[a-z0-9.-]+\.[a-z.]+/[^?]+").all()
    assert 0.2 < f.events["url"].str.contains("?", literal=True).mean() < 0.6
    # each campaign's first event is a known drift, and that event is malicious
    d = f.drifts
    assert d.height == 4 and d["position"].is_sorted() and (d["scenario"] == "urls").all()
    first = f.labels.join(d.select("event_id"), on="event_id")
    assert first["label"].to_list() == [1] * 4
    # a campaign rotates its token every `rotate_every` of its events
    one = urls(n=20_000, seed=11, campaigns=1, rotate_every=100)
    bad = one.events.join(one.labels, on="event_id").filter(pl.col("label") == 1)
    kits = bad["url"].str.extract(r"/k(\d+)/", 1)
    assert kits.n_unique() == -(-bad.height // 100)
    none = urls(n=20_000, seed=11, campaigns=0)
    assert none.labels["label"].sum() == 0 and none.drifts.height == 0


def test_url_tokens_hash_into_a_bounded_space():
    url = {"url": "http://Login-1001.xyz/signin/1001?id=7"}
    f = KeyedFeaturizer(hash_fields=["url"], key_features=False, time_features=False)
    x = f.transform_one(url, key="h", event_time_us=0)
    tokens = {k for k in x if k.startswith("url=#")}
    assert len(tokens) == 7  # http, login, 1001, xyz, signin, id, 7 (1001 twice: one bucket)
    assert x["url_tokens"] == pytest.approx(2.1972246)  # log1p(8 tokens)
    assert f.transform_one(url, key="h", event_time_us=0) == x
    tiny = KeyedFeaturizer(hash_fields=["url"], n_buckets=4, key_features=False, time_features=False)
    small = [k for k in tiny.transform_one(url, key="h", event_time_us=0) if k.startswith("url=#")]
    assert 1 <= len(small) <= 4 and all(int(k[5:], 16) < 4 for k in small)


def test_urls_through_the_dataflow(tmp_path):
    lake = str(tmp_path / "lake")
    ingest_scenario(lake, "urls", n=6_000, seed=2, rate=0.1)  # 17 h of traffic: labels arrive within it
    run_id = run_replay(lake, "linear-hash", hash_fields="url", recovery=False)
    preds = read_table(lake, "predictions").filter(pl.col("run_id") == run_id)
    assert preds.height == 6_000
    # features are stored sparsely in one map column, not a column per token
    assert "features" in preds.columns and not any(c.startswith("url=") for c in preds.columns)
    names = preds["features"].map.keys().explode()
    assert names.str.starts_with("url=#").sum() > 10_000
    m = read_table(lake, "metrics").filter(pl.col("run_id") == run_id)
    assert m["n_correct"].sum() / m["n"].sum() > 0.85


def test_linear_hash_scores_as_rivers_logistic_regression_and_state_pickles_compactly():
    import pickle

    from river import linear_model, optim

    from dataflows.models import get_spec

    f = urls(n=3_000, seed=8)
    ys = dict(zip(f.labels["event_id"], f.labels["label"], strict=True))
    feat = KeyedFeaturizer(hash_fields=["url"], n_buckets=2**12)
    ours, river_lr = get_spec("linear-hash").build(seed=0), linear_model.LogisticRegression(optim.SGD(0.05), l2=0.0)
    for i, (eid, key, url, t) in enumerate(f.events.select("event_id", "key", "url", "event_time").iter_rows()):
        t_us = int(t.timestamp() * 1_000_000)
        x = feat.transform_one({"url": url}, key=key, event_time_us=t_us)
        assert ours.predict_proba_one(x)[True] == pytest.approx(river_lr.predict_proba_one(x)[True], abs=1e-9)
        ours.learn_one(x, ys[eid] == 1)
        river_lr.learn_one(x, ys[eid] == 1)
        feat.learn_one({"url": url}, key=key, event_time_us=t_us)
        if i % 2:
            feat.learn_label(key=key, y=ys[eid] == 1)
    assert len(ours.weights) <= 2**12 + 10  # bounded by the hash space (+ the numeric features)
    clone, fclone = pickle.loads(pickle.dumps(ours)), pickle.loads(pickle.dumps(feat))
    assert clone.weights == ours.weights and clone.intercept == ours.intercept
    keys = list(feat._keys)
    assert list(fclone._keys) == keys and fclone.key_states(keys) == feat.key_states(keys) and fclone.n_keys > 100
    x = {"url": "http://login-x1.xyz/paypal/signin"}
    assert fclone.transform_one(x, key=key, event_time_us=0) == feat.transform_one(x, key=key, event_time_us=0)
    # state pickled before the token cache existed (older checkpoints, recovery snapshots) still loads
    old = {k: v for k, v in feat.__getstate__().items() if k != "_token_names"}
    old["_keys"] = dict(zip(keys, feat.key_states(keys), strict=True))  # (then a dict of lists)
    revived = KeyedFeaturizer.__new__(KeyedFeaturizer)
    revived.__setstate__(old)
    assert revived.transform_one(x, key=key, event_time_us=0) == feat.transform_one(x, key=key, event_time_us=0)


def test_benchmark_learners_on_hashed_url_features(tmp_path):
    import numpy as np

    from dataflows.replay import pin_versions
    from flows.bench.learners import DenseProjection
    from flows.bench.strategies import BenchConfig, run_strategy
    from flows.bench.stream import build_stream

    lake = str(tmp_path / "lake")
    ingest_scenario(lake, "urls", n=4_000, seed=2, rate=0.1)
    stream = build_stream(lake, pin_versions(lake), featurizer={"hash_fields": ["url"], "n_buckets": 2**12})
    assert any(n.startswith("url=#") for n in stream.names) and len(stream.names) <= 2**12 + 20
    # gradient boosting's dense projection leaves the multi-hot hashed tokens out
    proj = DenseProjection(stream)
    assert "url=" not in proj.columns and "url_len" in proj.columns
    assert proj(np.arange(10)).shape == (10, len(proj.columns))
    config = BenchConfig(retrain_every_events=1000, sliding_events=2000, latency_samples=50)
    for name in ("online/linear-hash", "periodic-sliding/sk-logreg", "periodic-sliding/hgb"):
        run = run_strategy(stream, name, config)
        assert run.scores.shape == (4_000,) and np.isfinite(run.scores).all()
