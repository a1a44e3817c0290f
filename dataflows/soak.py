"""Soak run: millions of events through the dataflow, memory and throughput over time.

    python -m dataflows.soak [--repeat 6] [--model linear] [--lake DIR] [--every 10]

Fills a lake with the 2013 flights played ``--repeat`` times (6 × 336,776 ≈ 2.0M
events), replays it with recovery on, and samples the process's resident memory
and the replay position every ``--every`` seconds. Prints one line per sample and
a summary: peak RSS after warm-up vs at the end, events/s per interval.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataflows.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=6, help="times the year of flights is played (default 6)")
    parser.add_argument("--model", default="linear")
    parser.add_argument("--lake", default=None, help="lake folder (default: a temporary one, removed)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    args = parser.parse_args(argv)

    from dataflows.online import replay_job
    from lake.ingest import ingest_scenario

    tmp = None if args.lake else tempfile.mkdtemp(prefix="riverlake-soak-")
    lake = args.lake or str(Path(tmp) / "lake")
    try:
        print(f"filling {lake} with the flights x{args.repeat} ...", file=sys.stderr, flush=True)
        print(ingest_scenario(lake, "flights", repeat=args.repeat), file=sys.stderr, flush=True)
        position = {"items": 0, "total": 0}

        def progress(shard: int, pos: int, total: int) -> None:
            position["items"], position["total"] = pos, total

        proc = psutil.Process()
        samples: list[tuple[float, float, int]] = []
        done = threading.Event()

        def sample() -> None:
            started = time.monotonic()
            while not done.wait(args.every):
                samples.append((time.monotonic() - started, proc.memory_info().rss / 2**20, position["items"]))
                t, rss, items = samples[-1]
                prev = samples[-2] if len(samples) > 1 else (0.0, 0.0, 0)
                rate = (items - prev[2]) / (t - prev[0])
                print(f"t={t:7.1f}s  rss={rss:7.1f} MiB  items={items:>10,}  items/s={rate:>9,.0f}", flush=True)

        from datetime import timedelta

        from bytewax.recovery import RecoveryConfig, init_db_dir
        from bytewax.testing import run_main

        job = replay_job(lake, args.model, exclude="tailnum,flight", run_id="soak")
        job.source.progress = progress
        db_dir = Path(lake) / "_recovery" / "soak"
        db_dir.mkdir(parents=True, exist_ok=True)
        init_db_dir(db_dir, 1)
        sampler = threading.Thread(target=sample, daemon=True)
        started = time.monotonic()
        sampler.start()
        run_main(job.flow(), epoch_interval=timedelta(seconds=3), recovery_config=RecoveryConfig(str(db_dir)))
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()
        total = position["total"]
        print(f"replayed {total:,} items in {elapsed:.1f} s ({total / elapsed:,.0f} items/s)")
        if len(samples) >= 4:
            warm = samples[len(samples) // 4]
            print(f"rss after warm-up (t={warm[0]:.0f}s): {warm[1]:.1f} MiB; peak: {max(s[1] for s in samples):.1f} "
                  f"MiB; last: {samples[-1][1]:.1f} MiB")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
