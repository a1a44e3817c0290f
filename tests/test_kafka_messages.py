"""The predictions topic's messages: written straight from a step's rows, byte for byte what
``json.dumps`` of the served row gives (what consumers of the topic have always read)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dataflows import rows
from dataflows.kafka import _messages, _served

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


@pytest.mark.parametrize("champion", [0, 1])
def test_a_columnar_steps_table_gives_json_dumps_of_the_served_rows(champion: int) -> None:
    # A columnar step hands its predictions over as an Arrow table (tens to thousands of events after a stall):
    # its messages are built from the columns, byte for byte what json.dumps of each served row gives.
    import pyarrow as pa

    from dataflows.kafka import _table_messages

    n = len(ODD_SCORES)
    ids = ["e-1", "é\u2603\U0001f600", 'quote" back\\slash', "tab\tnew\nline\x00", "e-5", "a" * 300,
           "日本", "e-8", "e-9", "</script>"]
    keys = ["k", "ключ", "k\u2028", "", "k5", "k6", "k7", "k8", "k9", "k10"]
    times = [0, 1, 999_999, 1_000_000, 1_420_070_400_123_456, -2_208_988_800_000_000, 7_258_118_399_999_999,
             1_600_000_000_000_000, 1_600_000_000_000_001, 42]
    models = [("linear", "challenger"), ("tree", "challenger")]
    models[champion] = (models[champion][0], "champion")
    table = _step([ODD_SCORES, list(reversed(ODD_SCORES))], ids=ids, keys=keys, times=times, models=models,
                  runs=[[(0, "v1"), (4, "v2")], [(0, "w1"), (2, "w2"), (10, "w3")]]).arrow()
    assert isinstance(table, pa.Table)
    fast = _table_messages(table)
    assert fast is not None and len(fast) == n
    assert fast == _messages(table) == [(r["key"].encode(), json.dumps(r).encode()) for r in _served(table)]
    # A table not of the usual types (a prediction stored as a float, a null version) goes through json.dumps.
    as_float = table.set_column(table.schema.get_field_index("prediction"), "prediction",
                                table.column("prediction").cast(pa.float64()))
    nulls = table.set_column(table.schema.get_field_index("model_version"), "model_version",
                             pa.array([None] * table.num_rows, pa.string()))
    for odd in (as_float, nulls):
        assert _table_messages(odd) is None
        assert _messages(odd) == [(r["key"].encode(), json.dumps(r).encode()) for r in _served(odd)]
