"""End-to-end throughput against the bare River loop, measured in one run.

    python -m dataflows.bench [--events 100000] [--model linear] [--repeat 3]
    python -m dataflows.bench --scenario urls --events 300000      # model linear-hash, hashed URL tokens
    python -m dataflows.bench --scenario numeric --events 100000   # tabular: the columnar path, defaults
    python -m dataflows.bench --scenario categorical               # tabular with categories and nulls

1. Fills a lake with the first ``--events`` flights, ``--events`` generated URL visits, or a
   generated tabular history (:mod:`dataflows.bench.history`: ``numeric``, 8 numbers and 3 keys;
   ``categorical``, numbers, categories and nulls, 4,000 keys) (not timed).
2. Bare loop: the same featurizer and model, predict then learn in the same
   replay order, items already in memory; no Bytewax, no Delta. On the tabular histories the
   bare loop is River's ``StandardScaler | LogisticRegression`` on the raw features (strings
   one-hot, nulls left out), what a user would write by hand.
3. End to end: the dataflow (``build_flow``, one worker) reading the Delta tables
   and writing predictions, learn log, metrics and checkpoints back to a fresh
   copy of the lake. On the tabular histories also ``item``: the same dataflow with the
   columnar path switched off (``RIVERLAKE_COLUMNAR=0``), every batch item by item.

Each phase runs in its own fresh Python process (so neither inherits the other's
heap), ``--repeat`` times alternately; the process start and imports are not
timed, everything after is. The medians give the ratio (wall time), and
``cpu_ratio`` the same from CPU seconds of all threads (steadier on a shared
machine; the dataflow's Delta writes run on other threads). Prints events/s of each,
their ratio, each phase's peak RSS, and last the line
``end_to_end_vs_bare_river: R``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dataflows.features import KeyedFeaturizer
from dataflows.items import EVENT
from dataflows.models import get_spec
from lake.entry import ArgumentParser, run_main


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# Featurizer settings per scenario, the same in both phases (urls: the soak's hash space, no anomaly
# scorer: z-scores of hashed indicators describe buckets, not URLs).
SCENARIOS: dict[str, dict[str, Any]] = {
    "flights": {"featurizer": {}, "flow": {}},
    "urls": {"featurizer": {"hash_fields": ("url",), "n_buckets": 2**18},
             "flow": {"hash_fields": "url", "n_buckets": 2**18, "anomaly": None}},
    # Tabular histories: default settings (every monitor on), the bare loop on the raw features.
    "numeric": {"featurizer": {}, "flow": {}, "raw": True},
    "categorical": {"featurizer": {}, "flow": {}, "raw": True},
}


def bare_raw_loop(items: list[tuple], *, seed: int) -> tuple[float, int]:
    """River's ``StandardScaler | LogisticRegression`` on the raw payloads (strings one-hot, nulls
    left out), predict then learn; returns (seconds, events predicted)."""
    from river import linear_model, optim, preprocessing

    model = preprocessing.StandardScaler() | linear_model.LogisticRegression(optimizer=optim.SGD(0.005), l2=0.0)
    pending: dict[str, dict] = {}
    n = 0
    started = time.perf_counter()
    for item in items:
        if item[1] == EVENT:
            x = {}
            for k, v in item[5].items():
                if v is None:
                    continue
                if type(v) is str:
                    x[f"{k}={v}"] = 1.0
                else:
                    x[k] = float(v)
            model.predict_proba_one(x)
            pending[item[2]] = x
            n += 1
        else:
            x = pending.pop(item[2], None)
            if x is not None:
                model.learn_one(x, item[3] == 1)
    return time.perf_counter() - started, n


def bare_loop(items: list[tuple], *, model: str, seed: int, exclude: tuple[str, ...] = (),
              featurizer_settings: dict[str, Any] | None = None) -> tuple[float, int]:
    """Predict then learn with plain River; returns (seconds, events predicted)."""
    featurizer = KeyedFeaturizer(exclude=exclude, **(featurizer_settings or {}))
    estimator = get_spec(model).build(seed=seed)
    pending: dict[str, tuple] = {}
    n = 0
    started = time.perf_counter()
    for item in items:
        if item[1] == EVENT:
            _, _, event_id, t, key, payload = item
            x = featurizer.transform_one(payload, key=key, event_time_us=t)
            featurizer.learn_one(payload, key=key, event_time_us=t)
            proba = estimator.predict_proba_one(x)
            proba.get(True, 0.0) if proba else 0.5
            pending[event_id] = (x, key)
            n += 1
        else:
            entry = pending.pop(item[2], None)
            if entry is None:
                continue
            x, key = entry
            y = item[3] == 1
            featurizer.learn_label(key=key, y=y)
            estimator.learn_one(x, y)
    return time.perf_counter() - started, n


def _phase_bare(lake: str, model: str, seed: int, scenario: str = "flights") -> dict[str, Any]:
    from dataflows.gc_tuning import tune_gc
    from dataflows.replay import ReplayPlan, pin_versions

    tune_gc()  # as the dataflow does
    plan = ReplayPlan(lake, pin=pin_versions(lake))
    items = plan.batch(0, len(plan)).items
    cpu = time.process_time()
    if SCENARIOS[scenario].get("raw"):
        seconds, n = bare_raw_loop(items, seed=seed)
    else:
        seconds, n = bare_loop(items, model=model, seed=seed,
                               featurizer_settings=SCENARIOS[scenario]["featurizer"])
    return {"seconds": seconds, "cpu_seconds": time.process_time() - cpu, "events": n,
            "peak_rss_mb": _peak_rss_mb()}


def _phase_end_to_end(lake: str, model: str, seed: int, scenario: str = "flights") -> dict[str, Any]:
    import polars as pl
    import pyarrow as pa
    from bytewax.testing import run_main

    from dataflows.online import build_flow
    from lake.table import read_table

    pa.array([0])  # pyarrow's first conversion imports pandas (~1 s): an import, not work
    if scenario != "flights":  # numba and the compiled loops' modules (~0.7 s): imports too; loading their
        from dataflows.tabular import available  # cached machine code at the first batch is timed

        available()
    started, cpu = time.perf_counter(), time.process_time()
    run_id = "bench"
    run_main(build_flow(lake=lake, model=model, seed=seed, run_id=run_id, **SCENARIOS[scenario]["flow"]))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    n = read_table(lake, "predictions", columns=["run_id"]).filter(pl.col("run_id") == run_id).height
    return {"seconds": seconds, "cpu_seconds": cpu, "events": n, "peak_rss_mb": _peak_rss_mb()}


def _run_phase(phase: str, lake: str, model: str, seed: int, scenario: str = "flights") -> dict[str, Any]:
    cmd = [sys.executable, "-m", "dataflows.bench", "--phase", "end-to-end" if phase == "item" else phase,
           "--lake", lake, "--model", model, "--seed", str(seed), "--scenario", scenario]
    env = {**os.environ, "RIVERLAKE_COLUMNAR": "0"} if phase == "item" else None  # the item path only
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{phase} phase failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m dataflows.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events to replay (default 100000)")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="flights")
    parser.add_argument("--model", default=None, help="model spec (default linear; linear-hash for urls)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each phase (default 3)")
    parser.add_argument("--lake", default=None, help="lake folder (default: a temporary one, removed)")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this file")
    parser.add_argument("--phase", choices=["bare", "end-to-end"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    args.model = args.model or ("linear-hash" if args.scenario == "urls" else "linear")
    if args.phase:  # child process: one measurement, JSON on the last line
        fn = _phase_bare if args.phase == "bare" else _phase_end_to_end
        print(json.dumps(fn(args.lake, args.model, args.seed, args.scenario)))
        return 0

    from lake.ingest import ingest_scenario

    tmp = tempfile.mkdtemp(prefix="riverlake-bench-")
    base = args.lake or str(Path(tmp) / "lake")
    try:
        print(f"filling {base} with {args.events:,} {args.scenario} events ...", file=sys.stderr)
        if args.scenario == "flights":
            ingest_scenario(base, "flights", limit=args.events)
        elif SCENARIOS[args.scenario].get("raw"):
            _ingest_history(base, args.scenario, args.events, args.seed, tmp)
        else:
            ingest_scenario(base, args.scenario, n=args.events)
        bare, e2e, item = [], [], []
        phases = ["bare", "end-to-end", *(["item"] if SCENARIOS[args.scenario].get("raw") else [])]
        for i in range(args.repeat):
            for phase in phases if i % 2 == 0 else phases[::-1]:  # (alternated: a shared machine)
                if phase == "bare":
                    bare.append(_run_phase("bare", base, args.model, args.seed, args.scenario))
                    continue
                lake = str(Path(tmp) / f"run-{i}-{phase}")
                shutil.rmtree(lake, ignore_errors=True)
                os.makedirs(lake)
                for table in ("events", "labels", "lake_meta"):
                    if (Path(base) / table).exists():
                        shutil.copytree(Path(base) / table, Path(lake) / table)
                (e2e if phase == "end-to-end" else item).append(
                    _run_phase(phase, lake, args.model, args.seed, args.scenario))
                shutil.rmtree(lake, ignore_errors=True)
            print(f"run {i + 1}/{args.repeat}: bare {bare[-1]['seconds']:.2f} s, "
                  f"end to end {e2e[-1]['seconds']:.2f} s"
                  + (f", item path {item[-1]['seconds']:.2f} s" if item else "")
                  + f", load {os.getloadavg()[0]:.2f}", file=sys.stderr)
        n = bare[0]["events"]
        if any(r["events"] != n for r in bare + e2e + item):
            raise SystemExit(f"phases disagree on the number of events: {[r['events'] for r in bare + e2e + item]}")
        bare_s = statistics.median(r["seconds"] for r in bare)
        e2e_s = statistics.median(r["seconds"] for r in e2e)
        bare_cpu = statistics.median(r["cpu_seconds"] for r in bare)
        e2e_cpu = statistics.median(r["cpu_seconds"] for r in e2e)
        result: dict[str, Any] = {
            "events": n,
            "scenario": args.scenario,
            "model": args.model,
            "repeat": args.repeat,
            "bare_river_events_per_s": round(n / bare_s),
            "end_to_end_events_per_s": round(n / e2e_s),
            "bare_seconds_median": round(bare_s, 3),
            "end_to_end_seconds_median": round(e2e_s, 3),
            "bare_seconds_all": [round(r["seconds"], 3) for r in bare],
            "end_to_end_seconds_all": [round(r["seconds"], 3) for r in e2e],
            "bare_peak_rss_mb": round(max(r["peak_rss_mb"] for r in bare)),
            "end_to_end_peak_rss_mb": round(max(r["peak_rss_mb"] for r in e2e)),
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
            "ratio": round(bare_s / e2e_s, 3),
            # CPU seconds (all threads): steadier than wall time on a machine shared with other work.
            "bare_cpu_seconds_median": round(bare_cpu, 3),
            "end_to_end_cpu_seconds_median": round(e2e_cpu, 3),
            "cpu_ratio": round(bare_cpu / e2e_cpu, 3),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
        if item:
            item_s = statistics.median(r["seconds"] for r in item)
            result.update({
                "item_path_events_per_s": round(n / item_s),
                "item_path_seconds_all": [round(r["seconds"], 3) for r in item],
                "item_path_peak_rss_mb": round(max(r["peak_rss_mb"] for r in item)),
                "item_path_vs_bare_river": round(bare_s / item_s, 3),
            })
        for k, v in result.items():
            print(f"{k:28s} {v}")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"end_to_end_vs_bare_river: {result['ratio']}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _ingest_history(lake: str, kind: str, n: int, seed: int, tmp: str) -> None:
    """A generated tabular history (:mod:`dataflows.bench.history`) through ``lake ingest``'s code."""
    from dataflows.bench.history import history
    from lake.ingest import ingest_file

    path = str(Path(tmp) / f"{kind}.parquet")
    history(kind, n, seed=seed).write_parquet(path)
    ingest_file(lake, path, id_col="event_id", time_col="event_time", key_col="key", label_col="label",
                label_time_col="label_time")


if __name__ == "__main__":
    run_main(main)
