"""The prediction API: answers, rows in the lake exactly once, learning from served features, the
feature store (embedded and a real redis-server), and a real uvicorn server killed with -9."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import time
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from serving.config import ServeConfig
from serving.engine import Engine, ServingError
from serving.launch import RedisProcess, ServerProcess
from serving.store import MemoryStore, open_store

T0 = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())  # epoch seconds


def stream(n: int, *, seed: int = 3, keys: int = 5) -> list[tuple[str, dict, dict]]:
    """``(kind, body)`` in time order: events a minute apart, each label 90 s after its event."""
    rng = random.Random(seed)
    timed: list[tuple[float, int, str, dict]] = []
    for i in range(n):
        key = f"k{rng.randrange(keys)}"
        x = rng.uniform(0, 10)
        t = T0 + 60 * i
        ev = {"event_id": f"e{i}", "key": key, "event_time": t,
              "payload": {"x": x, "n": rng.randrange(100), "tag": rng.choice(["a", "b"])}}
        timed.append((t, 0, "predict", ev))
        y = int(x + (3 if key in ("k0", "k1") else 0) + rng.gauss(0, 1) > 6)
        timed.append((t + 90, 1, "labels", {"event_id": f"e{i}", "label": y, "label_time": t + 90}))
    timed.sort(key=lambda r: (r[0], r[1]))
    return [(kind, body) for _, _, kind, body in timed]


def feed(engine: Engine, requests) -> dict[str, dict]:
    answers = {}
    for kind, body in requests:
        status, out = (engine.predict if kind == "predict" else engine.labels)(json.dumps(body).encode())
        assert status == 200, out
        if kind == "predict":
            answers[out["event_id"]] = out
    return answers


def table(lake, name) -> pl.DataFrame:
    return pl.read_delta(f"{lake}/{name}")


@pytest.fixture
def lake(tmp_path) -> str:
    return str(tmp_path / "lake")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisProcess(str(tmp_path_factory.mktemp("redis")))
    yield server.url
    server.stop()


def test_predict_answers_once_per_event_id_and_the_lake_holds_each_row_once(lake):
    engine = Engine(ServeConfig(lake=lake))
    try:
        reqs = stream(40)
        answers = feed(engine, reqs)
        first = answers["e3"]
        status, again = engine.predict(json.dumps({"event_id": "e3", "key": "k9", "payload": {"x": 99.0}}).encode())
        assert (status, again) == (200, first)  # the first answer, not a second prediction
        status, batch = engine.predict(json.dumps([reqs[0][1], {"event_id": "new", "payload": {"x": 1.0}}]).encode())
        assert status == 200 and batch[0] == answers["e0"] and batch[1]["event_id"] == "new"
        assert set(first) == {"event_id", "score", "prediction", "model", "model_version"}
    finally:
        engine.close()
    preds = table(lake, "predictions")
    assert preds.height == 41 and preds["event_id"].n_unique() == 41
    assert table(lake, "events").height == 41
    labels = table(lake, "labels")
    assert labels.height == 40 and labels["event_id"].n_unique() == 40
    learned = table(lake, "learn_log")
    assert learned.height == 40
    served = preds.filter(pl.col("event_id") == "e3").row(0, named=True)
    assert served["score"] == first["score"] and served["model_version"] == first["model_version"]


def test_bad_input_is_refused_with_the_field_and_dead_lettered(lake):
    engine = Engine(ServeConfig(lake=lake))
    try:
        assert engine.predict(b'{"event_id": "a", "payload": {"x": 1.5}}')[0] == 200
        status, out = engine.predict(b'{"event_id": "b", "payload": {"x": "high"}}')
        assert status == 422
        assert out["detail"][0]["field"] == "payload.x" and "must be a number" in out["detail"][0]["reason"]
        status, out = engine.predict(b'{"event_id": "c", "event_time": "yesterday", "payload": {}}')
        assert status == 422 and out["detail"][0]["field"] == "event_time"
        assert engine.predict(b'{"event_id": "d", ')[0] == 400
        status, out = engine.labels(b'{"event_id": "a", "label": 7}')
        assert status == 422 and out["detail"][0]["field"] == "label"
        assert engine.labels(b'{"event_id": "nobody", "label": 1}')[0] == 404
        assert engine.labels(b'{"event_id": "a", "label": 1}')[0] == 200
        assert engine.labels(b'{"event_id": "a", "label": 0}')[0] == 409
    finally:
        engine.close()
    dead = table(lake, "dead_letters").sort("seq")
    assert dead.height == 6
    assert dead["event_id"].to_list()[:2] == ["b", "c"]
    assert table(lake, "predictions").height == 1  # nothing refused was predicted
    assert table(lake, "labels")["label"].to_list() == [1]  # only the label learned


def test_the_model_learns_from_labels_between_requests_and_models_reports_it(lake):
    engine = Engine(ServeConfig(lake=lake, checkpoint_every=10))
    try:
        feed(engine, stream(30))
        probe = {"key": "k0", "event_time": T0 + 60 * 31, "payload": {"x": 9.0, "n": 1, "tag": "a"}}
        s1 = engine.predict(json.dumps({"event_id": "p1", **probe}).encode())[1]["score"]
        engine.labels(json.dumps([{"event_id": "p1", "label": 0}]).encode())
        s2 = engine.predict(json.dumps({"event_id": "p2", **probe}).encode())[1]["score"]
        assert s2 < s1  # the label sent back changed the very next answer
        (m,) = engine.models()
        assert m["labels_learned"] == 31 and m["model_version"] == "linear:s0:30"
        assert m["seconds_behind_newest_label"] == 0.0
    finally:
        engine.close()


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_served_features_and_scores_equal_the_replay_of_the_lake(lake, store, request):
    """Serving and the dataflow's replay of what was served compute the same features and scores."""
    from dataflows.online import run_replay

    url = request.getfixturevalue("redis_url") if store == "redis" else "memory"
    engine = Engine(ServeConfig(lake=lake, store=url, server_id=f"eq-{store}"))
    try:
        feed(engine, stream(150, keys=7))
    finally:
        engine.close()
    run_id = run_replay(lake, "linear", recovery=False, run_id=f"replay-{store}", anomaly=None, stats_window=None)
    preds = table(lake, "predictions")
    served = preds.filter(pl.col("run_id") == f"eq-{store}").sort("event_id")
    replayed = preds.filter(pl.col("run_id") == run_id).sort("event_id")
    assert served.height == replayed.height == 150
    assert served["features"].to_list() == replayed["features"].to_list()
    assert served["score"].to_list() == replayed["score"].to_list()
    assert any(dict(f)["key_n"] > 0 for f in served["features"].to_list())  # per-key history was used


