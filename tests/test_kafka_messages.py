"""The predictions topic's messages: written straight from a step's rows, byte for byte what
``json.dumps`` of the served row gives (what consumers of the topic have always read)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dataflows import rows
from dataflows.kafka_messages import _served
from dataflows.kafka_messages import messages as _messages

ODD_SCORES = [0.5, float("nan"), float("inf"), -float("inf"), 1e-320, 0.1 + 0.2, 1.0, 0.0, -0.0, 5e300]


def _step(scores: list[list[float]], *, ids: list[str], keys: list[str], times: list[int],
          models: list[tuple[str, str]], runs: list[list[tuple[int, str]]]) -> rows.StepRows:
    n = len(ids)
    return rows.predictions(run_id="run", shard=0, models=models, threshold=0.5, seq=list(range(n)),
                            event_id=ids, event_time=times, key=keys, features=[{"x": 1.0}] * n,
                            scores=scores, runs=runs, anomaly=None)


def _as_json_dumps(preds: rows.StepRows) -> list[tuple[bytes, bytes]]:
    """What the sink wrote before: json.dumps of each served row of the step's Arrow table."""
    return [(r["key"].encode(), json.dumps(r).encode()) for r in _served(preds.arrow())]


@pytest.mark.parametrize("champion", [0, 1])
def test_messages_are_json_dumps_of_the_served_rows_on_odd_values(champion: int) -> None:
    n = len(ODD_SCORES)
    ids = ["e-1", "é\u2603\U0001f600", 'quote" back\\slash', "tab\tnew\nline\x00", "e-5", "a" * 300,
           "日本", "e-8", "e-9", "</script>"]
    keys = ["k", "ключ", "k\u2028", "", "k5", "k6", "k7", "k8", "k9", "k10"]
    times = [0, 1, 999_999, 1_000_000, 1_420_070_400_123_456, -2_208_988_800_000_000, 7_258_118_399_999_999,
             1_600_000_000_000_000, 1_600_000_000_000_001, 42]
    models = [("linear", "challenger"), ("tree", "challenger")]
    models[champion] = (models[champion][0], "champion")
    other = list(reversed(ODD_SCORES))
    # the model version changes mid-step (a checkpoint), and for the other model twice
    preds = _step([ODD_SCORES, np.array(other)], ids=ids, keys=keys, times=times, models=models,
                  runs=[[(0, "v1"), (4, "v2")], [(0, "w1"), (2, "w2"), (10, "w3")]])
    got = _messages(preds)
    assert got == _as_json_dumps(preds)
    assert len(got) == n
    nan_at = 1 if champion == 0 else n - 2  # NaN as JavaScript spells it, as json.dumps writes it
    assert b'"score": NaN' in got[nan_at][1] and json.loads(got[nan_at][1])["event_id"] == ids[nan_at]
    assert json.loads(got[0][1])["event_time"] == "1970-01-01T00:00:00+00:00"


def test_no_champion_sends_nothing() -> None:
    preds = _step([[0.7]], ids=["e"], keys=["k"], times=[0], models=[("linear", "challenger")], runs=[[(0, "v")]])
    assert _messages(preds) == [] == _as_json_dumps(preds)


def test_values_of_other_types_go_through_json_dumps() -> None:
    # a version that is not a string (not one the learner makes) is still written as json.dumps writes it
    preds = _step([[0.7, 0.2]], ids=["e1", "\ud800lone surrogate"], keys=["k1", "k2"], times=[5, 6],
                  models=[("linear", "champion")], runs=[[(0, "v1"), (1, None)]])
    assert _messages(preds) == [(r["key"].encode(), json.dumps(r).encode()) for r in _served(preds)]
    assert json.loads(_messages(preds)[1][1])["model_version"] is None


def test_integers_in_a_number_column_are_stored_as_their_floats() -> None:
    import pyarrow as pa

    from dataflows.kafka_types import PayloadTypes

    types = PayloadTypes(pa.schema([("delay", pa.float64()), ("n", pa.int64())]))
    big = 2**1023 + 1
    for value, expected in [(5, 5.0), (-7, -7.0), (2**53 + 1, float(2**53 + 1)), (0, 0.0), (True, 1.0)]:
        payload, reason = types.normalize({"delay": value, "n": 3})
        assert reason is None and payload == {"delay": expected, "n": 3}
        assert type(payload["delay"]) is float
    assert types.normalize({"delay": big})[0] == {"delay": float(big)}
    payload, reason = types.normalize({"delay": 10**400})  # beyond any double: refused, naming the field
    assert payload is None and "field 'delay' must be a number" in reason


def test_a_columnar_steps_rows_of_arrow_columns_take_the_direct_path() -> None:
    # The tabular step hands its rows over with Arrow columns (ids, keys, times as UTC timestamps).
    import pyarrow as pa

    from dataflows.kafka_messages import _step_messages
    from lake.schemas import UTC_TS

    ids = ["e-1", "é\u2603", 'q"\\', "e-4"]
    keys = ["k", "ключ", "", "k4"]
    times = [0, 1_420_070_400_123_456, -2_208_988_800_000_000, 42]
    preds = rows.predictions(run_id="run", shard=0, models=[("linear", "champion"), ("tree", "challenger")],
                             threshold=0.5, seq=pa.array(range(4), pa.int64()), event_id=pa.array(ids, pa.string()),
                             event_time=pa.array(times, pa.int64()).cast(UTC_TS), key=pa.array(keys, pa.string()),
                             features=[{"x": 1.0}] * 4, scores=np.array([ODD_SCORES[:4], ODD_SCORES[4:8]]),
                             runs=[[(0, "v1"), (2, "v2")], [(0, "w1")]], anomaly=None)
    fast = _step_messages(preds)
    assert fast is not None and len(fast) == 4
    assert fast == _messages(preds) == _as_json_dumps(preds)
    with_null = rows.predictions(run_id="run", shard=0, models=[("linear", "champion")], threshold=0.5,
                                 seq=[0, 1], event_id=pa.array(["a", None], pa.string()), event_time=[1, 2],
                                 key=["k", "k"], features=[{}] * 2, scores=[[0.1, 0.9]], runs=[[(0, "v")]],
                                 anomaly=None)
    assert _step_messages(with_null) is None  # (a null id: json.dumps writes it as it always did)
    assert _messages(with_null) == [(r["key"].encode(), json.dumps(r).encode()) for r in _served(with_null)]
