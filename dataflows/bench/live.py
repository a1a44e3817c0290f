"""Latency of the live path: from a message's produce call to its prediction on the predictions topic.

    python -m dataflows.bench.live [--rate 5000] [--seconds 20] [--workers 1 | --processes 2]
                                   [--per-key] [--snapshot-s 10] [--model linear] [--wall-clock] [--relay]
                                   [--json PATH]

A librdkafka mock cluster on 127.0.0.1 (4 partitions) carries the flights scenario.
The live flow runs in its own process(es), as a user runs it (``python -m
bytewax.run "dataflows.online:build_live_flow(...)" -r DIR -s N -b 0``, recording to
a fresh lake under ``--tmp``). This process produces the messages at ``--rate`` per
second, noting the time of each produce call, and consumes the predictions topic
on a thread, noting when each event's prediction arrives. It prints p50/p75/p99/max
of the end-to-end latency and the throughput of predictions, and, from the trace
the flow writes (``build_live_flow(trace=...)``), the latency to each stage:
``consumed`` (the source's poll returned it), ``scored`` (its batch reached the
predictions sink, scored), ``sent`` (handed to the Kafka producer) and ``recorded``
(its event committed to the lake's ``events``). A warm-up of the first messages
(until the flow has predicted them) is not counted. With ``--wall-clock`` the messages are re-timed so that
the stream's time runs with the clock, as a live stream's does (the flights' own times run through months in
a minute at 5,000 messages/s, so every one-minute window of the monitoring closes as it opens).
With ``--relay`` a relay of event ids (:mod:`dataflows.bench.relay`: the flow's consumer and producer
settings, no processing) stands in for the flow: the floor the Kafka transport puts under the figures.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

STAGES = ("consumed", "scored", "sent", "recorded")
WARMUP = 400


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    s = sorted(values)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(round(p * (len(s) - 1))))]

    return {"n": len(s), "p50": q(0.5), "p75": q(0.75), "p99": q(0.99), "max": s[-1]}


def _flow_args(lake: str, brokers: str, *, model: str, per_key: bool, trace: str | None,
               flush_seconds: float | None = None, stats_window: str | None = None) -> str:
    extra = ", per_key=True" if per_key else ""
    extra += f", flush_seconds={flush_seconds!r}" if flush_seconds is not None else ""
    extra += f", stats_window={stats_window!r}" if stats_window is not None else ""
    extra += f", trace='{trace}'" if trace else ""
    return (f"dataflows.online:build_live_flow(lake='{lake}', model='{model}', brokers='{brokers}', "
            f"topic='events', predictions_topic='predictions'{extra})")


def _thread_cpu(procs: list[subprocess.Popen]) -> dict[str, float]:
    """User + system CPU seconds so far of the flow processes' threads, by thread name (Linux)."""
    out: dict[str, float] = defaultdict(float)
    tick = os.sysconf("SC_CLK_TCK")
    for p in procs:
        for task in Path(f"/proc/{p.pid}/task").glob("*"):
            try:
                head, tail = (task / "stat").read_text().rsplit(")", 1)
            except OSError:
                continue
            name = head.split("(", 1)[1].rstrip("0123456789_-")  # librdkafka and pool threads by kind
            fields = tail.split()
            out[name] += (int(fields[11]) + int(fields[12])) / tick
    return out


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (Linux ``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def _cpu_seconds(procs: list[subprocess.Popen]) -> float:
    """User + system CPU seconds of the flow processes so far (all their threads)."""
    return sum(_thread_cpu(procs).values())


def _start_flow(flow: str, rec: Path, *, workers: int, processes: int, snapshot_s: float,
                log: Path, profile: str | None = None) -> list[subprocess.Popen]:
    from bytewax.recovery import init_db_dir

    rec.mkdir(parents=True, exist_ok=True)
    init_db_dir(rec, max(1, workers * processes))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    python = [sys.executable, "-m", "cProfile", "-o", profile] if profile else [sys.executable]
    base = [*python, "-m", "bytewax.run", flow, "-r", str(rec), "-s", f"{snapshot_s:g}", "-b", "0"]
    if processes == 1:
        cmds = [base + (["-w", str(workers)] if workers > 1 else [])]
    else:
        import socket

        ports = []
        for _ in range(processes):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        addresses = ";".join(f"127.0.0.1:{p}" for p in ports)
        cmds = [base + ["-i", str(i), "-a", addresses] + (["-w", str(workers)] if workers > 1 else [])
                for i in range(processes)]
    out = open(log, "ab")  # noqa: SIM115 - the children write to it until they end
    return [subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT) for cmd in cmds]