def test_feature_store_updates_are_idempotent_by_position(redis_url):
    for store in (MemoryStore(), open_store(redis_url, namespace="idem")):
        assert store.position is None
        assert store.apply({"a": (1, 10, 0, 0, None)}, (0, 0), position=5)
        assert not store.apply({"a": (2, 20, 0, 0, None)}, (1, 1), position=5)
        assert not store.apply({"a": (2, 20, 0, 0, None)}, (1, 1), position=4)
        assert store.apply({"a": (2, 20, 1, 1, 0.25), "b": (1, 3, 0, 0, None)}, (1, 1), position=6)
        assert store.read(["a", "b", "c"]) == ({"a": (2, 20, 1, 1, 0.25), "b": (1, 3, 0, 0, None)}, (1, 1))
        assert store.apply({"b": None}, (1, 1), position=7)
        assert store.read(["b"]) == ({}, (1, 1)) and store.position == 7
        store.close()


def test_restart_replays_the_log_and_the_redis_store_neither_skips_nor_repeats(lake, redis_url):
    cfg = ServeConfig(lake=lake, store=redis_url, server_id="restart")
    reqs = stream(60, keys=3)
    engine = Engine(cfg)
    first = feed(engine, reqs[:50])
    engine.close()
    engine = Engine(cfg)
    try:
        assert engine.replayed == 50
        again = feed(engine, [r for r in reqs[:50] if r[0] == "predict"])
        assert again == {k: first[k] for k in again}  # the first answers, after a restart
        feed(engine, reqs[50:])
        learned = engine.models()[0]["labels_learned"]
    finally:
        engine.close()
    store = open_store(redis_url, namespace="restart")
    states, totals = store.read(["k0", "k1", "k2"])
    counts = dict(table(lake, "events").group_by("key").len().iter_rows())
    assert sum(counts.values()) == 60
    assert {k: s[0] for k, s in states.items()} == counts  # each event counted once per key
    assert totals[0] == learned == table(lake, "labels").height
    with pytest.raises(ServingError, match="settings"):
        Engine(ServeConfig(lake=lake, store=redis_url, server_id="restart", models=("tree",)))


