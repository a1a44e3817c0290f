"""Live monitoring latency: from a window's close to its statistics being readable in the lake.

``python -m monitoring.latency --rate 5000 --duration 60`` runs the real dataflow
(featurize → predict → learn → monitor → Delta sink, one Bytewax worker) on a live
generator: ``rate`` events per second whose event time is the wall clock, labels
``--label-delay`` seconds later, and an abrupt shift of feature ``x0`` half-way
through. A separate reader process polls the lake's ``window_stats`` and
``drift_events`` tables (a new Delta version every few milliseconds at most) and
notes when each row first becomes readable.

Latencies reported (milliseconds, p50/p75/p99/max):

- *window*: readable − window close, where the close is ``window_end + lateness``
  on the wall clock (when the watermark passes the window's end);
- *alarm*: readable − event time of the event that raised a ``feature:x0`` alarm
  (the event was generated at that wall-clock time).

Both include batching in the source (``--tick``), the dataflow step, the Delta
commit and the reader's poll interval (``--poll``, 10 ms by default).
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import platform
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from dataflows.items import EVENT, LABEL, Batch
from lake.entry import ArgumentParser, run_main

N_FEATURES = 9


class _LivePartition(StatefulSourcePartition[Batch, None]):
    def __init__(self, *, rate: float, duration_s: float, tick_s: float, label_delay_s: float, shift_at_s: float,
                 seed: int) -> None:
        self.rate, self.tick_s, self.label_delay_us = rate, tick_s, int(label_delay_s * 1e6)
        self.rng = random.Random(seed)
        self.start = time.time()
        self.end = self.start + duration_s
        self.shift_at = self.start + shift_at_s
        self.emitted = 0  # events so far
        self.seq = 0
        self.labels: list[tuple[int, str, int]] = []  # (due_us, event_id, label), in due order
        self.next_at = self.start

    def next_batch(self) -> list[Batch]:
        now = time.time()
        if now >= self.end and not self.labels:
            raise StopIteration
        items = []
        due = min(int((min(now, self.end) - self.start) * self.rate), int(self.rate * (self.end - self.start)))
        rng = self.rng
        while self.emitted < due:
            t_us = int((self.start + self.emitted / self.rate) * 1e6)
            shift = 3.0 if t_us / 1e6 >= self.shift_at else 0.0
            x = {f"x{j}": rng.gauss(shift if j == 0 else 0.0, 1.0) for j in range(N_FEATURES)}
            z = 1.5 * x["x1"] - x["x2"] + 0.5 * x["x3"]
            y = 1 if rng.random() < 1.0 / (1.0 + math.exp(-z)) else 0
            event_id = f"e{self.emitted}"
            items.append((self.seq, EVENT, event_id, t_us, f"k{self.emitted % 16}", x))
            self.seq += 1
            self.labels.append((t_us + self.label_delay_us, event_id, y))
            self.emitted += 1
        now_us = int(time.time() * 1e6)
        k = 0
        while k < len(self.labels) and self.labels[k][0] <= now_us:
            due_us, event_id, y = self.labels[k]
            items.append((self.seq, LABEL, event_id, y, due_us, f"k{int(event_id[1:]) % 16}"))
            self.seq += 1
            k += 1
        del self.labels[:k]
        self.next_at = max(self.next_at + self.tick_s, now)
        return [Batch(0, items, source="live")] if items else []

    def next_awake(self) -> datetime | None:
        return datetime.fromtimestamp(self.next_at, UTC)

    def snapshot(self) -> None:
        return None


class LiveGenerator(FixedPartitionedSource[Batch, None]):
    """``rate`` events per second for ``duration_s`` seconds, event time = wall time (one shard)."""

    def __init__(self, *, rate: float, duration_s: float, tick_s: float = 0.02, label_delay_s: float = 1.0,
                 shift_at_s: float | None = None, seed: int = 42) -> None:
        if rate <= 0 or duration_s <= 0 or tick_s <= 0:
            raise ValueError(f"rate, duration_s and tick_s must be > 0, got {rate!r}, {duration_s!r}, {tick_s!r}")
        self.kw = {"rate": rate, "duration_s": duration_s, "tick_s": tick_s, "label_delay_s": label_delay_s,
                   "shift_at_s": duration_s / 2 if shift_at_s is None else shift_at_s, "seed": seed}

    def list_parts(self) -> list[str]:
        return ["live-0"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _LivePartition:
        return _LivePartition(**self.kw)


def _reader(lake: str, stop_at: float, poll_s: float, out_path: str) -> None:
    """Poll ``window_stats`` and ``drift_events``; write when each row was first readable."""
    import polars as pl
    from deltalake import DeltaTable

    seen: dict[str, dict] = {"window_stats": {}, "drift_events": {}}
    tables: dict[str, DeltaTable] = {}
    versions: dict[str, int] = {}
    while time.time() < stop_at:
        for name in seen:
            uri = os.path.join(lake, name)
            try:
                if name not in tables:
                    if not os.path.isdir(os.path.join(uri, "_delta_log")):
                        continue
                    tables[name] = DeltaTable(uri)
                else:
                    tables[name].update_incremental()
            except Exception:  # noqa: BLE001 - the table is being created; try again next poll
                tables.pop(name, None)
                continue
            dt = tables[name]
            if dt.version() == versions.get(name):
                continue
            now = time.time()
            versions[name] = dt.version()
            frame = pl.read_delta(dt)
            if name == "window_stats":
                for ws, we in frame.select(pl.col("window_start").dt.epoch("us"),
                                           pl.col("window_end").dt.epoch("us")).iter_rows():
                    seen[name].setdefault(str(ws), {"end_us": we, "seen": now})
            else:
                for sig, eid, t in frame.select("signal", "event_id", pl.col("event_time").dt.epoch("us")).iter_rows():
                    seen[name].setdefault(f"{sig}/{eid}", {"signal": sig, "event_us": t, "seen": now})
        time.sleep(poll_s)
    Path(out_path).write_text(json.dumps(seen))


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)

    def q(p: float) -> float:
        return v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))]

    return {"n": len(v), "p50": q(0.50), "p75": q(0.75), "p99": q(0.99), "max": v[-1]}


def measure(*, rate: float = 5_000, duration_s: float = 60.0, window: str = "1s", lateness: str = "0s",
            tick_s: float = 0.02, poll_s: float = 0.01, model: str = "linear", anomaly: str | None = "zscore",
            watch: str = "feature:x0=adwin", lake: str | None = None, warmup_s: float = 5.0) -> dict:
    """Run the live dataflow and the reader; returns the latency percentiles (ms) and what ran."""
    from bytewax.testing import run_main

    from dataflows.learner import RunConfig
    from dataflows.online import make_flow
    from dataflows.sinks import URGENT_TABLES, DeltaSink
    from lake.durations import parse_duration_us
    from monitoring.stream import MonitorConfig

    lake = lake or tempfile.mkdtemp(prefix="riverlake-latency-")
    window_us, lateness_us = parse_duration_us(window), parse_duration_us(lateness)
    config = RunConfig(run_id="latency", models=(model,), checkpoint_every=50_000, window_us=60_000_000,
                       grace_us=5_000_000, label_ttl_us=60_000_000,
                       monitor=MonitorConfig(stats_window_us=window_us, lateness_us=lateness_us, anomaly=anomaly,
                                             watch=watch))
    source = LiveGenerator(rate=rate, duration_s=duration_s, tick_s=tick_s)
    sink = DeltaSink(lake, run_id="latency", flush_rows=50_000, flush_seconds=5.0, urgent_tables=URGENT_TABLES)
    out_path = os.path.join(lake, "_latency_seen.json")
    started = time.time()
    ctx = mp.get_context("spawn")
    reader = ctx.Process(target=_reader, args=(lake, started + duration_s + 10.0, poll_s, out_path), daemon=True)
    reader.start()
    cpu0 = time.process_time()
    run_main(make_flow(source, sink, config, flow_id="riverlake-latency"), epoch_interval=timedelta(seconds=3600))
    cpu = time.process_time() - cpu0
    wall = time.time() - started
    reader.join()
    seen = json.loads(Path(out_path).read_text())
    begin_us = (started + warmup_s) * 1e6
    win = [(r["seen"] * 1e6 - (r["end_us"] + lateness_us)) / 1e3 for r in seen["window_stats"].values()
           if r["end_us"] >= begin_us and r["end_us"] <= (started + duration_s) * 1e6]
    alarms = [(r["seen"] * 1e6 - r["event_us"]) / 1e3 for r in seen["drift_events"].values()
              if r["signal"].startswith("feature:")]
    return {
        "rate": rate, "duration_s": duration_s, "window": window, "lateness": lateness, "tick_s": tick_s,
        "poll_s": poll_s, "model": model, "anomaly": anomaly, "watch": watch, "wall_s": round(wall, 1),
        "dataflow_cpu_s": round(cpu, 1), "window_ms": _percentiles(win), "alarm_ms": _percentiles(alarms),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "lake": lake,
    }


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m monitoring.latency", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=5_000, help="events per second (default 5000)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of live stream (default 60)")
    parser.add_argument("--window", default="1s", help="window statistics' tumbling window (default 1s)")
    parser.add_argument("--lateness", default="0s", help="watermark lag behind the latest event time")
    parser.add_argument("--tick", type=float, default=0.02, help="seconds between source batches (default 0.02)")
    parser.add_argument("--poll", type=float, default=0.01, help="reader poll interval in seconds (default 0.01)")
    parser.add_argument("--model", default="linear")
    parser.add_argument("--anomaly", default="zscore", help="anomaly scorer spec, or none")
    parser.add_argument("--lake", default=None, help="lake to write (default: a new temporary folder)")
    args = parser.parse_args(argv)
    result = measure(rate=args.rate, duration_s=args.duration, window=args.window, lateness=args.lateness,
                     tick_s=args.tick, poll_s=args.poll, model=args.model,
                     anomaly=None if args.anomaly in ("", "none") else args.anomaly, lake=args.lake)
    for name in ("window_ms", "alarm_ms"):
        p = result[name]
        line = ", ".join(f"{k} {v:.0f}" if k != "n" else f"n {v}" for k, v in p.items()) if p else "none"
        print(f"{name.split('_')[0]:>6} latency (ms): {line}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    run_main(main)
