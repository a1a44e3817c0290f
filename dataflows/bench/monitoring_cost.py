"""Per-item cost of the monitoring parts in the dataflow's batch API: ``python -m dataflows.bench.monitoring_cost``.

Each part gets the same seeded stream of Agrawal-like events (9 numeric features)
in batches of ``--batch`` items, as the predict/learn step would hand them; the
figure is wall time per item, the median of ``--repeat`` runs.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from lake.entry import ArgumentParser, run_main

FEATURES = ("salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan")


def make_stream(n: int, seed: int = 42) -> dict[str, Any]:
    rng = random.Random(seed)
    xs = [{f: rng.uniform(0, 100) for f in FEATURES} for _ in range(n)]
    ys = [rng.random() < 0.4 for _ in range(n)]
    scores = [min(1.0, max(0.0, rng.gauss(0.7 if y else 0.3, 0.2))) for y in ys]
    return {"xs": xs, "ys": ys, "scores": scores, "event_ids": [f"e{i}" for i in range(n)],
            "event_times": [1_700_000_000_000_000 + i * 200 for i in range(n)]}


def parts() -> dict[str, Callable[[], Callable[[dict[str, Any]], Any]]]:
    """Part name → factory of a function that processes one batch."""
    from monitoring.anomaly import make_scorer
    from monitoring.monitor import DriftMonitor
    from monitoring.windows import WindowStats

    def monitor(watch: dict[str, list[str]]) -> Callable[[], Callable[[dict[str, Any]], Any]]:
        def build() -> Callable[[dict[str, Any]], Any]:
            m = DriftMonitor(watch)
            return lambda b: m.update_many(**b)
        return build

    def windows() -> Callable[[dict[str, Any]], Any]:
        ws = WindowStats(window_us=15_000_000, lateness_us=6_000_000)
        return lambda b: ws.update_many(b["event_times"], b["xs"], event_ids=b["event_ids"])

    def scorer(spec: str) -> Callable[[], Callable[[dict[str, Any]], Any]]:
        def build() -> Callable[[dict[str, Any]], Any]:
            s = make_scorer(spec)
            return lambda b: s.update_many(b["xs"], event_ids=b["event_ids"], event_times=b["event_times"])
        return build

    return {
        "DriftMonitor error=adwin": monitor({"error": ["adwin"]}),
        "DriftMonitor error=adwin,page-hinkley,ddm": monitor({"error": ["adwin", "page-hinkley", "ddm"]}),
        "DriftMonitor feature:salary=adwin": monitor({"feature:salary": ["adwin"]}),
        "DriftMonitor new_features=page-hinkley": monitor({"new_features": ["page-hinkley"]}),
        "WindowStats 15 s windows, 9 features": windows,
        "anomaly zscore, 9 features": scorer("zscore"),
        "anomaly hst, 9 features": scorer("hst"),
    }


def measure(n: int = 100_000, batch: int = 2_000, repeat: int = 3, only: str = "") -> list[tuple[str, float]]:
    """``[(part, µs per item)]``, the median over ``repeat`` runs."""
    data = make_stream(n)
    batches = [{k: v[lo:lo + batch] for k, v in data.items()} for lo in range(0, n, batch)]
    out = []
    for name, build in parts().items():
        if only and only not in name:
            continue
        runs = []
        for _ in range(repeat):
            step = build()
            started = time.perf_counter()
            for b in batches if "hst" not in name else batches[: max(1, len(batches) // 10)]:
                step(b)
            items = n if "hst" not in name else min(n, max(1, len(batches) // 10) * batch)
            runs.append(1e6 * (time.perf_counter() - started) / items)
        out.append((name, statistics.median(runs)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m dataflows.bench.monitoring_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="", help="parts whose name contains this")
    args = parser.parse_args(argv)
    print(f"{args.n:,} items in batches of {args.batch:,}; median of {args.repeat} runs "
          "(hst: a tenth of the items)\n")
    print("| part | µs per item |\n|---|---|")
    for name, us in measure(args.n, args.batch, args.repeat, args.only):
        print(f"| {name} | {us:.2f} |")
    return 0


if __name__ == "__main__":
    run_main(main)