def test_a_second_server_with_the_same_id_is_refused(lake):
    engine = Engine(ServeConfig(lake=lake))
    try:
        with pytest.raises(ServingError, match="another server"):
            Engine(ServeConfig(lake=lake))
    finally:
        engine.close()


def _answers(client, bodies):
    out = {}
    for body in bodies:
        status, a = client.post("/predict", body)
        assert status == 200, a
        out[a["event_id"]] = a
    return out


@pytest.mark.parametrize(("store", "snapshot_every"), [("memory", 0), ("redis", 0), ("memory", 50)])
def test_uvicorn_server_killed_with_9_loses_and_doubles_no_row(tmp_path, subprocess_env, store, snapshot_every,
                                                               request):
    """A real server on 127.0.0.1: answers, kill -9 before its lake commits (or, with snapshots, after
    some), restart, same answers, every row once, and ``lake reproduce`` rebuilds a served score bit for bit."""
    from lake.reproduce import reproduce

    lake = str(tmp_path / "lake")
    url = request.getfixturevalue("redis_url") if store == "redis" else "memory"
    # Nothing committed before the kill; with snapshots, commits every 0.5 s: a snapshot is written once the
    # lake holds its rows.
    args = ["--flush-seconds", "0.5" if snapshot_every else "30", "--checkpoint-every", "20",
            "--store", url, "--server-id", f"kill-{store}", "--snapshot-every", str(snapshot_every)]
    server = ServerProcess(lake, args=args, env=subprocess_env).wait_ready()
    reqs = stream(120, keys=4)
    try:
        client = server.client()
        served = {}
        for kind, body in reqs[:160]:
            status, out = client.post("/" + kind, body)
            assert status == 200, out
            if kind == "predict":
                served[out["event_id"]] = out
        status, docs = client.get("/openapi.json")
        assert status == 200 and "/predict" in docs["paths"]
        if snapshot_every:  # snapshots are taken between requests, by the ticker: kill after one was
            deadline = time.monotonic() + 20
            while client.get("/health")[1]["snapshot_position"] < 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        client.close()
    finally:
        server.kill()
    server = ServerProcess(lake, args=args, env=subprocess_env).wait_ready()
    try:
        client = server.client()
        status, health = client.get("/health")
        if snapshot_every:  # the log's tail after the last snapshot, no more
            assert health["snapshot_position"] >= 0 and health["replayed_requests"] == 159 - health["snapshot_position"]
        else:
            assert health["replayed_requests"] == 160
        assert _answers(client, [b for k, b in reqs[:160] if k == "predict"]) == served
        for kind, body in reqs[160:]:
            assert client.post("/" + kind, body)[0] == 200
        status, models = client.get("/models")
        assert models[0]["labels_learned"] == 120
        client.close()
    finally:
        # uvicorn shuts down on SIGTERM, then exits by the signal it caught
        assert server.stop() in (0, -15), server.log()
    events, preds, labels = table(lake, "events"), table(lake, "predictions"), table(lake, "labels")
    assert events.height == events["event_id"].n_unique() == 120
    assert preds.height == preds["event_id"].n_unique() == 120
    assert labels.height == labels["event_id"].n_unique() == 120
    assert table(lake, "learn_log").height == 120
    if store == "redis":  # the store neither skipped nor repeated an update across the kill
        states, totals = open_store(url, namespace="kill-redis").read([f"k{i}" for i in range(4)])
        assert {k: s[0] for k, s in states.items()} == dict(events.group_by("key").len().iter_rows())
        assert totals[0] == 120
    late = sorted(served, key=lambda e: int(e[1:]))[-1]
    (rep,) = reproduce(lake, late, run_id=f"kill-{store}")
    assert rep.bit_equal and rep.stored_score == served[late]["score"] and rep.learned > 0


