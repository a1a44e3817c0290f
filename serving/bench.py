"""Load generator for the prediction API: latency, throughput, freshness and memory, on 127.0.0.1.

    python -m serving.bench [--store memory|redis] [--rate 1000] [--seconds 20] [--batch 100] [--connections 8]
                            [--memory-events 1000000] [--server-cpu 0] [--client-cpu 1] [--workers N] [--out FILE]

Starts its own server (``python -m serving``, pinned to one core with ``taskset`` when
``--server-cpu`` is given) on a fresh lake under a temporary folder, and, with
``--store redis``, its own ``redis-server``. Then, each phase bounded:

- **closed**: one event per ``POST /predict``, each sent when the last was answered, for ``--seconds``
  (labels flowing as below): the server's own latency and its capacity;
- **single**: one event per ``POST /predict`` at ``--rate`` requests/s (open loop: latency is
  counted from the time a request was due, so a stall shows up in the percentiles instead of
  slowing the load), with learning on: every 10th request is followed by a ``POST /labels``
  carrying the labels of 10 earlier events;
- **concurrent**: the same ``--rate`` in all from ``--connections`` clients (threads, one connection each),
  open loop: requests that arrive while the server is busy share its steps;
- **batch**: ``--batch`` events per request, as fast as the server answers, labels flowing the
  same way; reports predictions/s;
- **freshness**: a label sent, then the model that answers the next request has learned it:
  the time from sending the label to ``/models`` counting it (the label request's own latency,
  since the server learns in process);
- **memory**: the server's resident memory before and after ``--memory-events`` predictions (in
  batches, with labels), and its peak.

Prints a Markdown table and writes the numbers as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import psutil

from serving.launch import Client, RedisProcess, ServerProcess

_T0 = 1_767_225_600  # 2026-01-01, epoch seconds
LABEL_LAG = 200  # labels come for events this many events back


class Load:
    """Synthetic events and their labels (flights-like: a distance, a carrier, an hour)."""

    def __init__(self, seed: int = 1, keys: int = 1_000, prefix: str = "e") -> None:
        self.rng = random.Random(seed)
        self.keys = keys
        self.prefix = prefix
        self.n = 0
        self.truth: dict[str, int] = {}

    def event(self) -> dict[str, Any]:
        rng = self.rng
        i = self.n
        self.n += 1
        key = f"route-{rng.randrange(self.keys)}"
        distance = rng.uniform(100, 3000)
        self.truth[f"{self.prefix}{i}"] = int(distance / 3000 + rng.random() * 0.6 > 0.8)
        return {"event_id": f"{self.prefix}{i}", "key": key, "event_time": _T0 + i * 0.01,
                "payload": {"distance": distance, "carrier": rng.choice("ABCDEFGH"), "dep_hour": rng.randrange(24)}}

    def labels(self, upto: int, count: int) -> list[dict[str, Any]]:
        """Labels of the ``count`` events before ``upto`` (events served a while ago)."""
        out = []
        for i in range(max(0, upto - count), upto):
            eid = f"{self.prefix}{i}"
            y = self.truth.pop(eid, None)
            if y is not None:
                out.append({"event_id": eid, "label": y})
        return out


def _pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1e3
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3),
            "max_ms": round(float(a.max()), 3), "n": len(values)}


def phase_single(client: Client, load: Load, *, rate: float | None, seconds: float) -> dict[str, Any]:
    """Open loop at ``rate`` predictions/s with labels flowing (``None``: closed loop, one request after
    the other, for ``seconds``: the server's capacity and its own latency)."""
    lat: list[float] = []
    label_lat: list[float] = []
    interval = 0.0 if rate is None else 1.0 / rate
    n = int(rate * seconds) if rate is not None else 10**9
    start = time.perf_counter()
    for i in range(n):
        due = start + i * interval
        now = time.perf_counter()
        if rate is None:
            due = now
            if now - start >= seconds:
                n = i
                break
        elif now < due:
            time.sleep(due - now)
        status, _ = client.post("/predict", load.event())
        lat.append(time.perf_counter() - due)
        assert status == 200
        if i % 10 == 9:
            labels = load.labels(load.n - LABEL_LAG, 10)
            if labels:
                t = time.perf_counter()
                client.post("/labels", labels)
                label_lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - start
    return {"requests": n, "target_rps": rate, "achieved_rps": round(n / wall, 1), **_pct(lat),
            "labels": _pct(label_lat) if label_lat else None}


def phase_concurrent(port: int, *, rate: float, seconds: float, connections: int) -> dict[str, Any]:
    """Open loop at ``rate`` predictions/s in all, spread over ``connections`` clients (threads), labels
    flowing: requests that arrive while the server is busy share its steps."""
    from concurrent.futures import ThreadPoolExecutor

    per = rate / connections
    n = int(per * seconds)
    start = time.perf_counter() + 0.2

    def client(c: int) -> tuple[list[float], int]:
        cl, load, lat = Client(port), Load(seed=100 + c, prefix=f"c{c}-"), []
        offset = c / rate
        for i in range(n):
            due = start + offset + i / per
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
            status, _ = cl.post("/predict", load.event())
            lat.append(time.perf_counter() - due)
            assert status == 200
            if i % 10 == 9:
                labels = load.labels(load.n - LABEL_LAG // connections, 10)
                if labels:
                    cl.post("/labels", labels)
        cl.close()
        return lat, n

    with ThreadPoolExecutor(connections) as pool:
        parts = list(pool.map(client, range(connections)))
    wall = time.perf_counter() - start
    lat = [x for part, _ in parts for x in part]
    total = sum(k for _, k in parts)
    return {"requests": total, "target_rps": rate, "connections": connections,
            "achieved_rps": round(total / wall, 1), **_pct(lat)}


def phase_batch(client: Client, load: Load, *, batch: int, seconds: float) -> dict[str, Any]:
    lat: list[float] = []
    events = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        body = [load.event() for _ in range(batch)]
        t = time.perf_counter()
        status, _ = client.post("/predict", body)
        lat.append(time.perf_counter() - t)
        assert status == 200
        events += batch
        labels = load.labels(load.n - LABEL_LAG - batch, batch)
        if labels:
            client.post("/labels", labels)
    wall = time.perf_counter() - start
    return {"batch": batch, "requests": len(lat), "predictions": events,
            "predictions_per_s": round(events / wall, 1), **_pct(lat)}


def phase_freshness(client: Client, load: Load, *, n: int = 200) -> dict[str, Any]:
    """Seconds from sending a label to the served model having learned it (checked on /models). With
    several workers, on events of the keys of the worker this connection reaches (its /models)."""
    from serving.workers import owner

    health = client.get("/health")[1]
    lags = []
    for _ in range(n):
        ev = load.event()
        while "workers" in health and owner(ev["key"], health["workers"]) != health["worker"]:
            ev = load.event()
        client.post("/predict", ev)
        before = client.get("/models")[1][0]["labels_learned"]
        t = time.perf_counter()
        client.post("/labels", {"event_id": ev["event_id"], "label": load.truth.pop(ev["event_id"])})
        while client.get("/models")[1][0]["labels_learned"] <= before:
            pass
        lags.append(time.perf_counter() - t)
    return {"samples": n, **_pct(lags)}


def phase_memory(client: Client, load: Load, server_pid: int, *, events: int, batch: int) -> dict[str, Any]:
    proc = _Tree(server_pid)
    before = proc.memory_info().rss
    peak = before
    samples = []
    done = 0
    start = time.perf_counter()
    while done < events:
        body = [load.event() for _ in range(batch)]
        client.post("/predict", body)
        labels = load.labels(load.n - LABEL_LAG - batch, batch)
        if labels:
            client.post("/labels", labels)
        done += batch
        if done % (batch * 100) == 0:
            rss = proc.memory_info().rss
            peak = max(peak, rss)
            samples.append((done, rss))
    after = proc.memory_info().rss
    return {"events": done, "seconds": round(time.perf_counter() - start, 1), "rss_before_mb": before >> 20,
            "rss_after_mb": after >> 20, "rss_peak_mb": max(peak, after) >> 20,
            "rss_curve_mb": [(d, r >> 20) for d, r in samples[:: max(1, len(samples) // 10)]]}


class _Tree:
    """CPU time and resident memory of a process and its children (the workers of ``--workers N``)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)

    def _all(self) -> list[psutil.Process]:
        return [self.proc, *self.proc.children(recursive=True)]

    def cpu_times(self) -> tuple[float, float]:
        times = [p.cpu_times() for p in self._all()]
        return sum(t.user for t in times), sum(t.system for t in times)

    def memory_info(self) -> SimpleNamespace:
        return SimpleNamespace(rss=sum(p.memory_info().rss for p in self._all()))


def run(*, store: str, rate: float, seconds: float, batch: int, memory_events: int, server_cpu: str | None,
        client_cpu: int | None, folder: str, flush_seconds: float = 5.0, connections: int = 1,
        workers: int = 1, snapshot_every: int | None = None) -> dict[str, Any]:
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    redis = RedisProcess(os.path.join(folder, "redis")) if store == "redis" else None
    prefix = ["taskset", "-c", str(server_cpu)] if server_cpu is not None else []
    env = dict(os.environ)
    args = ["--store", redis.url if redis else "memory", "--flush-seconds", str(flush_seconds),
            "--workers", str(workers)]
    if snapshot_every is not None:
        args += ["--snapshot-every", str(snapshot_every)]
    server = ServerProcess(os.path.join(folder, "lake"), args=args,
                           prefix=prefix, env=env).wait_ready()
    result: dict[str, Any] = {"store": store, "server_cpu": server_cpu, "flush_seconds": flush_seconds,
                              "snapshot_every": snapshot_every,
                              "workers": workers,
                              "loadavg_before": os.getloadavg()}
    try:
        client = server.client()
        load = Load()
        phase_single(client, load, rate=rate, seconds=2)  # warm up
        cpu = _Tree(server.proc.pid)  # (taskset execs the server: its pid is the child's; workers: children)

        def measured(phase: dict[str, Any], used: float, events: int) -> dict[str, Any]:
            # The server's CPU time per prediction (labels included): on a shared machine, what a
            # dedicated core would sustain is 1 / that.
            phase["server_cpu_ms_per_prediction"] = round(used * 1e3 / events, 3)
            phase["predictions_per_core_s"] = round(events / used, 1)
            return phase

        for name, kwargs in (("closed", {"rate": None}), ("single", {"rate": rate})):
            t0 = sum(cpu.cpu_times()[:2])
            r = phase_single(client, load, seconds=seconds, **kwargs)
            result[name] = measured(r, sum(cpu.cpu_times()[:2]) - t0, r["requests"])
        if connections > 1:
            t0, s0 = sum(cpu.cpu_times()[:2]), client.get("/health")[1]
            r = phase_concurrent(server.port, rate=rate, seconds=seconds, connections=connections)
            s1 = client.get("/health")[1]
            if workers == 1:  # (with workers, /health is the connection's worker's)
                r["requests_per_step"] = round((s1["requests"] - s0["requests"]) / max(1, s1["steps"] - s0["steps"]),
                                               2)
            result["concurrent"] = measured(r, sum(cpu.cpu_times()[:2]) - t0, r["requests"])
        t0 = sum(cpu.cpu_times()[:2])
        r = phase_batch(client, load, batch=batch, seconds=seconds)
        result["batch"] = measured(r, sum(cpu.cpu_times()[:2]) - t0, r["predictions"])
        result["freshness"] = phase_freshness(client, load)
        if memory_events:
            result["memory"] = phase_memory(client, load, server.proc.pid, events=memory_events, batch=batch)
        client.close()
    finally:
        server.stop()
        if redis is not None:
            redis.stop()
    result["loadavg_after"] = os.getloadavg()
    return result


def _snapshots(every: int | None) -> str:
    return "as the server's default" if every is None else "off" if every == 0 else f"every {every:,} positions"


def markdown(r: dict[str, Any]) -> str:
    c, s, b, f = r["closed"], r["single"], r["batch"], r["freshness"]
    lines = [
        f"store `{r['store']}`, {r.get('workers', 1)} worker(s), lake commits every {r['flush_seconds']} s, "
        f"snapshots {_snapshots(r.get('snapshot_every'))}, "
        f"server on CPU {r['server_cpu']}, "
        f"load average {r['loadavg_before'][0]:.1f} "
        f"before / {r['loadavg_after'][0]:.1f} after",
        "",
        "| phase | load | p50 | p99 | max | throughput | server CPU per prediction (→ per core) |",
        "|---|---|---|---|---|---|---|",
        f"| single `/predict`, labels flowing | closed loop (one after the other) | {c['p50_ms']} ms "
        f"| {c['p99_ms']} ms | {c['max_ms']} ms | {c['achieved_rps']} req/s "
        f"| {c['server_cpu_ms_per_prediction']} ms ({c['predictions_per_core_s']}/s) |",
        f"| single `/predict`, labels flowing | {s['target_rps']:.0f} req/s open loop | {s['p50_ms']} ms "
        f"| {s['p99_ms']} ms | {s['max_ms']} ms | {s['achieved_rps']} req/s "
        f"| {s['server_cpu_ms_per_prediction']} ms ({s['predictions_per_core_s']}/s) |",
        *([f"| single `/predict`, labels flowing | {r['concurrent']['target_rps']:.0f} req/s open loop from "
           f"{r['concurrent']['connections']} clients ({r['concurrent'].get('requests_per_step', '?')} requests "
           "per step) "
           f"| {r['concurrent']['p50_ms']} ms | {r['concurrent']['p99_ms']} ms | {r['concurrent']['max_ms']} ms "
           f"| {r['concurrent']['achieved_rps']} req/s | {r['concurrent']['server_cpu_ms_per_prediction']} ms "
           f"({r['concurrent']['predictions_per_core_s']}/s) |"] if "concurrent" in r else []),
        f"| batched `/predict` ({b['batch']} events) | closed loop | {b['p50_ms']} ms | {b['p99_ms']} ms "
        f"| {b['max_ms']} ms | {b['predictions_per_s']} predictions/s "
        f"| {b['server_cpu_ms_per_prediction']} ms ({b['predictions_per_core_s']}/s) |",
        f"| freshness: label sent → served model learned it | {f['samples']} labels | {f['p50_ms']} ms "
        f"| {f['p99_ms']} ms | {f['max_ms']} ms | | |",
    ]
    if "memory" in r:
        m = r["memory"]
        lines.append(f"| memory over {m['events']:,} predictions (+ labels) | {m['seconds']} s | "
                     f"RSS {m['rss_before_mb']} → {m['rss_after_mb']} MB, peak {m['rss_peak_mb']} MB | | | | |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", choices=["memory", "redis"], default="memory")
    p.add_argument("--rate", type=float, default=1_000.0, help="single-event requests per second")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the single and batch phases")
    p.add_argument("--batch", type=int, default=100, help="events per batched request")
    p.add_argument("--memory-events", type=int, default=0, help="predictions of the memory phase (0: skip)")
    p.add_argument("--server-cpu", default=None, help="pin the server to these CPUs (taskset list: 0 or 0,1)")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (python -m serving --workers)")
    p.add_argument("--client-cpu", type=int, default=None, help="pin this load generator to this CPU")
    p.add_argument("--connections", type=int, default=8,
                   help="clients of the concurrent phase (the same --rate in all; 1: skip the phase)")
    p.add_argument("--flush-seconds", type=float, default=5.0, help="the server's lake commit interval")
    p.add_argument("--snapshot-every", type=int, default=None,
                   help="the server's snapshot interval in positions (0: none; default: the server's)")
    p.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = p.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="riverlake-serving-bench-")
    try:
        r = run(store=args.store, rate=args.rate, seconds=args.seconds, batch=args.batch,
                memory_events=args.memory_events, server_cpu=args.server_cpu, client_cpu=args.client_cpu,
                folder=folder, flush_seconds=args.flush_seconds, connections=args.connections,
                snapshot_every=args.snapshot_every,
                workers=args.workers)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(markdown(r))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(r, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
