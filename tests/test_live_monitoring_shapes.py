"""The live step's monitoring on live-sized batches gives the tables of the numpy paths, on streams unlike flights.

A live learner sees batches of a few items; its statistics windows and z-score scorer hold what they learn until
64 events wait (:data:`monitoring.windows.HOLD_ROWS`, :data:`monitoring.anomaly.HOLD_ROWS`), and a batch's labels go
through the windows and the prequential metrics on Python numbers (``_SMALL``, :data:`monitoring.prequential.SMALL`).
With those off, every table of the run must be the same: counts, keys and positions exactly, floats to 1e-9 (the
statistics of another grouping of the same events).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from dataflows.decode import decode_event, decode_label
from dataflows.items import Batch
from dataflows.kafka import _MESSAGE_FIELDS
from dataflows.kafka_types import PayloadTypes
from dataflows.learner import ShardLearner
from dataflows.settings import LIVE_AUTO, RunSettings
from dataflows.validate import validate_batch
from lake.scenarios.shapes import shape_rows

_FIXED = ("id", "time", "key", "label", "label_time")
_CLOCKS = ("closed_at", "written_at", "created_at", "expired_at")


def _items(name: str, n: int) -> list[tuple]:
    """The shape's rows as the live source decodes its messages (events, and labels at their label time)."""
    def iso(v):
        return v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v

    plan = []
    for i, r in enumerate(shape_rows(name, n=n)):
        payload = {k: v for k, v in r.items() if k not in _FIXED}
        plan.append((r["time"], 0, i, {"event_id": str(r["id"]), "event_time": iso(r["time"]), "key": str(r["key"]),
                                       **payload}))
        if r["label"] is not None and r["label_time"] is not None:
            plan.append((r["label_time"], 1, i, {"event_id": str(r["id"]), "label": r["label"],
                                                 "label_time": iso(r["label_time"])}))
    plan.sort(key=lambda p: p[:3])
    types, items = PayloadTypes(), []
    for seq, (_, kind, _, msg) in enumerate(plan):
        if kind == 0:
            item, _ = decode_event(msg, seq=seq, reserved=_MESSAGE_FIELDS)
            item = (*item[:5], types.normalize(item[5])[0])
        else:
            item, _ = decode_label(msg, seq=seq)
        items.append(item)
    return items


def _tables(items: list[tuple], size: int) -> dict[str, list[dict]]:
    settings = RunSettings.build("live", {"lake": "unused", "brokers": "unused", "topic": "events"})
    learner = ShardLearner(settings.resolved(**LIVE_AUTO).run_config("shapes"), shard=0)
    parts: dict[str, list[pa.Table]] = {}
    outs = []
    for lo in range(0, len(items), size):
        batch = validate_batch(Batch(0, items[lo:lo + size], source="kafka:events/0"))
        batch.suspects = set()
        outs.append(learner.process(batch))
    outs.append(learner.finish())
    for out in outs:
        for name, t in out.tables.items():
            parts.setdefault(name, []).append(t if isinstance(t, pa.Table) else t.arrow())
    return {name: pa.concat_tables(ts, promote_options="default").to_pylist() for name, ts in parts.items()
            if name not in ("run_summaries", "checkpoints")}


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize(("shape", "n"), [("daily-decades", 1_500), ("subsecond-bursts", 2_000),
                                          ("categorical-only", 600), ("nulls-everywhere", 1_200)])
def test_live_sized_batches_monitor_as_the_numpy_paths_do(shape, n, monkeypatch):
    import monitoring.anomaly as anomaly
    import monitoring.prequential as prequential
    import monitoring.windows as windows

    items = _items(shape, n)
    held = _tables(items, 5)
    for module, name, value in ((windows, "HOLD_ROWS", 1), (anomaly, "HOLD_ROWS", 1), (prequential, "SMALL", 0),
                                (windows, "_SMALL", 0)):
        monkeypatch.setattr(module, name, value)
    merged = _tables(items, 5)
    assert held.keys() == merged.keys() and {"predictions", "learn_log", "window_stats", "metrics"} <= held.keys()
    for table, rows in held.items():
        assert len(rows) == len(merged[table]), table
        for a, b in zip(rows, merged[table], strict=True):
            a, b = ({k: v for k, v in r.items() if k not in _CLOCKS} for r in (a, b))
            assert _close(a, b), (table, a, b)