def test_training_set_takes_nothing_from_after_each_rows_time(lake, tmp_path):
    """Point-in-time: an event and a label that arrive after a row's time do not reach its features."""
    from dataflows.training_set import training_set
    from lake.cli import main as lake_main

    engine = Engine(ServeConfig(lake=lake))
    try:
        for i, t in enumerate([T0, T0 + 60, T0 + 600]):  # the third event comes after the row's time
            assert engine.predict(json.dumps({"event_id": f"a{i}", "key": "a", "event_time": t,
                                              "payload": {"x": 1.0}}).encode())[0] == 200
        # the first label arrives before the row's time, the second after it
        assert engine.labels(json.dumps({"event_id": "a0", "label": 1, "label_time": T0 + 30}).encode())[0] == 200
        assert engine.labels(json.dumps({"event_id": "a1", "label": 1, "label_time": T0 + 400}).encode())[0] == 200
    finally:
        engine.close()
    as_of = datetime.fromtimestamp(T0 + 300, UTC)
    entities = pl.DataFrame({"key": ["a", "a", "b"], "at": [as_of, datetime.fromtimestamp(T0 + 700, UTC), as_of]})
    out = training_set(lake, entities, as_of_col="at")
    assert out["key_events"].to_list() == [2, 3, 0]
    assert out["key_labels"].to_list() == [1, 2, 0]
    assert out["key_gap"][0] == pytest.approx(float(np.log1p(240)))  # since the event at T0 + 60
    path = tmp_path / "entities.csv"
    entities.with_columns(pl.col("at").dt.to_string("%Y-%m-%dT%H:%M:%S%z")).write_csv(path)
    assert lake_main(["training-set", "--lake", lake, "--entities", str(path), "--as-of-col", "at",
                      "--out", str(tmp_path / "ts.parquet")]) == 0
    assert pl.read_parquet(tmp_path / "ts.parquet").drop("at").equals(out.drop("at"))


def test_training_set_features_equal_the_features_served(lake):
    from dataflows.training_set import FEATURE_COLUMNS, training_set

    engine = Engine(ServeConfig(lake=lake))
    try:
        answers = feed(engine, stream(80, keys=4))
    finally:
        engine.close()
    served = table(lake, "predictions").select("event_id", "key", "event_time", "features")
    entities = served.select("key", (pl.col("event_time") - pl.duration(microseconds=1)).alias("at"))
    out = training_set(lake, entities, as_of_col="at")
    exact = ("key_n", "key_rate", "key_recent")
    for row, feats in zip(out.iter_rows(named=True), served["features"].to_list(), strict=True):
        f = dict(feats)
        assert [row[n] for n in exact] == [f[n] for n in exact]
        assert row["key_gap"] == pytest.approx(f["key_gap"], rel=1e-8)  # a microsecond earlier
    assert len(answers) == 80 and set(FEATURE_COLUMNS) <= set(out.columns)


def test_warm_start_learns_the_lakes_history_and_serves_with_its_types(lake):
    """Serving the demo lake: the server first learns the flights already in the lake (in the replay's
    order, nothing recorded twice), then answers with the lake's column types."""
    from lake.cli import main as lake_main

    assert lake_main(["ingest", "--lake", lake, "--scenario", "flights", "--limit", "2000"]) == 0
    n_events, n_labels = table(lake, "events").height, table(lake, "labels").height
    flight = {"key": "UA", "event_time": "2013-01-02T14:00:00Z",
              "payload": {"month": 1, "day": 2, "hour": 9, "minute": 0, "sched_dep_time": 900, "carrier": "UA",
                          "origin": "EWR", "dest": "ORD", "route": "EWR-ORD", "distance": 719}}
    cfg = ServeConfig(lake=lake, warm_start=True, exclude=("tailnum", "flight"))
    engine = Engine(cfg)
    try:
        (m,) = engine.models()
        assert m["labels_learned"] > 0.9 * n_labels
        status, a = engine.predict(json.dumps({"event_id": "live-1", **flight}).encode())
        assert status == 200 and a["score"] != 0.5 and a["model_version"].startswith("linear:s0:")
        bad = {**flight, "payload": {**flight["payload"], "distance": 719.5}}
        status, out = engine.predict(json.dumps({"event_id": "live-2", **bad}).encode())
        assert status == 422 and "int64" in out["detail"][0]["reason"]
    finally:
        engine.close()
    engine = Engine(cfg)  # a restart warms up from the same versions and gives the same answer
    try:
        assert engine.predict(json.dumps({"event_id": "live-1", **flight}).encode()) == (200, a)
    finally:
        engine.close()
    assert table(lake, "events").height == n_events + 1 and table(lake, "labels").height == n_labels
    preds = table(lake, "predictions")
    assert preds.height == preds["event_id"].n_unique() == n_events + 1


