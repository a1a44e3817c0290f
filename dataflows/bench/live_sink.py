"""What the live lake sink costs the prediction path: the step's thread's CPU in ``write_batch`` and in a snapshot.

    python -m dataflows.bench.live_sink [--events 6000] [--shards 4] [--repeat 3]

Four shard learners (model ``linear``) make their steps' rows from a synthetic stream (8 numeric
features, 50 keys, every event labelled 5 events later) in steps of 25 items, as a live flow hands
them over; one live sink partition per shard (``snapshot_rows``, no commit due) takes them, then
snapshots once its background threads caught up. Prints the CPU seconds of the calling thread
(the prediction path's) for all ``write_batch`` calls and for the snapshots, and the snapshot's
bytes. The rows are written nowhere (the sinks are aborted).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time

S = 1_000_000


def _stream(n: int, seed: int = 3) -> list[tuple]:
    from dataflows.items import EVENT, LABEL

    rng = random.Random(seed)
    items, seq = [], 0
    for i in range(n):
        x = {f"f{j}": rng.uniform(0, 10) for j in range(8)}
        items.append((seq, EVENT, f"e{i}", (1_000 + i) * S, f"k{i % 50}", x))
        seq += 1
        if i >= 5:
            j = i - 5
            items.append((seq, LABEL, f"e{j}", rng.random() < 0.4, (1_000 + i) * S, f"k{j % 50}"))
            seq += 1
    return items


def run(*, events: int = 6_000, shards: int = 4, repeat: int = 3, step: int = 25) -> dict[str, object]:
    """The figures (ms of the calling thread's CPU per run, medians)."""
    from dataflows.items import Batch
    from dataflows.learner import RunConfig, ShardLearner
    from dataflows.sinks import DeltaSinkPartition
    from dataflows.validate import validate_batch

    items = _stream(events)
    config = RunConfig(run_id="bench", models=("linear",))
    outputs = []
    for shard in range(shards):
        learner = ShardLearner(config, shard=shard)
        outputs += [learner.process(validate_batch(Batch(shard, items[i:i + step])))
                    for i in range(0, len(items), step)]
    writes, snaps, sizes = [], [], []
    for _ in range(repeat):
        sinks = [DeltaSinkPartition(tempfile.mkdtemp(prefix="bench-live-sink-"), run_id="bench", flush_rows=10**9,
                                    flush_seconds=3_600.0, snapshot_rows=True) for _ in range(shards)]
        c0 = time.thread_time()
        for out in outputs:
            sinks[out.shard].write_batch([out])
        c1 = time.thread_time()
        for sink in sinks:  # the snapshot comes once the background threads caught up, as in a steady run
            pool = getattr(sink, "_pack_pool", None)
            if pool is not None:
                pool.submit(lambda: None).result()
        c2 = time.thread_time()
        states = [sink.snapshot() for sink in sinks]
        c3 = time.thread_time()
        for sink in sinks:
            sink.abort()
        writes.append((c1 - c0) * 1e3)
        snaps.append((c3 - c2) * 1e3)
        sizes.append(sum(len(state[1]) for state in states if state))
    rows = sum(o.tables["predictions"].num_rows for o in outputs if "predictions" in o.tables)
    return {"steps": len(outputs), "prediction_rows": rows, "write_batch_ms": round(statistics.median(writes), 1),
            "snapshot_ms": round(statistics.median(snaps), 1), "snapshot_bytes": int(statistics.median(sizes)),
            "runs": repeat}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataflows.bench.live_sink", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=6_000, help="events per shard")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    res = run(events=args.events, shards=args.shards, repeat=args.repeat)
    print(f"live lake sink, {res['steps']:,} steps ({res['prediction_rows']:,} predictions) on {args.shards} shards: "
          f"the step's thread spent {res['write_batch_ms']} ms in write_batch and {res['snapshot_ms']} ms in the "
          f"snapshot ({res['snapshot_bytes']:,} bytes); medians of {res['runs']} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
