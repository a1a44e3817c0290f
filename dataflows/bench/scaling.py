"""Scaling out: the same replay with 1, 2, 4, 8 Bytewax processes (or workers), measured.

    python -m dataflows.bench.scaling [--events 100000] [--counts 1,2,4,8] [--mode processes|workers]
                                [--shards 8] [--model linear] [--repeat 1] [--json FILE]
                                [--per-key] [--key carrier|route] [--colocate]

1. Fills a lake with the first ``--events`` flights (or uses ``--lake``'s
   ``events``/``labels``), not timed.
2. For each count N, replays that one history into a fresh copy of the lake with
   the sharded global model (``--shards`` model copies, a key served by its
   shard's copy) or, with ``--per-key``, one model per key (``--key``: carrier or
   route); the same shards for every N, so every run does the same work:
   ``processes`` starts N processes of one worker each, wired on 127.0.0.1
   (``-i``/``-a``); ``workers`` starts one process with N worker threads (``-w N``).
   Timed: from the first process entering the dataflow to the last leaving it
   (process start and imports are reported apart).
3. Prints, per N: events/s, speedup over N = 1, efficiency against linear
   (speedup / N); the machine (cores, memory); and what each run spent in Delta
   commits, what the source spends building its plan, and what moving a batch
   between processes costs (pickling), measured on the same data.

The runs check that every N wrote the same number of predictions.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lake.entry import ArgumentParser, run_main


def machine() -> dict[str, Any]:
    """Cores, memory and CPU of this machine."""
    info: dict[str, Any] = {"cores": os.cpu_count(), "python": platform.python_version(),
                            "arch": platform.machine()}
    if hasattr(os, "sched_getaffinity"):
        info["cores_usable"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        info["load_1m"] = round(os.getloadavg()[0], 2)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (for a local Bytewax cluster's ``-a`` list)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class _CommitStats(logging.Handler):
    """Collects the per-writer commit totals the Delta sink logs when it closes."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.rows: list[tuple] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and " rows in " in record.msg and isinstance(record.args, tuple):
            self.rows.append(tuple(record.args))


def _child(args: argparse.Namespace) -> dict[str, Any]:
    """One process of a run: build the flow, run it, report times, CPU and commit totals as JSON."""
    import resource
    from datetime import timedelta

    import pyarrow as pa
    from bytewax._bytewax import cli_main

    from dataflows.online import build_flow

    pa.array([0])  # pyarrow's first conversion imports pandas: an import, not work
    stats = _CommitStats()
    sink_log = logging.getLogger("dataflows.sinks")
    sink_log.addHandler(stats)
    sink_log.setLevel(logging.INFO)
    flow = build_flow(lake=args.lake, model=args.model, run_id=args.run_id, shards=args.shards,
                      batch_size=args.batch_size, colocate=args.colocate, per_key=args.per_key,
                      balance=args.balance)
    addresses = args.addresses.split(";") if args.addresses else None
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.time()
    cli_main(flow, workers_per_process=args.workers, process_id=args.process_id if addresses else None,
             addresses=addresses, epoch_interval=timedelta(seconds=10))
    ended = time.time()
    after = resource.getrusage(resource.RUSAGE_SELF)
    commit_s = sum(float(r[-1]) for r in stats.rows if len(r) == 5)
    commits = sum(int(r[3]) for r in stats.rows if len(r) == 5)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"startup_s": started - args.spawned, "start": started, "end": ended, "cpu_s": cpu_s,
            "commit_s": commit_s, "commits": commits}