def test_load_generator_reports_latency_throughput_freshness_and_memory(tmp_path):
    from serving.bench import markdown, run

    r = run(store="memory", rate=50, seconds=1, batch=20, memory_events=400, server_cpu=None, client_cpu=None,
            folder=str(tmp_path), connections=2)
    assert r["concurrent"]["requests"] == 50 and r["concurrent"]["requests_per_step"] >= 1
    assert r["closed"]["requests"] > 10 and r["single"]["requests"] == 50
    assert r["batch"]["predictions_per_s"] > 0 and r["batch"]["server_cpu_ms_per_prediction"] > 0
    assert r["freshness"]["p50_ms"] < 5_000  # a label is learned before its request returns
    assert r["memory"]["events"] == 400 and r["memory"]["rss_after_mb"] > 0
    assert "freshness" in markdown(r)


def test_a_failed_lake_commit_stops_serving_and_a_restart_writes_every_row(lake):
    """After a commit fails, nothing later may be committed (the writers would skip the failed rows for
    good): the server refuses requests with 503, and a restart writes what the failed commit held."""
    import os

    engine = Engine(ServeConfig(lake=lake))
    try:
        answers = feed(engine, stream(20))
        with open(os.path.join(lake, "predictions"), "w") as f:  # a file where the table's folder goes
            f.write("not a table")
        with pytest.raises(Exception):  # noqa: B017 - whatever the writer raises
            engine.flush()
        assert engine.predict(b'{"event_id": "late", "payload": {"x": 1.0}}')[0] == 503
        assert engine.health()["status"] == "failed"
    finally:
        engine.close()
    os.remove(os.path.join(lake, "predictions"))
    engine = Engine(ServeConfig(lake=lake))
    try:
        assert feed(engine, [r for r in stream(20) if r[0] == "predict"]) == answers
    finally:
        engine.close()
    preds = table(lake, "predictions")
    assert preds.height == preds["event_id"].n_unique() == 20
    assert table(lake, "labels").height == table(lake, "learn_log").height == 20


def test_requests_that_queue_up_run_as_one_step_in_arrival_order(lake):
    engine = Engine(ServeConfig(lake=lake))
    try:
        ev = {"event_id": "q1", "key": "k", "payload": {"x": 2.0}}
        answers = engine.handle([
            ("predict", json.dumps(ev).encode()),
            ("labels", json.dumps({"event_id": "q1", "label": 1}).encode()),  # its event came just before
            ("predict", json.dumps({**ev, "payload": {"x": 3.0}}).encode()),  # the same id: the first answer
            ("predict", json.dumps({"event_id": "q2", "payload": {"x": "two"}}).encode()),  # refused alone
            ("labels", json.dumps([{"event_id": "q1", "label": 1}, {"event_id": "q3", "label": 0}]).encode()),
            ("predict", json.dumps({"event_id": "q3", "key": "k", "payload": {"x": 1.0}}).encode()),
        ])
        assert [a[0] for a in answers] == [200, 200, 200, 422, 200, 200]
        assert answers[1][1] == {"event_id": "q1", "learned": True}
        assert answers[2][1] == answers[0][1]
        assert [r["learned"] for r in answers[4][1]] == [False, False]  # twice; q3 not served yet
        assert "twice" in answers[4][1][0]["reason"] and "unknown" in answers[4][1][1]["reason"]
        assert engine.health()["steps"] == 1 and engine.models()[0]["labels_learned"] == 1
    finally:
        engine.close()
    assert table(lake, "predictions")["event_id"].to_list() == ["q1", "q3"]
    assert table(lake, "dead_letters").height == 3


def test_concurrent_clients_of_a_uvicorn_server_get_every_answer_once(tmp_path, subprocess_env):
    from concurrent.futures import ThreadPoolExecutor

    lake = str(tmp_path / "lake")
    server = ServerProcess(lake, env=subprocess_env).wait_ready()

    def client(c: int) -> dict[str, dict]:
        cl = server.client()
        out = {}
        for i in range(40):
            eid = f"c{c}-{i}"
            status, a = cl.post("/predict", {"event_id": eid, "key": f"k{i % 3}", "payload": {"x": float(i)}})
            assert status == 200 and a["event_id"] == eid
            out[eid] = a
            assert cl.post("/labels", {"event_id": eid, "label": i % 2})[1] == {"event_id": eid, "learned": True}
        cl.close()
        return out

    try:
        with ThreadPoolExecutor(8) as pool:
            answers = {k: v for part in pool.map(client, range(8)) for k, v in part.items()}
        status, health = server.client().get("/health")
        assert health["requests"] == 640 and health["steps"] <= 640
    finally:
        assert server.stop() in (0, -15), server.log()
    preds = table(lake, "predictions")
    assert preds.height == preds["event_id"].n_unique() == len(answers) == 320
    assert table(lake, "learn_log").height == table(lake, "labels").height == 320
    stored = dict(zip(preds["event_id"].to_list(), preds["score"].to_list(), strict=True))
    assert all(stored[k] == a["score"] for k, a in answers.items())