class _Collector:
    """Consumes the predictions topic; the arrival time of each event id's first prediction."""

    def __init__(self, brokers: str) -> None:
        import confluent_kafka as ck

        self.arrived: dict[str, float] = {}
        self._stop = threading.Event()
        self._consumer = ck.Consumer({"bootstrap.servers": brokers, "group.id": "bench-live",
                                      "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                      "fetch.wait.max.ms": 5})
        parts = self._consumer.list_topics("predictions", timeout=10).topics["predictions"].partitions
        self._consumer.assign([ck.TopicPartition("predictions", p, ck.OFFSET_BEGINNING) for p in parts])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            first = self._consumer.poll(0.05)  # returns on the first message; consume() waits for a full batch
            if first is None:
                continue
            now = time.time()
            for msg in [first, *self._consumer.consume(1_000, 0)]:
                if msg.error() is not None:
                    continue
                try:
                    event_id = json.loads(msg.value())["event_id"]
                except (ValueError, KeyError, TypeError):
                    continue
                self.arrived.setdefault(event_id, now)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._consumer.close()


def _messages(n: int, *, wall_clock_rate: float | None = None) -> list[tuple[bytes, bytes, str | None]]:
    """``(key, value, event_id or None)`` of the first ``n`` flights messages (events and labels). With
    ``wall_clock_rate``, the stream's time runs as fast as the clock at that many messages a second: message ``i``
    (event or label, in the flights order) is timed ``now + i / rate`` (a live stream's event times; the flights'
    own run through months of event time in a minute at 5,000 messages/s, so every one-minute statistics window
    closes at once)."""
    from dataflows.produce import messages

    out = []
    start = datetime.now(UTC)
    for i, (key, msg) in enumerate(islice(messages("flights", limit=n), n)):  # (limit: n events, and labels)
        if wall_clock_rate is not None:
            field = "event_time" if msg["kind"] == "event" else "label_time"
            msg = {**msg, field: (start + timedelta(seconds=i / wall_clock_rate)).isoformat()}
        out.append((str(key).encode(), json.dumps(msg).encode(),
                    msg["event_id"] if msg["kind"] == "event" else None))
    return out


def _stage_latencies(trace_files: list[Path], produced: dict[tuple[int, int], float]) -> dict[str, list[float]]:
    """Per stage, the latency of every produced event the trace covers (its first mark wins)."""
    marks: dict[str, dict[int, list[tuple[int, int, float]]]] = {s: defaultdict(list) for s in STAGES}
    for path in trace_files:
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec["stage"] in marks:
                marks[rec["stage"]][rec["p"]].append((rec["lo"], rec["hi"], rec["t"]))
    offsets: dict[int, list[int]] = defaultdict(list)
    for p, offset in produced:
        offsets[p].append(offset)
    for offs in offsets.values():
        offs.sort()
    out: dict[str, list[float]] = {}
    for stage, by_part in marks.items():
        lat = []
        for part, ranges in by_part.items():
            offs, seen = offsets.get(part, []), set()
            for lo, hi, t in sorted(ranges, key=lambda r: r[2]):
                for offset in offs[bisect.bisect_left(offs, lo):bisect.bisect_right(offs, hi)]:
                    if offset not in seen:
                        seen.add(offset)
                        lat.append((t - produced[(part, offset)]) * 1e3)
        out[stage] = lat
    return out


def run(*, rate: float, seconds: float, workers: int = 1, processes: int = 1, per_key: bool = False,
        snapshot_s: float = 10.0, model: str = "linear", tmp: str | None = None, stages: bool = True,
        keep: bool = False, profile: str | None = None, flush_seconds: float | None = None,
        wall_clock: bool = False, relay: bool = False, stats_window: str | None = None) -> dict[str, Any]:
    """One measured run; returns the figures (latencies in ms). With ``relay`` the transport alone is measured:
    :mod:`dataflows.bench.relay` stands in for the flow (no stages). ``stats_window`` is handed to the flow (its
    default otherwise); what the flow said of its windows (:meth:`monitoring.stream.StreamMonitor.check_density`)
    comes back as ``flow_said``."""
    import confluent_kafka as ck

    from dataflows.replay import shard_of
    from lake.durations import parse_duration_us

    if rate <= 0 or seconds <= 0:
        raise ValueError(f"rate and seconds must be > 0, got {rate!r} and {seconds!r}")
    if stats_window is not None:
        parse_duration_us(stats_window)  # (a bad value: one line here, not a flow that fails to start)
    if tmp is not None:
        Path(tmp).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-live-", dir=tmp))
    owner = ck.Producer({"test.mock.num.brokers": 1, "bootstrap.servers": "unused:1"})
    brokers = ",".join(f"{b.host}:{b.port}" for b in owner.list_topics(timeout=10).brokers.values())
    n_measured = int(rate * seconds)
    msgs = _messages(WARMUP + n_measured, wall_clock_rate=rate if wall_clock else None)
    # librdkafka's default linger (5 ms): a producer that sent every message in a request of its own
    # would load the one mock broker with 5,000 requests a second (p99 0.25 s on the bare transport)
    producer = ck.Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    producer.produce("predictions", value=b"{}")  # the topic exists before the collector assigns it
    produced: dict[tuple[int, int], float] = {}
    sent_at: dict[str, float] = {}

    def delivered(err, msg, t0=None) -> None:  # noqa: ANN001 - librdkafka's callback
        if err is None and t0 is not None:
            produced[(msg.partition(), msg.offset())] = t0

    n_partitions = 4
    for key, value, _ in msgs[:WARMUP]:
        producer.produce("events", key=key, value=value, partition=shard_of(key.decode(), n_partitions))
    producer.flush(30)
    meta = producer.list_topics("events", timeout=10).topics["events"]
    n_partitions = len(meta.partitions)
    collector = _Collector(brokers)
    stages = stages and not relay
    trace = root / "trace.jsonl" if stages else None
    if relay:
        with open(root / "flow.log", "ab") as log:
            procs = [subprocess.Popen([sys.executable, "-m", "dataflows.bench.relay", brokers], stdout=log,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1"}, stderr=subprocess.STDOUT)]
    else:
        flow = _flow_args(str(root / "lake"), brokers, model=model, per_key=per_key,
                          trace=str(trace) if trace else None, flush_seconds=flush_seconds,
                          stats_window=stats_window)
        procs = _start_flow(flow, root / "rec", workers=workers, processes=processes, snapshot_s=snapshot_s,
                            log=root / "flow.log", profile=profile)
    try:
        warm = {m[2] for m in msgs[:WARMUP] if m[2] is not None}
        deadline = time.monotonic() + 180
        while not warm <= collector.arrived.keys():
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"the live flow did not answer the warm-up; see {root / 'flow.log'}")
            time.sleep(0.05)
        time.sleep(1.0)
        idle0 = _cpu_seconds(procs)
        time.sleep(2.0)
        threads0 = _thread_cpu(procs)
        cpu0 = sum(threads0.values())
        busy0, own0 = _machine_busy(), time.process_time()
        idle_cpu = (cpu0 - idle0) / 2.0
        started, wall_started = time.monotonic(), time.time()
        for i, (key, value, event_id) in enumerate(msgs[WARMUP:]):
            t0 = time.time()
            if event_id is not None:
                sent_at[event_id] = t0
            while True:
                try:
                    producer.produce("events", key=key, value=value, partition=shard_of(key.decode(), n_partitions),
                                     on_delivery=(lambda err, msg, t0=t0: delivered(err, msg, t0))
                                     if event_id is not None else None)
                    break
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)
            ahead = (i + 1) / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        produce_s = time.monotonic() - started
        producer.flush(30)
        deadline = time.monotonic() + 60
        while len(sent_at.keys() - collector.arrived.keys()) and time.monotonic() < deadline:
            time.sleep(0.1)
        threads1 = _thread_cpu(procs)
        busy1, own1 = _machine_busy(), time.process_time()
        flow_cpu = sum(threads1.values()) - cpu0
        measured_s = time.monotonic() - started
        by_thread = {k: round((v - threads0.get(k, 0.0)) / measured_s, 3) for k, v in threads1.items()}
        if stages:
            time.sleep((flush_seconds or 5.0) + 1.5)  # the lake commits of the last messages
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        collector.close()
    latencies = [(collector.arrived[e] - t0) * 1e3 for e, t0 in sent_at.items() if e in collector.arrived]
    arrivals = sorted(collector.arrived[e] for e in sent_at if e in collector.arrived)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    result: dict[str, Any] = {
        "rate": rate, "seconds": seconds, "workers": workers, "processes": processes, "per_key": per_key,
        "wall_clock": wall_clock, "relay": relay, "stats_window": stats_window,
        "snapshot_s": snapshot_s, "flush_seconds": flush_seconds, "model": model, "messages": n_measured,
        "events": len(sent_at),
        "predicted": len(latencies), "produce_rate": round(n_measured / produce_s, 1),
        "predictions_per_s": round(len(arrivals) / span, 1) if span else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "flow_cpu_share": round(flow_cpu / measured_s, 2),  # cores the flow kept busy while measured
        "idle_cpu_share": round(idle_cpu, 2),  # and before, with no messages coming
        # the whole machine's busy cores meanwhile (the flow, this process's producer, consumer and broker, others)
        "machine_busy_cores": round((busy1[0] - busy0[0]) / (busy1[1] - busy0[1]) * (os.cpu_count() or 1), 2),
        "bench_cpu_share": round((own1 - own0) / measured_s, 2),  # this process: producer, broker, collector
        "cpu_share_by_thread": dict(sorted(by_thread.items(), key=lambda kv: -kv[1])[:8]),
        "end_to_end_ms": {k: round(v, 1) for k, v in _percentiles(latencies).items()},
        "timeline": _timeline(sent_at, collector.arrived, wall_started),
    }
    if stages and trace is not None:
        files = sorted(root.glob("trace.jsonl*"))
        by_stage = _stage_latencies(files, produced)
        result["snapshots_at_s"] = _snapshot_marks(files, wall_started)
        result["stages_ms"] = {s: {k: round(v, 1) for k, v in _percentiles(by_stage.get(s, [])).items()}
                               for s in STAGES}
    result["flow_said"] = _flow_said(root / "flow.log")
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        result["folder"] = str(root)
    owner.flush(5)
    return result


def _duration_text(text: str) -> str:
    """A command-line duration, checked (argparse's one-line error otherwise)."""
    from lake.durations import parse_duration_us

    try:
        parse_duration_us(text)
    except ValueError as ex:
        raise argparse.ArgumentTypeError(str(ex)) from None
    return text


def _flow_said(log: Path) -> list[str]:
    """The time scales the flow chose at start (:mod:`dataflows.live_defaults`), and the first of its one-line
    words on its statistics windows (:meth:`monitoring.stream.StreamMonitor.check_density`), if it said any."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    chosen = [line.strip() for line in lines if line.startswith(("  window: ", "  grace: ", "  label_ttl: ",
                                                                 "  stats_window: "))]
    return chosen[:4] + [line.strip() for line in lines if line.startswith("window statistics of shard")][:1]


SLICE_S = 0.5


def _timeline(sent_at: dict[str, float], arrived: dict[str, float], started: float) -> list[dict[str, float]]:
    """The end-to-end latency by when events were sent, in slices of :data:`SLICE_S` seconds from the first
    measured send: ``at`` (the slice's start, s), ``n``, ``p50`` and ``max`` (ms): where the tail comes from."""
    slices: dict[int, list[float]] = defaultdict(list)
    for event_id, t0 in sent_at.items():
        if event_id in arrived:
            slices[int((t0 - started) / SLICE_S)].append((arrived[event_id] - t0) * 1e3)
    out = []
    for i in sorted(slices):
        p = _percentiles(slices[i])
        out.append({"at": round(i * SLICE_S, 1), "n": p["n"], "p50": round(p["p50"], 1), "max": round(p["max"], 1)})
    return out


def _snapshot_marks(trace_files: list[Path], started: float) -> list[float]:
    """When the flow's sources took their snapshots (s from the first measured send; one per snapshot)."""
    at = sorted(json.loads(line)["t"] - started for path in trace_files for line in path.read_text().splitlines()
                if '"snapshot"' in line)
    out: list[float] = []
    for t in at:
        if not out or t - out[-1] > 0.5:
            out.append(round(t, 2))
    return out


def _slow(res: dict[str, Any], over_ms: float = 100.0) -> str:
    """The slices whose slowest event took over ``over_ms``, one line."""
    slow = [s for s in res.get("timeline", []) if s["max"] > over_ms]
    if not slow:
        return f"  no slice of {SLICE_S:g} s had an event over {over_ms:g} ms"
    parts = [f"{s['at']:g}s:{s['max']:.0f}" for s in slow]
    return (f"  slices with an event over {over_ms:g} ms ({len(slow)} of {len(res['timeline'])}, at s: max ms): "
            + " ".join(parts))


def _row(name: str, p: dict[str, float]) -> str:
    if not p.get("n"):
        return f"  {name:<12} (none)"
    return (f"  {name:<12} p50 {p['p50']:8.1f}  p75 {p['p75']:8.1f}  p99 {p['p99']:8.1f}  max {p['max']:8.1f} ms"
            f"  ({p['n']:,} events)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataflows.bench.live", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=5_000.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds of messages")
    parser.add_argument("--workers", type=int, default=1, help="worker threads per process (-w)")
    parser.add_argument("--processes", type=int, default=1, help="flow processes (-i/-a)")
    parser.add_argument("--per-key", action="store_true", help="one model per key (build_live_flow(per_key=True))")
    parser.add_argument("--snapshot-s", type=float, default=10.0, help="recovery snapshot interval (-s)")
    parser.add_argument("--model", default="linear")
    parser.add_argument("--flush-seconds", type=float, default=None,
                        help="build_live_flow(flush_seconds=...): how often the lake commits (default 5)")
    parser.add_argument("--no-stages", action="store_true", help="end to end only (code without the trace)")
    parser.add_argument("--tmp", default=None, help="folder for the lake and recovery state")
    parser.add_argument("--keep", action="store_true", help="keep the lake, recovery state and flow log")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--profile", default=None, help="run the flow (one process) under cProfile into this file")
    parser.add_argument("--wall-clock", action="store_true",
                        help="re-time the messages so that event time runs with the clock (a live stream's times)")
    parser.add_argument("--relay", action="store_true",
                        help="the transport alone: a relay of event ids (dataflows.bench.relay) in place of the flow")
    parser.add_argument("--stats-window", default=None, type=_duration_text,
                        help="build_live_flow(stats_window=...), e.g. 1h (default: auto, chosen from the topic)")
    args = parser.parse_args(argv)
    res = run(rate=args.rate, seconds=args.seconds, workers=args.workers, processes=args.processes,
              per_key=args.per_key, snapshot_s=args.snapshot_s, model=args.model, tmp=args.tmp,
              stages=not args.no_stages, keep=args.keep, profile=args.profile, flush_seconds=args.flush_seconds,
              wall_clock=args.wall_clock, relay=args.relay, stats_window=args.stats_window)
    if res["relay"]:
        print("the transport alone: dataflows.bench.relay in place of the flow (the figures below are its)")
    print(f"live path: {res['messages']:,} messages at {args.rate:,.0f}/s (sent at {res['produce_rate']:,.0f}/s), "
          f"model {res['model']}, workers {res['workers']} x processes {res['processes']}, "
          f"per_key {res['per_key']}, snapshots every {res['snapshot_s']} s; load average {res['load_average']}")
    print(f"predicted {res['predicted']:,} of {res['events']:,} events, {res['predictions_per_s'] or 0:,.0f} "
          f"predictions/s; the flow used {res['flow_cpu_share']} cores ({res['idle_cpu_share']} when idle), "
          f"this bench {res['bench_cpu_share']}, the machine {res['machine_busy_cores']} of {os.cpu_count()}")
    print(_row("end to end", res["end_to_end_ms"]))
    for stage, p in res.get("stages_ms", {}).items():
        print(_row(stage, p))
    print(_slow(res))
    if res.get("snapshots_at_s"):
        print(f"  snapshots at s: {' '.join(f'{t:g}' for t in res['snapshots_at_s'])}")
    for line in res.get("flow_said", []):
        print(f"  the flow said: {line}")
    print(json.dumps(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
