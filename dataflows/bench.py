"""End-to-end throughput against the bare River loop, measured in one run.

    python -m dataflows.bench [--events 100000] [--model linear] [--lake DIR]

1. Fills a fresh lake with the first ``--events`` flights (not timed).
2. Bare loop: the same featurizer and model, predict then learn on the same
   replay order, items already in memory; no Bytewax, no Delta.
3. End to end: the dataflow (``build_flow``) reading the Delta tables and
   writing predictions, learn log, metrics and checkpoints back.

Prints events/s of each, their ratio, peak memory, and last the line
``end_to_end_vs_bare_river: R``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bytewax.testing import run_main

from dataflows.features import KeyedFeaturizer
from dataflows.items import EVENT
from dataflows.models import get_spec, score_one
from dataflows.online import build_flow
from dataflows.replay import ReplayPlan, pin_versions
from lake.table import read_table


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bare_loop(items: list[tuple], *, model: str, seed: int) -> tuple[float, int]:
    """Predict then learn with plain River; returns (seconds, events)."""
    featurizer = KeyedFeaturizer()
    estimator = get_spec(model).build(seed=seed)
    pending: dict[str, tuple] = {}
    n = 0
    started = time.perf_counter()
    for item in items:
        if item[1] == EVENT:
            _, _, event_id, t, key, payload = item
            x = featurizer.transform_one(payload, key=key, event_time_us=t)
            featurizer.learn_one(payload, key=key, event_time_us=t)
            score_one(estimator, x)
            pending[event_id] = (x, key)
            n += 1
        else:
            entry = pending.pop(item[2], None)
            if entry is None:
                continue
            x, key = entry
            y = bool(item[3])
            featurizer.learn_label(key=key, y=y)
            estimator.learn_one(x, y)
    return time.perf_counter() - started, n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataflows.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="flights to replay (default 100000)")
    parser.add_argument("--model", default="linear", help="model spec (default linear)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lake", default=None, help="lake folder to use (default: a temporary one, removed)")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)

    from lake.ingest import ingest_scenario

    tmp = None
    lake = args.lake
    if lake is None:
        tmp = tempfile.mkdtemp(prefix="riverlake-bench-")
        lake = str(Path(tmp) / "lake")
    try:
        print(f"filling {lake} with {args.events:,} flights ...", file=sys.stderr)
        ingest_scenario(lake, "flights", limit=args.events)
        pin = pin_versions(lake)
        plan = ReplayPlan(lake, pin=pin)
        items = plan.batch(0, len(plan)).items
        rss0 = _rss_mb()

        bare_s, n_bare = bare_loop(items, model=args.model, seed=args.seed)
        del items, plan
        rss_bare = _rss_mb()

        run_id = f"bench-{int(time.time())}"
        flow = build_flow(lake=lake, model=args.model, seed=args.seed, run_id=run_id)
        started = time.perf_counter()
        run_main(flow)
        e2e_s = time.perf_counter() - started
        rss_e2e = _rss_mb()
        preds = read_table(lake, "predictions", columns=["run_id"]).filter(
            __import__("polars").col("run_id") == run_id).height
        if preds != n_bare:
            raise SystemExit(f"end-to-end wrote {preds} predictions, bare loop made {n_bare}")

        bare_eps = n_bare / bare_s
        e2e_eps = n_bare / e2e_s
        result: dict[str, Any] = {
            "events": n_bare,
            "model": args.model,
            "bare_river_events_per_s": round(bare_eps),
            "end_to_end_events_per_s": round(e2e_eps),
            "bare_seconds": round(bare_s, 3),
            "end_to_end_seconds": round(e2e_s, 3),
            "peak_rss_mb_after_load": round(rss0),
            "peak_rss_mb_after_bare": round(rss_bare),
            "peak_rss_mb_after_end_to_end": round(rss_e2e),
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cpus",
            "ratio": round(e2e_eps / bare_eps, 3),
        }
        for k, v in result.items():
            print(f"{k:32s} {v}")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"end_to_end_vs_bare_river: {result['ratio']}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