def test_a_restart_after_a_snapshot_replays_only_the_tail_and_answers_the_same(tmp_path):
    """Every ``snapshot_every`` positions the state is sealed to disk and the log segments it covers
    deleted: a restart replays the requests after it alone, and serves exactly what a server that never
    stopped serves."""
    from lake.integrity import IntegrityError

    reqs = stream(80, keys=3)  # 160 requests, one position each
    snapped = ServeConfig(lake=str(tmp_path / "a"), server_id="snap", snapshot_every=50, checkpoint_every=20)
    engine = Engine(snapped)
    first = {}
    for r in reqs[:120]:
        first |= feed(engine, [r])
        engine.tick()  # snapshots taken at positions 49 and 99 (ticks come between requests) ...
        if engine.health()["snapshot_taken_position"] is not None:
            engine.flush()  # ... and written once the lake holds their rows
    assert engine.health()["snapshot_position"] == 99
    engine.close()
    assert os.path.getsize(os.path.join(engine.config.state_path, "log.jsonl")) > 0
    engine = Engine(snapped)
    try:
        assert engine.replayed == 20  # positions 100..119, not 120 requests
        again = feed(engine, [r for r in reqs[:120] if r[0] == "predict"])
        assert again == {k: first[k] for k in again}  # first answers kept across the snapshot
        later = feed(engine, reqs[120:])
    finally:
        engine.close()
    never = Engine(ServeConfig(lake=str(tmp_path / "b"), server_id="snap", snapshot_every=0, checkpoint_every=20))
    try:
        whole = feed(never, reqs)
    finally:
        never.close()
    assert later == {k: whole[k] for k in later}  # bit-equal scores and the same model versions
    for name in ("events", "predictions", "labels", "learn_log", "checkpoints"):
        a, b = table(snapped.lake, name), table(str(tmp_path / "b"), name)
        assert a.height == b.height, name
    preds = table(snapped.lake, "predictions")
    assert preds.height == preds["event_id"].n_unique() == 80
    with open(os.path.join(snapped.state_path, "snapshot.bin"), "r+b") as f:  # changed without the key
        f.seek(-5, os.SEEK_END)
        f.write(b"XXXXX")
    with pytest.raises(IntegrityError, match="HMAC does not match"):
        Engine(snapped)


def test_requests_are_answered_while_a_snapshot_waits_for_the_lake(tmp_path):
    """A snapshot commits nothing and waits for nothing on the request path: taken between requests, it is
    written once the lake's own commits (here every 30 s) hold its rows; requests are answered meanwhile,
    and a restart before it is written replays from the last snapshot written (here: the whole log)."""
    from lake.table import exists

    cfg = ServeConfig(lake=str(tmp_path / "lake"), server_id="bg", snapshot_every=50, flush_seconds=30,
                      checkpoint_every=20)
    reqs = stream(60, keys=3)  # 120 requests, one position each
    engine = Engine(cfg)
    served = {}
    try:
        for r in reqs[:60]:
            served |= feed(engine, [r])
            engine.tick()
        health = engine.health()
        assert (health["snapshot_taken_position"], health["snapshot_position"]) == (49, -1)
        assert not exists(cfg.lake, "predictions")  # the snapshot committed nothing
        for r in reqs[60:100]:  # answered while the snapshot waits for the lake
            served |= feed(engine, [r])
            engine.tick()
        assert engine.health()["snapshot_taken_position"] == 49
    except BaseException:
        engine.close()
        raise
    engine.snapshots.close()  # (as a crash would: the snapshot taken is never written)
    engine.close()
    engine = Engine(cfg)
    try:
        assert engine.replayed == 100 and engine.health()["snapshot_position"] == -1
        assert feed(engine, [r for r in reqs[:100] if r[0] == "predict"]) == served
        for r in reqs[100:]:
            served |= feed(engine, [r])
            engine.tick()
        engine.flush()  # the lake holds the rows: the snapshot taken at the first tick (position 100) is written
        assert engine.health()["snapshot_position"] == 100
    finally:
        engine.close()
    engine = Engine(cfg)
    try:
        assert engine.replayed == 19  # positions 101..119
        assert feed(engine, [r for r in reqs if r[0] == "predict"]) == served
    finally:
        engine.close()
    for name in ("events", "predictions", "labels", "learn_log"):
        t = table(cfg.lake, name)
        assert t.height == t["event_id"].n_unique() == 60, name


