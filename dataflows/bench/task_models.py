"""Measure the model specs of each task against the no-skill baselines, prequentially.

Test then train in the order the dataflow sees the stream: each event is predicted at its
event time, its label learned at its label time (flights: at arrival, hours later), with the
features stored at prediction. Streams:

- ``temperature`` (regression): a generated daily station series, 20 years: seasonal
  cycle plus AR(1) weather (phi 0.8, sd 1.5 °C), features today's temperature, the
  day of year (sin/cos) and yesterday's; label tomorrow's temperature, known before the
  next forecast. A stand-in for the daily weather history in issue 18 (not shipped).
- ``flights-delay`` (regression): flights ``--task regression`` (arrival delay, minutes).
- ``friedman-drift`` (regression), ``rbf-drift`` and ``flights-multiclass`` (multiclass).

Run: ``PYTHONPATH=. python dataflows/bench/task_models.py [--n N] [--specs linear,tree]
[--candidates [--only a,b]]``; prints one line per stream and spec (MAE, RMSE for regression;
accuracy, log loss for multiclass; CPU seconds). ``--candidates`` adds the settings measured
before choosing the defaults (:func:`candidates`; ``river-default`` is River's
StandardScaler | LinearRegression).

Measured 2026-12-05 on this machine (2 shared cores; 20,000 events per stream; MAE / RMSE,
accuracy / log loss):

==================  =============  =====================  =============  =============
regression          linear         tree = hoeffding-tree  mean           persistence
==================  =============  =====================  =============  =============
temperature         1.214 / 1.524  1.225 / 1.537          5.336 / 6.167  1.262 / 1.583
flights-delay       20.70 / 36.47  20.97 / 36.63          21.83 / 37.29  29.67 / 51.15
friedman-drift      2.178 / 2.833  2.177 / 2.858          4.042 / 4.970  5.628 / 6.990
==================  =============  =====================  =============  =============

==================  =============  =============  ==============  =============  =============
multiclass          linear         tree (mc)      hoeffding-tree  naive-bayes    majority
==================  =============  =============  ==============  =============  =============
rbf-drift           0.522 / 1.197  0.339 / 1.391  0.325 / 1.389   0.309 / 16.81  0.303 / 1.408
flights-multiclass  0.778 / 0.800  0.785 / 0.836  0.785 / 0.825   0.755 / 1.218  0.785 / 0.826
==================  =============  =============  ==============  =============  =============

Candidates (first 40,000 flights unless said): regression linear, squared loss: AdaGrad 0.05 25.37 /
40.44 (the mean 23.77 / 39.83), AdaGrad 0.01 24.84 / 40.22 (with target statistics as features); Huber
at 1 sd: AdaGrad 0.05 23.21 / 39.13 (chosen; equal to squared loss on friedman-drift and temperature),
clipping the scaled features at 5 sd 23.16 / 39.07. River's default linear model diverges (8.8e7).
Trees: River's adaptive tree with any leaves 27.1 to 38.6 MAE, RMSE 66 to 167; a plain Hoeffding tree
under one TargetStandardScaler 23.89 / 39.67; on the raw target with mean leaves 23.58 / 39.24, with
standardised linear leaves 22.75 / 38.75 (chosen; 23.15 / 39.11 with the final leaves). Multiclass
linear: SoftmaxRegression SGD 0.01 0.729 / 0.872 (majority 0.741 / 0.892), SGD 0.002 0.740 / 0.845;
with class shares (ClassShares) scaled 0.746 / 0.833, unscaled SGD 0.01 0.731, 0.005 0.745, 0.002
0.750 / 0.810 (chosen), features clipped at 5 sd 0.750 / 0.804.

``forest`` (10 trees, slow): first 10,000 flights 19.82 / 36.36 (mean 21.17 / 36.89), 5,000 events of
friedman-drift 2.221, temperature 1.226; rbf-drift 0.662 / 1.007 (before these defaults, labels at once).
Tree leaves on rbf-drift: naive-Bayes-adaptive 0.502 / 1.743, naive Bayes 0.502 / 1.773 (more
accurate, worse log loss than the majority class, as on binary flights; majority-class leaves kept).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from dataflows.features import KeyedFeaturizer
from dataflows.models import TASK_SPECS
from monitoring.tasks import error, log_loss, predict

Item = tuple[str, int, Any]
"""``("x", i, features)`` (event ``i`` is predicted) or ``("y", i, label)`` (its label is learned)."""
Stream = Callable[[int], Iterator[Item]]


def temperature(n: int, seed: int = 7) -> Iterator[Item]:
    rng = random.Random(seed)
    weather, temps = 0.0, []
    for day in range(n + 2):
        weather = 0.8 * weather + rng.gauss(0.0, 1.5)
        temps.append(10.0 + 8.0 * math.sin(2 * math.pi * (day - 100) / 365.25) + weather)
    for day in range(1, n + 1):
        angle = 2 * math.pi * (day % 365.25) / 365.25
        x = {"temp": temps[day], "temp_yesterday": temps[day - 1], "doy_sin": math.sin(angle),
             "doy_cos": math.cos(angle)}
        yield "x", day, x
        yield "y", day, temps[day + 1]  # known the next day, before its forecast


def _scenario(name: str, **params: Any) -> Stream:
    def stream(n: int) -> Iterator[Item]:
        from lake.scenarios import SCENARIOS

        frames = SCENARIOS[name](**({"limit": n} if name == "flights" else {"n": n}), **params)
        labels = {r["event_id"]: (r["label"], r["label_time"]) for r in frames.labels.iter_rows(named=True)}
        featurizer = KeyedFeaturizer(time_features=True)
        timeline: list[tuple[Any, int, int, Any]] = []  # (time, events before labels, position, row or label)
        for i, row in enumerate(frames.events.iter_rows(named=True)):
            timeline.append((row["event_time"], 0, i, row))
            if row["event_id"] in labels:
                y, label_time = labels[row["event_id"]]
                timeline.append((label_time, 1, i, y))
        timeline.sort(key=lambda item: item[:3])  # labels at their label_time, as the dataflow learns them
        for t, kind, i, value in timeline:
            if kind:
                yield "y", i, value
                continue
            us = int(t.timestamp() * 1_000_000)
            payload = {k: v for k, v in value.items() if k not in ("event_id", "event_time", "key")}
            x = featurizer.transform_one(payload, key=value["key"], event_time_us=us)
            featurizer.learn_one(payload, key=value["key"], event_time_us=us)
            yield "x", i, x
    return stream


STREAMS: dict[str, tuple[str, Stream]] = {
    "temperature": ("regression", temperature),
    "flights-delay": ("regression", _scenario("flights", task="regression")),
    "friedman-drift": ("regression", _scenario("friedman-drift")),
    "rbf-drift": ("multiclass", _scenario("rbf-drift")),
    "flights-multiclass": ("multiclass", _scenario("flights", task="multiclass")),
}


def candidates(task: str) -> dict[str, Callable[[int], Any]]:
    """Settings measured before choosing the defaults (regression ``linear`` and ``tree``; multiclass
    ``linear`` and ``tree``)."""
    from river import drift, linear_model, optim, preprocessing, tree

    from dataflows.class_shares import ClassShares
    from dataflows.models import _stable_linear
    from dataflows.regressors import RangeGuard
    from dataflows.transformers import NumericStandardScaler

    if task == "multiclass":
        def softmax(lr: float) -> Any:
            return NumericStandardScaler() | linear_model.SoftmaxRegression(optimizer=optim.SGD(lr))

        return {"softmax-0.01": lambda seed: softmax(0.01),
                "shares-softmax-0.002-clip5": lambda seed: ClassShares(
                    NumericStandardScaler(clip=5.0) | linear_model.SoftmaxRegression(optimizer=optim.SGD(0.002))),
                "softmax-0.002": lambda seed: softmax(0.002),
                "shares-softmax-0.01": lambda seed: ClassShares(softmax(0.01)),
                "shares-softmax-0.005": lambda seed: ClassShares(softmax(0.005)),
                "tree-nba-leaves": lambda seed: tree.HoeffdingAdaptiveTreeClassifier(grace_period=200, seed=seed),
                "tree-nb-leaves": lambda seed: tree.HoeffdingAdaptiveTreeClassifier(
                    grace_period=200, leaf_prediction="nb", seed=seed)}

    def target_scaled(opt: Callable[[], Any], clip: float = 1e12, loss: Any = None) -> Callable[[int], Any]:
        return lambda seed: RangeGuard(preprocessing.TargetStandardScaler(
            regressor=NumericStandardScaler() | linear_model.LinearRegression(
                optimizer=opt(), intercept_lr=0.01, clip_gradient=clip, loss=loss)))

    return {
        "river-default": lambda seed: preprocessing.StandardScaler() | linear_model.LinearRegression(),
        "sgd-0.001": lambda seed: NumericStandardScaler() | linear_model.LinearRegression(
            optimizer=optim.SGD(0.001)),
        "target-sgd-0.01": target_scaled(lambda: optim.SGD(0.01)),
        "target-adam": target_scaled(lambda: optim.Adam(0.01)),
        "target-adagrad-0.05-squared": target_scaled(lambda: optim.AdaGrad(0.05), 10.0),
        "target-adagrad-0.02-squared": target_scaled(lambda: optim.AdaGrad(0.02), 10.0),
        "target-adagrad-0.05-huber": target_scaled(lambda: optim.AdaGrad(0.05), 10.0, optim.losses.Huber(1.0)),
        "target-adagrad-0.01-huber": target_scaled(lambda: optim.AdaGrad(0.01), 10.0, optim.losses.Huber(1.0)),
        "target-adagrad-0.05-huber-clip5": lambda seed: RangeGuard(preprocessing.TargetStandardScaler(
            regressor=NumericStandardScaler(clip=5.0) | linear_model.LinearRegression(
                optimizer=optim.AdaGrad(0.05), intercept_lr=0.01, clip_gradient=10.0, loss=optim.losses.Huber(1.0)))),
        "target-adagrad-0.05-huber-clip3": lambda seed: RangeGuard(preprocessing.TargetStandardScaler(
            regressor=NumericStandardScaler(clip=3.0) | linear_model.LinearRegression(
                optimizer=optim.AdaGrad(0.05), intercept_lr=0.01, clip_gradient=10.0, loss=optim.losses.Huber(1.0)))),
        "tree-river-default": lambda seed: tree.HoeffdingAdaptiveTreeRegressor(seed=seed),
        "tree-adaptive-target": lambda seed: preprocessing.TargetStandardScaler(
            regressor=tree.HoeffdingAdaptiveTreeRegressor(grace_period=200, leaf_prediction="adaptive",
                                                          seed=seed)),
        "tree-mean-leaves": lambda seed: RangeGuard(preprocessing.TargetStandardScaler(
            regressor=tree.HoeffdingAdaptiveTreeRegressor(grace_period=200, leaf_prediction="mean", seed=seed))),
        "tree-mean-leaves-raw": lambda seed: RangeGuard(tree.HoeffdingAdaptiveTreeRegressor(
            grace_period=200, leaf_prediction="mean", seed=seed)),
        "hoeffding-tree-mean-leaves-raw": lambda seed: RangeGuard(tree.HoeffdingTreeRegressor(
            grace_period=200, leaf_prediction="mean")),
        "hoeffding-tree-scaled-leaves-raw": lambda seed: RangeGuard(tree.HoeffdingTreeRegressor(
            grace_period=200, leaf_prediction="adaptive", leaf_model=preprocessing.TargetStandardScaler(
                regressor=_stable_linear()))),
        "tree-scaled-leaves-raw": lambda seed: RangeGuard(tree.HoeffdingAdaptiveTreeRegressor(
            grace_period=200, leaf_prediction="adaptive", seed=seed, leaf_model=preprocessing.TargetStandardScaler(
                regressor=_stable_linear()))),
        "tree-scaled-leaves-raw-adwin-1e-5": lambda seed: RangeGuard(tree.HoeffdingAdaptiveTreeRegressor(
            grace_period=200, leaf_prediction="adaptive", seed=seed, drift_detector=drift.ADWIN(delta=1e-5),
            leaf_model=preprocessing.TargetStandardScaler(regressor=_stable_linear()))),
        "hoeffding-tree-mean-leaves": lambda seed: RangeGuard(preprocessing.TargetStandardScaler(
            regressor=tree.HoeffdingTreeRegressor(grace_period=200, leaf_prediction="mean"))),
        "tree-model-target": lambda seed: preprocessing.TargetStandardScaler(
            regressor=tree.HoeffdingAdaptiveTreeRegressor(grace_period=200, leaf_prediction="model",
                                                          seed=seed)),
    }


def run(task: str, items: list[Item], build: Callable[[int], Any]) -> dict[str, float]:
    """Prequential error of the model ``build(42)`` on ``items``: each label scored against the
    prediction made for its event, then learned with that event's features."""
    model = build(42)
    sums = {"n": 0, "abs": 0.0, "sq": 0.0, "correct": 0, "ll": 0.0}
    waiting: dict[int, tuple[dict[str, float], Any]] = {}
    started = time.process_time()
    for kind, i, value in items:
        if kind == "x":
            waiting[i] = (value, predict(task, model, value))
            continue
        x, p = waiting.pop(i)
        y = value
        e = error(task, p, y)
        sums["n"] += 1
        if task == "regression":
            sums["abs"] += e
            sums["sq"] += e * e
        else:
            sums["correct"] += e == 0.0
            sums["ll"] += log_loss(task, p, y)
        model.learn_one(x, y)
    k = max(sums["n"], 1)
    out = {"n": sums["n"], "cpu_s": time.process_time() - started}
    if task == "regression":
        out |= {"mae": sums["abs"] / k, "rmse": math.sqrt(sums["sq"] / k)}
    else:
        out |= {"accuracy": sums["correct"] / k, "log_loss": sums["ll"] / k}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="events per stream")
    parser.add_argument("--streams", default=",".join(STREAMS))
    parser.add_argument("--specs", default="", help="comma-separated spec names (default: all but forest)")
    parser.add_argument("--candidates", action="store_true", help="also the regression linear candidates")
    parser.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    args = parser.parse_args()
    for name in args.streams.split(","):
        task, stream = STREAMS[name]
        items = list(stream(args.n))
        specs = {s: spec.factory for s, spec in TASK_SPECS[task].items()
                 if (s in args.specs.split(",") if args.specs else s != "forest")}
        if args.candidates:
            specs |= {c: f for c, f in candidates(task).items() if not args.only or c in args.only.split(",")}
        for spec, build in specs.items():
            result = run(task, items, build)
            shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items())
            print(f"{name:18s} {spec:26s} {shown}", flush=True)


if __name__ == "__main__":
    main()
