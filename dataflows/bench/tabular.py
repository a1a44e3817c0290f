"""Events/s of the tabular columnar step against the bare River loop, in memory (a script, not a test).

    python -m dataflows.bench.tabular [--events 300000] [--repeat 3]

Two generated streams, each event labelled 20-60 events later:

- ``numeric``: 8 numeric features, 3 keys;
- ``categorical``: 3 numbers (one with 20% nulls), 3 string fields (one with 15% nulls, one of
  500 values with new ones appearing), a boolean, 4,000 keys.

Three loops on the same data, alternated, medians reported (the machine is shared):

- ``bare``: River's ``StandardScaler | LogisticRegression(SGD(0.005), l2=0)`` predicting and
  learning on the raw features (a dict per event; strings one-hot, nulls dropped, in the loop);
- ``item``: the learner's item path: :class:`~dataflows.features.KeyedFeaturizer` (payload, time
  and per-key history features) and the ``linear`` spec (``--model naive-bayes``: GaussianNB),
  dict by dict;
- ``compiled``: :class:`~dataflows.tabular.TabularStep` on batches of columns (the same features
  and model as ``item``, the same floats), batches built beforehand.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from typing import Any

import numpy as np
import polars as pl

EV, LB = 0, 1


def stream(kind: str, n: int, seed: int = 0) -> list[tuple]:
    """Items ``(EV, event_id, t, key, payload)`` and ``(LB, event_id, label)`` in arrival order."""
    rng = random.Random(seed)
    items: list[tuple] = []
    waiting: dict[int, list[tuple]] = {}
    t = 1_700_000_000_000_000
    keys = ["k0", "k1", "k2"] if kind == "numeric" else [f"card{i}" for i in range(4000)]
    shops = [f"shop{i}" for i in range(400)]
    for i in range(n):
        t += rng.randrange(1_000_000, 60_000_000)
        if kind == "numeric":
            payload = {f"x{j}": rng.gauss(j, 1 + j) for j in range(8)}
            z = payload["x0"] - payload["x3"] / 4
        else:
            if i == n // 2:
                shops += [f"shop{i}" for i in range(400, 500)]  # new categories mid-stream
            amount = rng.lognormvariate(3, 1)
            payload = {
                "amount": amount,
                "shop": rng.choice(shops),
                "country": None if rng.random() < 0.15 else rng.choice(["FR", "DE", "US", "GB", "ES"]),
                "age": None if rng.random() < 0.2 else float(rng.randrange(18, 90)),
                "channel": rng.choice(["web", "pos", "app"]),
                "online": rng.random() < 0.4,
                "items": rng.randrange(1, 10),
            }
            z = (amount - 30) / 20 + (0.8 if payload["channel"] == "web" else 0.0)
        y = int(rng.random() < 1 / (1 + np.exp(-z)))
        eid = f"e{i}"
        items.append((EV, eid, t, rng.choice(keys), payload))
        waiting.setdefault(i + rng.randrange(20, 60), []).append((LB, eid, y))
        items.extend(waiting.pop(i, ()))
    for rest in waiting.values():
        items.extend(rest)
    return items


def run_bare(items: list[tuple]) -> float:
    """The bare River loop of ``python -m dataflows.bench`` on these items (put in its item layout first,
    outside the timing)."""
    from dataflows.bench.throughput import bare_raw_loop
    from dataflows.items import EVENT, LABEL

    as_items = [(None, EVENT, it[1], None, None, it[4]) if it[0] == EV else (None, LABEL, it[1], it[2])
                for it in items]
    return bare_raw_loop(as_items, seed=0)[0]


def run_item(items: list[tuple], model_name: str = "linear") -> float:
    from dataflows.features import KeyedFeaturizer
    from dataflows.models import get_spec

    f = KeyedFeaturizer()
    model = get_spec(model_name).build(seed=0)
    pending: dict[str, tuple] = {}
    started = time.perf_counter()
    for item in items:
        if item[0] == EV:
            _, eid, t, key, payload = item
            x = f.transform_one(payload, key=key, event_time_us=t)
            model.predict_proba_one(x)
            f.learn_one(payload, key=key, event_time_us=t)
            pending[eid] = (x, key)
        else:
            entry = pending.pop(item[1], None)
            if entry is not None:
                model.learn_one(entry[0], item[2] == 1)
                f.learn_label(key=entry[1], y=item[2] == 1)
    return time.perf_counter() - started


def batches(items: list[tuple], size: int) -> list[tuple[np.ndarray, pl.DataFrame, pl.DataFrame]]:
    out = []
    for a in range(0, len(items), size):
        chunk = items[a: a + size]
        evs = [it for it in chunk if it[0] == EV]
        lbs = [it for it in chunk if it[0] == LB]
        ev = pl.DataFrame({"event_id": [it[1] for it in evs], "event_time": [it[2] for it in evs],
                           "key": [it[3] for it in evs]}, schema={"event_id": pl.String, "event_time": pl.Int64,
                                                                  "key": pl.String})
        if evs:
            payload = pl.DataFrame([it[4] for it in evs], infer_schema_length=None)
            ev = pl.concat([ev, payload], how="horizontal")
        lb = pl.DataFrame({"event_id": [it[1] for it in lbs], "label": [it[2] for it in lbs]},
                          schema={"event_id": pl.String, "label": pl.Int64})
        out.append((np.array([it[0] for it in chunk], np.int8), ev, lb))
    return out


def run_compiled(prepared: list[tuple], model_name: str = "linear") -> float:
    from dataflows.features import KeyedFeaturizer
    from dataflows.models import get_spec
    from dataflows.tabular import TabularStep

    step = TabularStep(KeyedFeaturizer(), [get_spec(model_name).build(seed=0)])
    started = time.perf_counter()
    for kinds, ev, lb in prepared:
        if step.process(kinds=kinds, events=ev, labels=lb) is None:
            raise SystemExit("a batch was declined: the benchmark measures the compiled step only")
    step.sync_models()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4096, help="items per batch of the compiled step")
    parser.add_argument("--streams", default="numeric,categorical")
    parser.add_argument("--model", default="linear", choices=["linear", "naive-bayes"],
                        help="the model of the item path and the compiled step (bare River stays linear)")
    args = parser.parse_args(argv)
    run_compiled(batches(stream("categorical", 500), 100), args.model)  # compile (or load) the kernels first
    results: dict[str, Any] = {}
    for kind in args.streams.split(","):
        items = stream(kind, args.events)
        prepared = batches(items, args.batch)
        times: dict[str, list[float]] = {"bare": [], "item": [], "compiled": []}
        cpu: dict[str, list[float]] = {"bare": [], "item": [], "compiled": []}
        for r in range(args.repeat):
            for name in ("bare", "compiled", "item") if r % 2 == 0 else ("item", "compiled", "bare"):
                c0 = time.process_time()
                secs = (run_bare(items) if name == "bare" else run_item(items, args.model) if name == "item"
                        else run_compiled(prepared, args.model))
                cpu[name].append(time.process_time() - c0)  # (a shared machine: CPU time varies less)
                times[name].append(secs)
                print(f"{kind} run {r + 1}: {name} {args.events / secs:,.0f} events/s ({secs:.2f} s wall, "
                      f"{cpu[name][-1]:.2f} s CPU), load {os.getloadavg()[0]:.2f}", flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        results[kind] = med
        print(f"{kind}: {args.events:,} events, medians of {args.repeat} (wall): "
              f"bare River {args.events / med['bare']:,.0f}/s, item path {args.events / med['item']:,.0f}/s, "
              f"compiled {args.events / med['compiled']:,.0f}/s; "
              f"compiled_vs_bare_river: {med['bare'] / med['compiled']:.2f}, "
              f"compiled_vs_item_path: {med['item'] / med['compiled']:.2f}; per CPU second: "
              f"compiled_vs_bare_river {med_cpu['bare'] / med_cpu['compiled']:.2f}, "
              f"compiled_vs_item_path {med_cpu['item'] / med_cpu['compiled']:.2f}", flush=True)
    print(f"load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