def test_the_answers_kept_after_a_restart_from_snapshots_are_those_of_a_server_that_never_stopped(tmp_path):
    """Each snapshot writes only the answers added since the one before; a restart puts the kept ones
    together from those files: the same ids answered again, the same ones no longer kept (``remember``
    small, so the kept answers turn over several times between and across snapshots)."""
    reqs = stream(95, keys=3)

    def run(name: str, snapshot_every: int) -> list:
        cfg = ServeConfig(lake=str(tmp_path / name), server_id="gen", snapshot_every=snapshot_every, remember=15,
                          checkpoint_every=20)
        engine = Engine(cfg)
        try:
            for r in reqs:
                feed(engine, [r])
                engine.tick()
                if engine.health()["snapshot_taken_position"] is not None:
                    engine.flush()  # (the snapshot written)
        finally:
            engine.close()
        engine = Engine(cfg)  # (restarted: from the last snapshot, or replaying the whole log)
        assert (engine.health()["snapshot_position"] > 0) == (snapshot_every > 0)
        try:
            out = [engine.predict(json.dumps(body).encode()) for kind, body in reqs if kind == "predict"]
        finally:
            engine.close()
        return out

    again = run("snapped", 20)
    assert again == run("never", 0)
    assert sum(status == 200 for status, _ in again) == 20  # 95 answers, 15 kept per generation: the last 20


