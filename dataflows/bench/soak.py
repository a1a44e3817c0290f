"""Soak run: millions of events through the dataflow, memory and throughput over time.

    python -m dataflows.bench.soak [--repeat 6] [--model linear] [--lake DIR] [--every 10]
    python -m dataflows.bench.soak --scenario urls --n 2000000     # model linear-hash on hashed URL tokens
    taskset -c 0 python -m dataflows.bench.soak --scenario urls --n 2000000   # the same on one core
    python -m dataflows.bench.soak --scenario numeric --n 2000000  # a tabular history, defaults (columnar)

Fills a lake with the 2013 flights played ``--repeat`` times (6 × 336,776 ≈ 2.0M
events), with ``--n`` generated URL visits or a generated tabular history
(``numeric``, ``categorical``: :mod:`dataflows.bench.history`), replays it with recovery on (a
snapshot every 10 s), and samples the process's resident memory and the replay
position every ``--every`` seconds. Prints one line per sample and a summary: peak
RSS after warm-up vs at the end, events/s per interval.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import polars as pl
import psutil

from lake.entry import ArgumentParser, run_main
from lake.table import scan_table


def read_events_count(lake: str) -> int:
    return scan_table(lake, "events").select(pl.len()).collect().item()


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m dataflows.bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=6, help="times the year of flights is played (default 6)")
    parser.add_argument("--scenario", choices=["flights", "urls", "numeric", "categorical"], default="flights")
    parser.add_argument("--n", type=int, default=2_000_000, help="urls, numeric, categorical: events to generate")
    parser.add_argument("--model", default=None, help="default: linear (flights), linear-hash (urls)")
    parser.add_argument("--lake", default=None, help="lake folder (default: a temporary one, removed)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--n-buckets", type=int, default=2**18, help="urls: hash space of the URL tokens")
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help="learns between model checkpoints (default: 10,000 for flights; 100,000 for urls, "
                             "whose model is ~4.5 MB: every 10,000 would write ~450 MB of checkpoints per 1M events)")
    parser.add_argument("--anomaly", default=None,
                        help="anomaly scorer spec or 'none' (default: zscore for flights, none for urls: "
                             "z-scores of hashed indicators say nothing)")
    parser.add_argument("--batch-size", type=int, default=None, help="items per replay batch (default: the replay's)")
    parser.add_argument("--snapshot-s", type=float, default=10.0, help="seconds between recovery snapshots")
    args = parser.parse_args(argv)

    from dataflows.online import replay_job
    from lake.ingest import ingest_scenario

    tmp = None if args.lake else tempfile.mkdtemp(prefix="riverlake-soak-")
    lake = args.lake or str(Path(tmp) / "lake")
    try:
        tabular = args.scenario in ("numeric", "categorical")
        if args.scenario == "flights":
            params, settings = {"repeat": args.repeat}, {"exclude": "tailnum,flight"}
        elif tabular:
            params, settings = {"n": args.n}, {}
        else:
            params, settings = {"n": args.n}, {"hash_fields": "url", "n_buckets": args.n_buckets}
        anomaly = args.anomaly or ("none" if args.scenario == "urls" else "zscore")
        settings["anomaly"] = None if anomaly == "none" else anomaly
        model = args.model or ("linear-hash" if args.scenario == "urls" else "linear")
        print(f"filling {lake} with {args.scenario} {params} ...", file=sys.stderr, flush=True)
        if tabular:
            from dataflows.bench.history import history
            from lake.ingest import ingest_frame

            print(ingest_frame(lake, history(args.scenario, args.n), source=args.scenario, id_col="event_id",
                               time_col="event_time", key_col="key", label_col="label",
                               label_time_col="label_time"), file=sys.stderr, flush=True)
        else:
            print(ingest_scenario(lake, args.scenario, **params), file=sys.stderr, flush=True)
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

        from lake.integrity import check_recovery

        every = args.checkpoint_every or (100_000 if args.scenario == "urls" else 10_000)
        if args.batch_size:
            settings["batch_size"] = args.batch_size
        job = replay_job(lake, model, run_id="soak", checkpoint_every=every, **settings)
        job.source.progress = progress
        db_dir = Path(lake) / "_recovery" / "soak"
        db_dir.mkdir(parents=True, exist_ok=True)
        init_db_dir(db_dir, 1)
        check_recovery(db_dir)  # Bytewax unpickles what it finds there: plain data only
        sampler = threading.Thread(target=sample, daemon=True)
        started = time.monotonic()
        cpu0 = proc.cpu_times()
        sampler.start()
        run_main(job.flow(), epoch_interval=timedelta(seconds=args.snapshot_s),
                 recovery_config=RecoveryConfig(str(db_dir)))
        elapsed = time.monotonic() - started
        cpu1 = proc.cpu_times()
        cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        done.set()
        sampler.join()
        total = position["total"]
        events = read_events_count(lake)
        print(f"replayed {total:,} items ({events:,} events) in {elapsed:.1f} s: {total / elapsed:,.0f} items/s, "
              f"{events / elapsed:,.0f} events/s; CPU {cpu:.1f} s ({events / cpu:,.0f} events per CPU second)")
        learner_state = {"model": model, "scenario": args.scenario, "checkpoint_every": every}
        from lake.table import read_table

        m = read_table(lake, "metrics")
        learner_state["accuracy"] = round(m["n_correct"].sum() / max(1, m["n"].sum()), 4)
        if args.scenario == "urls":
            ckpt = read_table(lake, "checkpoints").sort("n_learned").tail(1)
            from lake.reproduce import load_checkpoint

            est = load_checkpoint(ckpt.row(0, named=True))  # its sha256 and HMAC checked first
            weights = getattr(est, "weights", None)
            learner_state["final_model_bytes"] = len(ckpt["model_bytes"][0])
            learner_state["weights"] = len(weights) if weights is not None else None
            tokens = read_table(lake, "events", columns=["url"])["url"].str.to_lowercase() \
                .str.extract_all("[a-z0-9]+").explode().n_unique()
            learner_state["distinct_tokens"] = tokens
        print(learner_state)
        if len(samples) >= 4:
            warm = samples[len(samples) // 4]
            print(f"rss after warm-up (t={warm[0]:.0f}s): {warm[1]:.1f} MiB; peak: {max(s[1] for s in samples):.1f} "
                  f"MiB; last: {samples[-1][1]:.1f} MiB")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    run_main(main)
