"""µs per message of the learner's step on live-sized batches: item by item against columns (a script, not a test).

    python -m dataflows.bench.live_step [--messages 40000] [--sizes 4,8,16,32,64,128] [--repeat 3]

The first ``--messages`` flights messages (events and their labels, in arrival order, as
``python -m dataflows.produce`` sends them) go through the live source's decoding and payload types
(:class:`~dataflows.kafka_types.PayloadTypes`) and validation, cut into batches of each size. Two
learners with the live flow's settings (``linear``, the defaults) run the same batches: ``items`` as
the source built them before issue 19 (the item path), ``columns`` through
:func:`~dataflows.live_columns.live_batch` with no minimum size (wrapping included in the time). The
first half of the messages warms the models; the second half is timed; the paths are alternated and
the medians reported, with the share of batches the columnar step took.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from dataflows.decode import decode_event, decode_label
from dataflows.items import Batch
from dataflows.kafka import _MESSAGE_FIELDS
from dataflows.kafka_types import PayloadTypes
from dataflows.live_columns import live_batch
from dataflows.validate import validate_batch


def live_items(n: int) -> list[tuple]:
    """The first ``n`` flights messages decoded as the live source decodes them (offsets as seqs)."""
    from dataflows.produce import messages

    types = PayloadTypes()
    items = []
    for seq, (_, msg) in enumerate(messages("flights", limit=n)):
        obj = json.loads(json.dumps(msg))  # (what the wire carries)
        if obj.pop("kind") == "event":
            item, _ = decode_event(obj, seq=seq, reserved=_MESSAGE_FIELDS)
            payload, _ = types.normalize(item[5])
            item = (*item[:5], payload)
        else:
            item, _ = decode_label(obj, seq=seq)
        items.append(item)
    return items


def _learner() -> Any:
    from dataflows.settings import LIVE_AUTO, RunSettings

    settings = RunSettings.build("live", {"lake": "unused", "brokers": "unused", "topic": "events"})
    settings = settings.resolved(**{k: v for k, v in LIVE_AUTO.items()})
    from dataflows.learner import ShardLearner

    return ShardLearner(settings.run_config("bench"), shard=0)


def _batches(items: list[tuple], size: int) -> list[list[tuple]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _run(learner: Any, batches: list[list[tuple]], columns: bool) -> float:
    t0 = time.perf_counter()
    for part in batches:
        batch = validate_batch(Batch(0, list(part), source="kafka:events/0"))
        batch.suspects = set()
        if columns:
            batch = live_batch(batch, min_items=1)
        learner.process(batch)
    return time.perf_counter() - t0


def measure(items: list[tuple], size: int, repeat: int) -> dict[str, float]:
    half = len(items) // 2
    warm, timed = _batches(items[:half], size), _batches(items[half:], size)
    times: dict[str, list[float]] = {"items": [], "columns": []}
    taken = 0
    for _ in range(repeat):
        for path in ("items", "columns") if _ % 2 == 0 else ("columns", "items"):
            learner = _learner()
            _run(learner, warm, path == "columns")
            before = learner.columnar_batches
            times[path].append(_run(learner, timed, path == "columns"))
            if path == "columns":
                taken = learner.columnar_batches - before
    n = len(items) - half
    return {"size": size, "items_us": statistics.median(times["items"]) / n * 1e6,
            "columns_us": statistics.median(times["columns"]) / n * 1e6, "taken": taken / len(timed)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataflows.bench.live_step", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--sizes", default="4,8,16,32,64,128")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    items = live_items(args.messages)
    print(f"{len(items):,} flights messages, timed: the last {len(items) - len(items) // 2:,}; median of {args.repeat}")
    print(f"{'batch':>6} {'items µs/msg':>13} {'columns µs/msg':>15} {'ratio':>6} {'taken':>6}")
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(items, size, args.repeat)
        print(f"{size:>6} {r['items_us']:>13.1f} {r['columns_us']:>15.1f} {r['columns_us'] / r['items_us']:>6.2f} "
              f"{r['taken']:>6.0%}", flush=True)
    return 0


if __name__ == "__main__":
    from lake.entry import run_main

    run_main(main)