def test_a_server_killed_with_9_at_any_moment_of_its_snapshots_loses_and_doubles_no_row(tmp_path, subprocess_env):
    """``kill -9`` while a snapshot waits for the lake (its rows not yet committed), then at random moments
    of frequent snapshots (taken, waiting, being written, written, log segments being deleted): after each
    restart the same answers, and in the end every row once."""
    lake = str(tmp_path / "lake")
    base = ["--snapshot-every", "40", "--checkpoint-every", "20", "--server-id", "snapkill"]
    reqs = stream(150, keys=4)  # 300 requests
    served: dict[str, dict] = {}

    def send(client, part):
        for kind, body in part:
            status, out = client.post("/" + kind, body)
            assert status == 200, out
            if kind == "predict":
                served[out["event_id"]] = out

    server = ServerProcess(lake, args=[*base, "--flush-seconds", "30"], env=subprocess_env).wait_ready()
    try:
        client = server.client()
        send(client, reqs[:60])
        deadline = time.monotonic() + 20
        while client.get("/health")[1]["snapshot_taken_position"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        send(client, reqs[60:100])  # answered while the snapshot waits for commits due in 30 s
        time.sleep(1.0)  # (ticks come every 0.2 s: a snapshot that did not wait for the lake would be written)
        status, health = client.get("/health")
        assert health["snapshot_taken_position"] is not None and health["snapshot_position"] == -1
        client.close()
    finally:
        server.kill()
    rng = random.Random(5)
    done = 100
    for part in (reqs[100:160], reqs[160:220], reqs[220:280], reqs[280:]):
        server = ServerProcess(lake, args=[*base, "--flush-seconds", "0.2"], env=subprocess_env).wait_ready()
        try:
            client = server.client()
            assert _answers(client, [b for k, b in reqs[:done] if k == "predict"]) == {
                k: v for k, v in served.items() if int(k[1:]) < 150}
            send(client, part)
            done += len(part)
            time.sleep(rng.uniform(0.0, 1.5))  # snapshots are taken, written and cleaned up meanwhile
            client.close()
        finally:
            server.kill()
    server = ServerProcess(lake, args=[*base, "--flush-seconds", "0.2"], env=subprocess_env).wait_ready()
    try:
        client = server.client()
        assert _answers(client, [b for k, b in reqs if k == "predict"]) == served
        assert client.get("/models")[1][0]["labels_learned"] == 150
        assert client.get("/health")[1]["snapshot_position"] > 0  # (restarted from a snapshot)
        client.close()
    finally:
        assert server.stop() in (0, -15), server.log()
    for name in ("events", "predictions", "labels", "learn_log"):
        t = table(lake, name)
        assert t.height == t["event_id"].n_unique() == 150, name


def _retrying(client, path, body, *, seconds: float = 60.0):
    """POST until a worker answers (a 503 or a dropped connection while one restarts: send it again)."""
    import time

    deadline, failed = time.monotonic() + seconds, False
    while True:
        try:
            status, out = client.post(path, body)
        except OSError:
            status, out = None, None
        if status == 409 and failed and path == "/labels":
            return 200, out  # learned by the attempt whose answer was lost
        if status not in (None, 503) or time.monotonic() > deadline:
            return status, out
        failed = True
        time.sleep(0.1)


def test_two_workers_route_each_key_to_one_and_a_worker_killed_with_9_loses_nothing(tmp_path, subprocess_env):
    """``--workers 2``: concurrent clients get every answer once, each key is served (and learned) by one
    worker, labels find the worker that served their event, and ``kill -9`` of a worker before its lake
    commits loses and doubles nothing: the supervisor restarts it and its log replays."""
    import signal
    import time
    from concurrent.futures import ThreadPoolExecutor

    import psutil

    lake = str(tmp_path / "lake")
    server = ServerProcess(lake, args=["--workers", "2", "--flush-seconds", "30", "--server-id", "multi"],
                           env=subprocess_env).wait_ready()

    def events(c: int, lo: int, hi: int) -> list[dict]:
        return [{"event_id": f"c{c}-{i}", "key": f"k{(c + i) % 6}", "event_time": T0 + i,
                 "payload": {"x": float(i % 7)}} for i in range(lo, hi)]

    def client(c: int, lo: int, hi: int) -> dict[str, dict]:
        cl, out = server.client(), {}
        for ev in events(c, lo, hi):
            status, a = _retrying(cl, "/predict", ev)
            assert status == 200 and a["event_id"] == ev["event_id"], a
            out[ev["event_id"]] = a
            status, a = _retrying(cl, "/labels", {"event_id": ev["event_id"], "label": int(ev["payload"]["x"] > 3)})
            assert status == 200, a
        cl.close()
        return out

    def workers() -> dict[int, int]:
        found = {}
        for p in psutil.Process(server.proc.pid).children():
            with contextlib.suppress(psutil.Error):  # (the killed one, until the supervisor reaps it)
                cmd = p.cmdline()
                if "--worker-index" in cmd[:-1]:  # (empty while a new one is being exec'd)
                    found[int(cmd[cmd.index("--worker-index") + 1])] = p.pid
        return found

    try:
        with ThreadPoolExecutor(4) as pool:
            first = {k: v for part in pool.map(client, range(4), [0] * 4, [30] * 4) for k, v in part.items()}
        before = workers()
        assert len(before) == 2
        os.kill(before[0], signal.SIGKILL)  # nothing of it committed yet (--flush-seconds 30)
        deadline = time.monotonic() + 60
        while (now := workers()).get(0) in (None, before[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert now[0] != before[0] and now[1] == before[1]  # restarted; the other one kept serving
        cl = server.client()  # the same ids again: their first answers, from both workers
        repeat = {ev["event_id"]: _retrying(cl, "/predict", ev)[1] for c in range(4) for ev in events(c, 0, 30)}
        cl.close()
        assert repeat == first
        with ThreadPoolExecutor(4) as pool:
            later = {k: v for part in pool.map(client, range(4), [30] * 4, [60] * 4) for k, v in part.items()}
    finally:
        assert server.stop() in (0, -15), server.log()
    preds, events_t = table(lake, "predictions"), table(lake, "events")
    for t in (preds, events_t, table(lake, "labels"), table(lake, "learn_log")):
        assert t.height == t["event_id"].n_unique() == 240
    assert set(preds["run_id"].unique()) == {"multi-w0", "multi-w1"}
    per_key = preds.group_by("key").agg(pl.col("run_id").n_unique().alias("workers"))
    assert per_key["workers"].to_list() == [1] * 6  # one worker's state and model per key
    stored = dict(zip(preds["event_id"].to_list(), preds["score"].to_list(), strict=True))
    assert all(stored[k] == a["score"] for k, a in (first | later).items())
