"""Property-based: no input stops the dataflow, and every event is accounted for."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest
from bytewax.testing import TestingSource, run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataflows.decode import decode_event, decode_label
from dataflows.items import EVENT, Batch
from dataflows.learner import RunConfig, ShardLearner
from dataflows.online import make_flow
from dataflows.sinks import DeltaSink
from dataflows.validate import check_event, validate_batch
from lake.table import exists, read_table

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.text(min_size=5_000, max_size=6_000), st.just(1e308), st.just(-0.0),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars, max_size=2))
ids = st.one_of(st.sampled_from(["a", "b", "c", "d", "e"]), st.integers(0, 5), st.none(), st.just(""),
                st.floats(), st.text(max_size=600))
times = st.one_of(st.integers(0, 2**40), st.floats(allow_nan=True, allow_infinity=True),
                  st.sampled_from(["2026-01-01T00:00:00Z", "2026-13-45", "yesterday", ""]), st.none())
event_msgs = st.fixed_dictionaries(
    {"event_id": ids, "event_time": times},
    optional={"key": st.one_of(st.text(max_size=10), st.integers(), st.none()),
              "x": values, "y": values, "colour": values, "new_feature": values},
)
label_msgs = st.fixed_dictionaries(
    {"event_id": ids, "label": st.one_of(st.integers(-2, 3), st.booleans(), st.none(), st.text(max_size=3),
                                          st.floats()),
     "label_time": times},
)
messages = st.lists(
    st.one_of(
        event_msgs.map(lambda m: ("event", m)),
        label_msgs.map(lambda m: ("label", m)),
        st.binary(max_size=40).map(lambda b: ("event", b)),
        st.text(max_size=20).map(lambda s: ("label", s)),
    ),
    max_size=60,
)


def _to_raw(msg):
    # dict messages travel as JSON text (non-finite floats as JSON's NaN/Infinity)
    return json.dumps(msg) if isinstance(msg, dict) else msg


def _decode(msgs):
    items, dead = [], []
    for seq, (kind, msg) in enumerate(msgs):
        decoder = decode_event if kind == "event" else decode_label
        item, bad = decoder(_to_raw(msg), seq=seq)
        (items if item is not None else dead).append(item if item is not None else bad)
    return items, dead


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_learner_survives_anything_and_accounts_for_every_event(msgs):
    items, dead = _decode(msgs)
    learner = ShardLearner(RunConfig(run_id="h", models=("linear", "tree")), shard=0)
    out = learner.process(validate_batch(Batch(0, items, source="test", dead=dead)))
    final = learner.finish()
    tables = {k: v.to_pylist() for k, v in out.tables.items()}
    preds = tables.get("predictions", [])
    dead_rows = tables.get("dead_letters", [])
    assert all(d["step"] and d["reason"] for d in dead_rows)
    n_events_in = sum(1 for kind, _ in msgs if kind == "event")
    dead_events = {d["seq"] for d in dead_rows if msgs[d["seq"]][0] == "event"}
    predicted = {p["seq"] for p in preds}
    assert len(predicted) + len(dead_events) == n_events_in  # events in = predicted + dead-lettered
    assert not predicted & dead_events
    assert all(len([p for p in preds if p["seq"] == s]) == 2 for s in predicted)
    for p in preds:
        assert 0.0 <= p["score"] <= 1.0 and not math.isnan(p["score"])
    # every label either taught both models or is a dead letter
    n_labels_in = len(msgs) - n_events_in
    learned = {r["seq"] for r in tables.get("learn_log", [])}
    dead_labels = {d["seq"] for d in dead_rows if msgs[d["seq"]][0] == "label"}
    assert len(learned) + len(dead_labels) == n_labels_in
    if learned:  # the end of the stream checkpoints what was learned since the last checkpoint
        assert final.tables["checkpoints"].num_rows == 2


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(messages)
def test_dataflow_writes_every_bad_item_to_dead_letters(tmp_path_factory, msgs):
    lake = str(tmp_path_factory.mktemp("hostile"))
    items, dead = _decode(msgs)
    batch = Batch(0, items, source="test", dead=dead)
    flow = make_flow(TestingSource([batch]), DeltaSink(lake, run_id="h", flush_rows=10, flush_seconds=0.1),
                     RunConfig(run_id="h"))
    run_main(flow)
    n_events_in = sum(1 for kind, _ in msgs if kind == "event")
    preds = read_table(lake, "predictions") if exists(lake, "predictions") else pl.DataFrame({"seq": []})
    dl = read_table(lake, "dead_letters") if exists(lake, "dead_letters") else pl.DataFrame({"seq": []})
    dead_events = [s for s in dl["seq"].to_list() if msgs[s][0] == "event"]
    assert preds.height + len(dead_events) == n_events_in
    assert len(dl) == len(set(dl["seq"].to_list())) or dl.height == 0


def test_decoded_items_keep_types_the_validator_checks():
    item, dead = decode_event('{"event_id": "e", "event_time": 1.5, "x": NaN}', seq=3)
    assert dead is None and item[1] == EVENT and item[3] == 1_500_000 and math.isnan(item[5]["x"])
    _, dead = decode_event('{"event_id": "e", "event_time": "not a time"}', seq=4)
    assert dead[1] == "decode" and dead[2].startswith("event_time:")


@pytest.mark.parametrize(("text", "reason"), [
    ('{"event_id": "e", "event_time": 1.5, "x": 1e400}', "non-finite value in field 'x'"),
    ('{"event_id": "e", "event_time": 1.5, "x": -Infinity}', "non-finite value in field 'x'"),
    ('{"event_id": "e", "event_time": 1.5, "x": 123456789012345678901234567890}', "integer out of range in field 'x'"),
])
def test_numbers_json_allows_beyond_the_fast_parser_are_read_as_json_reads_them(text, reason):
    item, dead = decode_event(text.encode(), seq=0)
    assert dead is None
    assert check_event(item) == reason