def _run(lake: str, *, n: int, mode: str, run_id: str, model: str, shards: int, batch_size: int,
         colocate: bool = False, per_key: bool = False, balance: bool = False) -> dict[str, Any]:
    """Run the replay with ``n`` processes or workers; returns the phase times."""
    base = [sys.executable, "-m", "dataflows.bench.scaling", "--child", "--lake", lake, "--run-id", run_id,
            "--model", model, "--shards", str(shards), "--batch-size", str(batch_size),
            *(["--colocate"] if colocate else []), *(["--per-key"] if per_key else []),
            *(["--balance"] if balance else [])]
    if mode == "workers":
        cmds = [[*base, "--workers", str(n)]]
    else:
        addresses = ";".join(f"127.0.0.1:{p}" for p in free_ports(n)) if n > 1 else ""
        cmds = [[*base, "--workers", "1", "--process-id", str(i), "--addresses", addresses] for i in range(n)]
    spawned = time.time()
    procs = [subprocess.Popen([*cmd, "--spawned", repr(spawned)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for cmd in cmds]
    outs = [p.communicate() for p in procs]
    wall = time.time() - spawned
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"a process of the {n}-{mode} run failed:\n{err[-4000:]}")
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    return {
        "wall_s": wall,
        "dataflow_s": max(r["end"] for r in reports) - min(r["start"] for r in reports),
        "startup_s": max(r["startup_s"] for r in reports),
        "cpu_s": sum(r["cpu_s"] for r in reports),
        "commit_s": sum(r["commit_s"] for r in reports),
        "commits": sum(r["commits"] for r in reports),
    }


def placement_ceilings(lake: str, *, shards: int, counts: list[int], balance: bool = False) -> list[dict[str, Any]]:
    """How evenly the history's events fall on ``counts`` processes, and the efficiency that allows.

    Keys go to shards by CRC-32 (or by event counts with ``balance``); Bytewax hands a fixed
    source's partitions to workers round-robin in sorted order of their names (checked on
    0.21.1: ``shard-s`` on worker ``s mod N`` for up to 10 shards), and with ``colocate`` a
    shard's learning and writing stay there. The process with the most events decides when
    a replay ends, so efficiency against linear is at most mean load / max load.
    """

    from dataflows.replay import balanced_shards, pin_versions, shard_of
    from lake.table import read_table

    keys = read_table(lake, "events", version=pin_versions(lake).events, columns=["key"])
    per_key = keys.get_column("key").value_counts()
    events_of = dict(zip(per_key["key"].to_list(), per_key["count"].to_list(), strict=True))
    placed = (balanced_shards(events_of, shards) if balance and shards > 1
              else {k: shard_of(k, shards) for k in events_of})
    load = [0] * shards
    for key, n in events_of.items():
        load[placed[key]] += n
    names = sorted(f"shard-{i}" for i in range(shards))  # Bytewax's order of the partitions
    total = sum(load) or 1
    rows = []
    for n in counts:
        per_process = [0] * n
        for position, name in enumerate(names):
            per_process[position % n] += load[int(name.rsplit("-", 1)[1])]
        busiest = max(per_process) / total
        rows.append({"n": n, "busiest_share": busiest, "ceiling": (1.0 / n) / busiest if busiest else 1.0})
    return rows


def costs(lake: str, *, model: str, shards: int, batch_size: int, per_key: bool = False) -> dict[str, float]:
    """What the source's plan and moving data between processes cost, measured on ``lake``."""
    from dataflows.learner import RunConfig, ShardLearner
    from dataflows.replay import ReplayPlan, pin_versions
    from dataflows.validate import validate_batch

    pin = pin_versions(lake)
    t = time.perf_counter()
    plan = ReplayPlan(lake, pin=pin, shard=0, shards=shards)
    plan_s = time.perf_counter() - t
    batch = plan.batch(0, batch_size)
    n_events = sum(1 for it in batch.items if it[1] == 0) or 1
    learner = ShardLearner(RunConfig(run_id="cost", models=(model,), per_key=per_key), shard=0)
    out = learner.process(validate_batch(plan.batch(0, batch_size)))

    def roundtrip(obj: Any) -> float:
        reps, t0 = 5, time.perf_counter()
        for _ in range(reps):
            pickle.loads(pickle.dumps(obj, protocol=5))
        return (time.perf_counter() - t0) / reps

    return {
        "plan_s_per_shard": plan_s,
        "batch_pickle_us_per_event": roundtrip(batch) / n_events * 1e6,
        "output_pickle_us_per_event": roundtrip(out) / n_events * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m dataflows.bench.scaling", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="flights to replay (default 100000)")
    parser.add_argument("--lake", default=None, help="replay this lake's events/labels instead of flights")
    parser.add_argument("--counts", default="1,2,4,8", help="processes (or workers) per run (default 1,2,4,8)")
    parser.add_argument("--mode", choices=["processes", "workers"], default="processes")
    parser.add_argument("--shards", type=int, default=None, help="model copies (default: the largest count)")
    parser.add_argument("--model", default="linear")
    parser.add_argument("--batch-size", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per count; the median is kept")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this file")
    parser.add_argument("--colocate", action="store_true",
                        help="learn each shard inside its source partition (dataflows.colocated)")
    parser.add_argument("--per-key", action="store_true", help="one model per key instead of one per shard")
    parser.add_argument("--balance", action="store_true", help="place keys on shards by event counts, not CRC-32")
    parser.add_argument("--key", choices=["carrier", "route"], default="carrier",
                        help="the flights' entity key: shards and per-key models follow it (default carrier)")
    for hidden, kind in (("--child", "store_true"),):
        parser.add_argument(hidden, action=kind, help=argparse.SUPPRESS)
    for hidden, type_ in (("--run-id", str), ("--workers", int), ("--process-id", int), ("--addresses", str),
                          ("--spawned", float)):
        parser.add_argument(hidden, type=type_, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0

    counts = sorted({int(c) for c in args.counts.split(",") if c.strip()})
    if not counts or counts[0] < 1:
        raise SystemExit(f"--counts must list positive integers, got {args.counts!r}")
    shards = args.shards or max(counts)
    if shards < max(counts):
        print(f"note: {shards} shards for up to {max(counts)} processes: some will idle", file=sys.stderr)
    import polars as pl

    from lake.ingest import ingest_scenario
    from lake.table import read_table

    tmp = tempfile.mkdtemp(prefix="riverlake-scaling-")
    try:
        base = args.lake
        if base is None:
            base = str(Path(tmp) / "base")
            print(f"filling {base} with {args.events:,} flights keyed by {args.key} ...", file=sys.stderr)
            ingest_scenario(base, "flights", limit=args.events, key=args.key)
        rows: list[dict[str, Any]] = []
        n_events: int | None = None
        result_machine = machine()
        for n in counts:
            runs = []
            for r in range(args.repeat):
                lake = str(Path(tmp) / f"run-{n}-{r}")
                for table in ("events", "labels"):
                    shutil.copytree(Path(base) / table, Path(lake) / table)
                run_id = f"scaling-{args.mode}-{n}"
                runs.append(_run(lake, n=n, mode=args.mode, run_id=run_id, model=args.model, shards=shards,
                                 batch_size=args.batch_size, colocate=args.colocate, per_key=args.per_key,
                                 balance=args.balance))
                got = read_table(lake, "predictions", columns=["run_id"]).filter(pl.col("run_id") == run_id).height
                if n_events is None:
                    n_events = got
                elif got != n_events:
                    raise SystemExit(f"{n} {args.mode} wrote {got} predictions, 1 wrote {n_events}")
                shutil.rmtree(lake, ignore_errors=True)
                print(f"{n} {args.mode}, run {r + 1}/{args.repeat}: {runs[-1]['dataflow_s']:.2f} s", file=sys.stderr)
            keep = sorted(runs, key=lambda x: x["dataflow_s"])[len(runs) // 2]
            keep["all_dataflow_s"] = [round(x["dataflow_s"], 2) for x in runs]
            rows.append({"n": n, **keep})
        assert n_events is not None
        first = n_events / rows[0]["dataflow_s"]
        for row in rows:
            row["events_per_s"] = n_events / row["dataflow_s"]
            row["speedup"] = row["events_per_s"] / first
            row["efficiency"] = row["speedup"] / (row["n"] / rows[0]["n"])
            # Robust to other load on the machine: how much more CPU the same work took, and
            # how much of its cores the run actually got.
            row["cpu_efficiency"] = rows[0]["cpu_s"] / row["cpu_s"]
            row["core_share"] = row["cpu_s"] / (row["dataflow_s"] * row["n"])
        extra = costs(base, model=args.model, shards=shards, batch_size=args.batch_size, per_key=args.per_key)
        ceilings = placement_ceilings(base, shards=shards, counts=sorted({*counts, 2, 4, 8}), balance=args.balance)
        extra["placement"] = ceilings
        load_before = result_machine.get("load_1m")
        result_machine = machine()
        result_machine["load_1m_before"] = load_before
        result = {"machine": result_machine, "mode": args.mode, "events": n_events, "model": args.model,
                  "per_key": args.per_key, "colocate": args.colocate, "shards": shards,
                  "batch_size": args.batch_size, "repeat": args.repeat, "runs": rows, **extra}
        m = result["machine"]
        print(f"machine: {m.get('cpu', '?')}, {m['cores']} cores ({m.get('cores_usable', '?')} usable), "
              f"{m.get('memory_gib', '?')} GiB, Python {m['python']}; load average (1 min) "
              f"{m.get('load_1m_before')} before, {m.get('load_1m')} after")
        models = "one model per key" if args.per_key else "one model per shard"
        print(f"history: {n_events:,} events, model {args.model} ({models}), {shards} shards, {args.mode}"
              f"{', colocated' if args.colocate else ''}; "
              f"timed: first process entering the dataflow to the last leaving it")
        print(f"{'N':>3} {'dataflow s':>10} {'events/s':>10} {'speedup':>8} {'efficiency':>10} {'CPU s':>7} "
              f"{'CPU eff.':>8} {'core share':>10} {'commit s':>8} {'commits':>7} {'startup s':>9} {'wall s':>7}")
        for row in rows:
            print(f"{row['n']:>3} {row['dataflow_s']:>10.2f} {row['events_per_s']:>10,.0f} {row['speedup']:>8.2f} "
                  f"{row['efficiency']:>10.2f} {row['cpu_s']:>7.2f} {row['cpu_efficiency']:>8.2f} "
                  f"{row['core_share']:>10.2f} {row['commit_s']:>8.2f} {row['commits']:>7} "
                  f"{row['startup_s']:>9.2f} {row['wall_s']:>7.2f}")
        print("CPU s: user+sys of all processes while in the dataflow; CPU eff.: CPU s at the first count / CPU s "
              "(extra work the distribution costs); core share: CPU s / (dataflow s x N) (how much of its cores "
              "the run got); commit s: Delta commit time, on background threads; startup s: process start, "
              "imports, flow building (not timed)")
        print(f"placement ({'by event counts' if args.balance else 'CRC-32 of the key'}, {shards} shards): "
              + "; ".join(f"{c['n']} processes: busiest holds {c['busiest_share']:.1%} of the events, "
                          f"efficiency at most {c['ceiling']:.2f}" for c in ceilings))
        print(f"source: building one shard's replay plan takes {extra['plan_s_per_shard']:.2f} s "
              f"(each reads the key column of all events, then its own events)")
        print(f"serialization: pickling a batch and back {extra['batch_pickle_us_per_event']:.1f} us/event, "
              f"its output tables {extra['output_pickle_us_per_event']:.1f} us/event")
        cores = m.get("cores_usable") or m["cores"] or 1
        if max(m.get("load_1m_before") or 0.0, m.get("load_1m") or 0.0) > 0.5 * cores:
            print(f"note: the machine was busy (load average above {0.5 * cores:g} for {cores} cores): events/s "
                  "and efficiency include other load; CPU s and CPU eff. are the comparison that holds")
        over = [row["n"] for row in rows if row["n"] > cores]
        if over:
            print(f"note: {over} exceed this machine's {cores} cores: those runs share cores, "
                  "so they cannot show scaling")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    run_main(main)
