"""Drift detection quality of detectors on a replay: delay, missed drifts, false alarms (the command).

    python -m dataflows.bench.drift_quality --lake PATH [--scenario agrawal-drift|flights] [--detectors SPECS]

On ``agrawal-drift`` (drift positions in ``scenario_drifts``) every detector is fed
the model's 0/1 error (or log loss) stream of a replay, in label-arrival order,
and scored by :func:`monitoring.quality.score_alarms` (how alarms are scored is
written there). On ``flights`` (no known drift points) the alarms are counted per
month. An empty lake is filled first (``agrawal-drift``: ``--n`` events, ``--seed``;
``flights``: the whole year) and replayed with model ``--model`` when it holds no
run of it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import polars as pl

from lake.entry import ArgumentParser, run_main
from monitoring.detectors import make_detector, split_specs
from monitoring.quality import alarms_per_month, evaluate_known_drifts, find_run, label_stream

DEFAULT_DETECTORS = (
    "adwin", "adwin(delta=0.002)", "adwin(delta=0.0001)", "adwin(cooldown=5000)", "page-hinkley",
    "page-hinkley(threshold=100.0)", "ddm", "eddm", "hddm-a(two_sided_test=True)", "hddm-w(two_sided_test=True)",
    "fhddm",
)
"""Detectors compared by default: ours, River's defaults where ours differ, a few variants.
``kswin`` is left out for its cost (~230 µs per item); pass it with ``--detectors``."""


def prepare(lake: str, scenario: str, *, models: Sequence[str], n: int, seed: int) -> dict[str, str]:
    """Ingest ``scenario`` into an empty lake and replay the models that have no run yet (together).

    Returns ``{model: run id}``.
    """
    from lake.ingest import ingest_scenario
    from lake.table import exists

    if not exists(lake, "events"):
        params = {"n": n, "seed": seed} if scenario == "agrawal-drift" else {}
        print(ingest_scenario(lake, scenario, **params), file=sys.stderr)
    runs = {m: find_run(lake, m) for m in models}
    missing = [m for m, r in runs.items() if r is None]
    if missing:
        from dataflows.online import run_replay

        print(f"replaying {lake} through {', '.join(missing)} ...", file=sys.stderr)
        run_id = run_replay(lake, ",".join(missing), recovery=False)
        runs.update({m: run_id for m in missing})
    return runs


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of ``rows`` (dicts with the same keys)."""
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    cells = [[("-" if r[k] is None else str(r[k])) for k in keys] for r in rows]
    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m dataflows.bench.drift_quality", description=__doc__.split("\n")[0])
    parser.add_argument("--lake", default=os.environ.get("RIVERLAKE_LAKE", "lakehouse"))
    parser.add_argument("--scenario", default="agrawal-drift", choices=["agrawal-drift", "flights"])
    parser.add_argument("--model", default="linear", help="model specs whose error streams are scored, comma-separated")
    parser.add_argument("--run-id", default=None, help="learn_log run to score (default: each model's longest run)")
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--n", type=int, default=200_000, help="agrawal-drift events when the lake is empty")
    parser.add_argument("--seed", type=int, default=42, help="agrawal-drift seed when the lake is empty")
    parser.add_argument("--detectors", default=",".join(DEFAULT_DETECTORS), help="detector specs, comma-separated")
    parser.add_argument("--signals", default="error,log_loss", help="error and/or log_loss")
    parser.add_argument("--max-delay", type=int, default=1_000, help="labels after a drift within which it counts")
    args = parser.parse_args(argv)
    detectors = split_specs(args.detectors)
    for spec in detectors:
        make_detector(spec)
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    signals = split_specs(args.signals)
    started = time.perf_counter()
    if args.run_id:
        runs = dict.fromkeys(models, args.run_id)
    else:
        runs = prepare(args.lake, args.scenario, models=models, n=args.n, seed=args.seed)
    streams = {m: label_stream(args.lake, run_id=r, model=m, shard=args.shard) for m, r in runs.items()}
    print(f"lake {os.path.abspath(args.lake)}, shard {args.shard}: "
          + "; ".join(f"{m} (run {runs[m]}): {s.height:,} labels" for m, s in streams.items()))
    if args.scenario == "flights":
        for m, stream in streams.items():
            for signal in signals:
                print(f"\nalarms per month, model {m}, signal {signal}:\n")
                print(format_table(alarms_per_month(stream, detectors, signal).to_dicts()))
        print(f"\n{time.perf_counter() - started:.1f} s")
        return 0
    from lake.table import exists, read_table

    if not exists(args.lake, "scenario_drifts"):
        parser.error(f"{args.lake} has no scenario_drifts table: ingest agrawal-drift into an empty lake")
    truth = read_table(args.lake, "scenario_drifts").filter(pl.col("scenario") == args.scenario)
    drifts = (truth.join(read_table(args.lake, "events", columns=["event_id", "offset"]), on="event_id")
              .sort("offset")["offset"].to_list())
    print(f"known drifts at event positions {drifts}; max delay {args.max_delay:,} labels\n")
    results = [q for m, stream in streams.items()
               for q in evaluate_known_drifts(stream, drifts, detectors, signals, max_delay=args.max_delay, model=m)]
    print(format_table([q.row() for q in results]))
    print(f"\n{time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
