"""Measure candidate tree models for the demo's second model on a lake's pinned history.

    python -m flows.model_choice --lake /tmp/flights [--candidates tree,hat-mc-50,ht-mc-200]

(``sgt``, River's stochastic gradient tree, is not offered: it divides by zero on flights.)

Every candidate learns online on the same events, features and label arrival times as the
dataflow (:func:`flows.bench_stream.build_stream`, :func:`flows.strategies.run_online`); an
event served before any label arrived gets the dataflow's cold-start score (0.0, the prior
of no labels). Printed per candidate: accuracy and log loss over the labelled events, the
mean ROC AUC of the event-time windows (1 day by default), training CPU; and the no-skill
accuracy (always the majority class) the default models must beat.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

CANDIDATES: dict[str, str] = {
    "tree": "the current spec: HoeffdingAdaptiveTree(grace_period=200, leaf_prediction='mc')",
    "hat-nba-200": "HoeffdingAdaptiveTree(grace_period=200), naive-Bayes-adaptive leaves (River's default)",
    "hat-mc-50": "HoeffdingAdaptiveTree(grace_period=50, leaf_prediction='mc')",
    "hat-mc-200-conf": "HoeffdingAdaptiveTree(grace_period=200, leaf_prediction='mc', delta=1e-5)",
    "ht-mc-200": "HoeffdingTree(grace_period=200, leaf_prediction='mc')",
    "ht-mc-100": "HoeffdingTree(grace_period=100, leaf_prediction='mc')",
    "efdt-mc-200": "ExtremelyFastDecisionTree(grace_period=200, leaf_prediction='mc')",
    "hat-notrend": "Discard('key_n', 'month', 'day') | HoeffdingAdaptiveTree(grace_period=200, leaf_prediction='mc')",
    "naive-bayes": "the registered spec: Gaussian naive Bayes",
    "linear": "the registered spec: scaler + logistic regression",
}


def build(name: str, seed: int) -> Any:
    from river import compose, tree

    hat = tree.HoeffdingAdaptiveTreeClassifier
    return {
        "hat-nba-200": lambda: hat(grace_period=200, seed=seed),
        "hat-mc-50": lambda: hat(grace_period=50, leaf_prediction="mc", seed=seed),
        "hat-mc-200-conf": lambda: hat(grace_period=200, leaf_prediction="mc", delta=1e-5, seed=seed),
        "ht-mc-200": lambda: tree.HoeffdingTreeClassifier(grace_period=200, leaf_prediction="mc"),
        "ht-mc-100": lambda: tree.HoeffdingTreeClassifier(grace_period=100, leaf_prediction="mc"),
        "efdt-mc-200": lambda: tree.ExtremelyFastDecisionTreeClassifier(grace_period=200, leaf_prediction="mc"),
        "hat-notrend": lambda: compose.Discard("key_n", "month", "day") | hat(grace_period=200, leaf_prediction="mc",
                                                                               seed=seed),
    }[name]()


def measure(stream: Any, name: str, *, window_us: int, seed: int = 42) -> dict[str, float]:
    from dataflows.models import SPECS, ModelSpec, register
    from flows.strategies import BenchConfig, StrategySpec, run_online
    from monitoring.prequential import roc_auc

    if name not in SPECS:
        register(ModelSpec(name, CANDIDATES[name], lambda s, n=name: build(n, s)))
    cpu = time.process_time()
    run = run_online(stream, StrategySpec("online", name), BenchConfig(seed=seed))
    cpu = time.process_time() - cpu
    scores = np.where(stream.labels_before == 0, 0.0, run.scores)  # the dataflow's cold start
    scored = stream.scored
    y = stream.y[scored] == 1
    s = scores[scored]
    p = np.clip(np.where(y, s, 1.0 - s), 1e-15, 1.0)
    windows = stream.event_time[scored] // window_us
    aucs = [roc_auc(y[windows == w], s[windows == w]) for w in np.unique(windows)]
    aucs = [a for a in aucs if a is not None]
    return {"accuracy": float(((s >= 0.5) == y).mean()), "log_loss": float(-np.log(p).mean()),
            "mean_window_auc": float(np.mean(aucs)), "train_cpu_s": run.costs["train_cpu_s"], "cpu_s": cpu}


def main(argv: list[str] | None = None) -> int:
    from dataflows.replay import pin_versions
    from flows.bench_stream import build_stream
    from lake.durations import parse_duration_us

    parser = argparse.ArgumentParser(prog="python -m flows.model_choice", description=__doc__.split("\n")[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--exclude", default="tailnum,flight", help="payload fields not used (as the demo)")
    parser.add_argument("--window", default="1d", help="event-time windows of the mean ROC AUC")
    args = parser.parse_args(argv)
    t = time.perf_counter()
    stream = build_stream(args.lake, pin_versions(args.lake),
                          featurizer={"exclude": [f for f in args.exclude.split(",") if f]})
    y = stream.y[stream.scored]
    base = max(float((y == 1).mean()), float((y == 0).mean()))
    print(f"{len(y):,} labelled events (stream built in {time.perf_counter() - t:.0f} s); "
          f"no-skill accuracy {base:.3f}", flush=True)
    print(f"{'candidate':<18}{'accuracy':>10}{'log loss':>10}{'mean AUC':>10}{'train CPU s':>13}", flush=True)
    for name in [c for c in args.candidates.split(",") if c]:
        m = measure(stream, name, window_us=parse_duration_us(args.window))
        print(f"{name:<18}{m['accuracy']:>10.3f}{m['log_loss']:>10.3f}{m['mean_window_auc']:>10.3f}"
              f"{m['train_cpu_s']:>13.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
