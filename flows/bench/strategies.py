"""Learning strategies replayed over one :class:`~flows.bench.stream.Stream`, prequentially.

A strategy gives every event a score at the event's time, with whatever model it
serves then, and learns only from labels that have arrived (see
:func:`flows.bench.stream.training_rows`). Strategies are named ``MODE/LEARNER``:

- ``online/linear``: a River spec (:mod:`dataflows.models`) learning every label as it arrives;
- ``adwin-reset/linear``: the same, plus ADWIN on its 0/1 error stream; at an alarm the
  model is replaced by a fresh one warm-started on the labels in ADWIN's window (at most
  ``adwin_warm_rows``, the history it keeps);
- ``periodic-sliding/L`` and ``periodic-expanding/L``: a batch learner ``L`` refitted from
  scratch every ``retrain_every`` (a calendar period; ``retrain_every_events``: a number of
  events) on the labels arrived so far, in a sliding window of ``sliding`` (or
  ``sliding_events``) or on everything; the last fit serves in between;
- ``static/L``: fitted once at the first retrain point (or, with ``static_rows``, at the
  first event by which that many labels have arrived), never again.

``retrain_stride`` k keeps every k-th retrain point only (the benchmark's time budget
subsamples a strategy that way).

Size: the strategies, their settings and the schedule they share are one contract, read together;
the batch learners and the cost model are already in modules of their own.

Batch learners (:mod:`flows.bench.learners`): ``sk-logreg`` (scikit-learn ``LogisticRegression`` on the sparse feature
dicts, max-abs scaled), ``sk-sgd`` (``SGDClassifier``, log loss), ``hgb``
(``HistGradientBoostingClassifier`` on a dense projection: numeric features as they are,
one categorical column per one-hot field, hashed tokens left out), ``river-SPEC`` (a River spec fitted in one pass
over the window, in event order).

A strategy with no trained model yet (before a batch strategy's first fit, before an
online model's first label, after an ADWIN reset with nothing to warm-start on) serves
the prior of the labels arrived so far (:func:`prior_scores`; a low score, so a
negative, when none has arrived): never a 0.5 tie that the threshold turns into
"positive". ``first_model_event`` in the costs is the first event it served with a model.

Every strategy runs with ``threads`` (default 1) native threads. Costs: CPU seconds
(``time.process_time``, all threads) of training and of predicting, model calls only
(turning stored rows into dicts or matrices for them is not counted);
prediction latency of single-event calls (``perf_counter_ns``) on the same sample of
events for every strategy; pickled model size; rows kept for retraining; peak RSS above
the start of the strategy, sampled every 5 ms.

    python -m flows.bench.strategies --stream DIR --strategy online/linear --out DIR [--config JSON]

runs one strategy in a fresh process (what the benchmark does to isolate timings and memory).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flows.bench.learners import RiverBatchLearner, make_learner
from flows.bench.stream import NO_TIME, LabelAudit, Stream, schedule, training_rows
from lake.durations import duration_or_events
from lake.entry import ArgumentParser, run_main

MODES = ("online", "adwin-reset", "periodic-sliding", "periodic-expanding", "static")
TASK_BATCH_LEARNERS = {"binary": ("sk-logreg", "sk-sgd", "hgb"), "multiclass": ("sk-logreg", "hgb"),
                       "regression": ("sk-ridge", "sk-sgd", "hgb")}
"""The scikit-learn learners of each task (``sk-logreg`` is multinomial on a multiclass lake; ``sk-sgd`` is
``SGDRegressor`` on a regression lake, ``hgb`` ``HistGradientBoostingRegressor``)."""
BATCH_LEARNERS = ("sk-logreg", "sk-sgd", "hgb", "sk-ridge")
_PREDICT_CHUNK = 10_000
PRIOR_CLIP = 0.01
"""The prior a strategy without a model serves is clipped to ``[PRIOR_CLIP, 1 - PRIOR_CLIP]``;
with no label arrived it serves ``PRIOR_CLIP`` (negative)."""
_PROGRESS_EVERY_S = 0.5


@dataclass(frozen=True)
class BenchConfig:
    """Settings shared by every strategy of one benchmark (part of its identity)."""

    seed: int = 42
    threshold: float = 0.5
    retrain_every: str | None = None
    """How often periodic strategies retrain, a duration (default 7d); or ``retrain_every_events``."""
    sliding: str | None = None
    """The sliding window, a duration (default 28d); or ``sliding_events``."""
    max_train_rows: int | None = None
    latency_samples: int = 2_000
    adwin_warm_rows: int = 5_000
    threads: int = 1
    static_rows: int | None = None
    retrain_stride: int = 1

    retrain_every_events: int | None = None
    """Instead of ``retrain_every``: retrain every this many events."""
    sliding_events: int | None = None
    """Instead of ``sliding``: a window of this many events."""

    def __post_init__(self) -> None:
        self.cadence()
        self.window()
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold!r}")
        if self.max_train_rows is not None and self.max_train_rows < 1:
            raise ValueError(f"max_train_rows must be >= 1 or None, got {self.max_train_rows!r}")
        if self.latency_samples < 1:
            raise ValueError(f"latency_samples must be >= 1, got {self.latency_samples!r}")
        if self.adwin_warm_rows < 0:
            raise ValueError(f"adwin_warm_rows must be >= 0, got {self.adwin_warm_rows!r}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads!r}")
        if self.static_rows is not None and self.static_rows < 1:
            raise ValueError(f"static_rows must be >= 1 or None, got {self.static_rows!r}")
        if self.retrain_stride < 1:
            raise ValueError(f"retrain_stride must be >= 1, got {self.retrain_stride!r}")

    def cadence(self) -> tuple[str, int]:
        """How often periodic strategies retrain: ``("us", N)`` or ``("events", K)``."""
        return duration_or_events("retrain_every", self.retrain_every, self.retrain_every_events, default="7d")

    def window(self) -> tuple[str, int]:
        """The sliding window: ``("us", N)`` or ``("events", K)``."""
        return duration_or_events("sliding", self.sliding, self.sliding_events, default="28d")


@dataclass(frozen=True)
class StrategySpec:
    mode: str
    learner: str

    @property
    def name(self) -> str:
        return f"{self.mode}/{self.learner}"

    @classmethod
    def parse(cls, text: str, *, task: str = "binary") -> StrategySpec:
        """``"periodic-sliding/hgb"`` → spec; the error names the known modes and the learners of ``task``."""
        mode, _, learner = text.strip().partition("/")
        if mode not in MODES:
            raise ValueError(f"unknown strategy mode {mode!r} in {text!r}; known: {', '.join(MODES)}")
        batch = TASK_BATCH_LEARNERS[task]
        if mode in ("online", "adwin-reset") or learner not in batch:
            from dataflows.models import TASK_SPECS  # imports river (seconds): only when a River model is named

            specs = TASK_SPECS[task]
            which = "" if task == "binary" else f" for {task}"
            if mode in ("online", "adwin-reset"):
                if learner not in specs:
                    known = ", ".join(sorted(specs))
                    raise ValueError(f"unknown River spec {learner!r} in {text!r}; known{which}: {known}")
            elif not (learner.startswith("river-") and learner.removeprefix("river-") in specs):
                known = ", ".join([*batch, *(f"river-{s}" for s in sorted(specs))])
                raise ValueError(f"unknown batch learner {learner!r} in {text!r}; known{which}: {known}")
        return cls(mode, learner)


@dataclass
class StrategyRun:
    """What one strategy did: a score per event and what it cost."""

    name: str
    scores: np.ndarray
    latency_ns: np.ndarray
    costs: dict[str, float] = field(default_factory=dict)
    resets: list[int] = field(default_factory=list)  # events served first by a reset model (adwin-reset)
    audit: LabelAudit | None = None


# --------------------------------------------------------------------------- memory


@contextmanager
def peak_rss(interval_s: float = 0.005) -> Iterator[dict[str, float]]:
    """Peak resident memory above the start, in MiB, sampled on a thread: ``out["peak_rss_mb"]``."""
    import psutil

    proc = psutil.Process()
    out: dict[str, float] = {}
    start = proc.memory_info().rss
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            peak[0] = max(peak[0], proc.memory_info().rss)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], proc.memory_info().rss)
        out["peak_rss_mb"] = (peak[0] - start) / 2**20


def _size(model: Any) -> int:
    return 0 if model is None else len(pickle.dumps(model, protocol=5))


def _latency_sample(n: int, samples: int) -> int:
    """Stride of the events whose single-event latency is timed (the same for every strategy)."""
    return max(1, n // samples)


def prior_scores(stream: Stream, lo: int, hi: int) -> np.ndarray:
    """What a strategy without a model serves events ``lo..hi-1``: the share of positives among the
    labels arrived before each, clipped to ``[PRIOR_CLIP, 1 - PRIOR_CLIP]``; ``PRIOR_CLIP`` before any label;
    a share of exactly 0.5 just below 0.5 (a tie is a negative). Regression: the mean of the labels
    arrived (0.0 before any); multiclass: the classes' shares among them (uniform before any).

    >>> from flows.bench.stream import Stream
    >>> s = Stream(event_time=np.arange(4), y=np.array([1, 0, 0, 0], dtype=np.int8), label_time=np.arange(4),
    ...            arrival=np.array([0, 1, 2]), labels_before=np.array([0, 1, 2, 3]), indptr=np.zeros(5, dtype=int),
    ...            indices=np.zeros(0, dtype=int), values=np.zeros(0), names=[])
    >>> p = prior_scores(s, 0, 4).tolist()
    >>> p[:2], p[2] < 0.5, round(p[3], 3)
    ([0.01, 0.99], True, 0.333)
    """
    k = np.asarray(stream.labels_before[lo:hi], dtype=np.int64)
    arrived = np.asarray(stream.y)[np.asarray(stream.arrival)]
    if stream.task == "regression":
        sums = np.concatenate(([0.0], np.cumsum(arrived)))
        return np.where(k > 0, sums[k] / np.maximum(k, 1), 0.0)
    if stream.task == "multiclass":
        n_classes = max(len(stream.classes), 1)
        counts = np.zeros((len(arrived) + 1, n_classes))
        if len(arrived):
            counts[1:][np.arange(len(arrived)), arrived] = 1.0
        counts = np.cumsum(counts, axis=0)[k]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(k[:, None] > 0, counts / np.maximum(k, 1)[:, None], 1.0 / n_classes)
    positives = np.concatenate(([0], np.cumsum(np.asarray(stream.y)[np.asarray(stream.arrival)] == 1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(k > 0, positives[k] / np.maximum(k, 1), PRIOR_CLIP)
    p = np.clip(p, PRIOR_CLIP, 1.0 - PRIOR_CLIP)
    return np.where(p == 0.5, np.nextafter(0.5, 0.0), p)  # a tie is served as a negative


Progress = Callable[[int, int], None]
"""``progress(done, total)``: events served so far out of the stream's events."""


class _Throttle:
    """Calls ``progress`` at most every :data:`_PROGRESS_EVERY_S` seconds (and always at the end)."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.next = progress, total, 0.0

    def __call__(self, done: int) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if now >= self.next or done >= self.total:
            self.next = now + _PROGRESS_EVERY_S
            self.progress(done, self.total)


# --------------------------------------------------------------------------- online


def _error_of(stream: Stream, threshold: float) -> Callable[[Any, int], float]:
    """``error(score, e)``: what ADWIN sees for event ``e``'s label, as the dataflow's detectors
    (:func:`monitoring.tasks.error`): the 0/1 error (binary, multiclass), the absolute error (regression)."""
    y = stream.y
    if stream.task == "regression":
        return lambda score, e: abs(float(y[e]) - float(score))
    if stream.task == "multiclass":
        return lambda score, e: 0.0 if int(np.argmax(score)) == int(y[e]) else 1.0
    return lambda score, e: 0.0 if (score >= threshold) == (y[e] == 1) else 1.0



def run_online(stream: Stream, spec: StrategySpec, config: BenchConfig, *, keep_rows: bool = False,
               progress: Progress | None = None) -> StrategyRun:
    """``online/SPEC`` or ``adwin-reset/SPEC`` (see module doc)."""
    from dataflows.models import get_spec
    from monitoring.error_drift import DETECTORS

    build = get_spec(spec.learner, task=stream.task).build
    model = build(seed=config.seed)
    adwin = spec.mode == "adwin-reset"
    detector = DETECTORS["adwin"]() if adwin else None
    buffer: deque[tuple[dict, Any]] = deque(maxlen=config.adwin_warm_rows or None)
    audit = LabelAudit(spec.name, keep_rows=keep_rows)
    n = stream.n_events
    lt, times = stream.label_time, stream.event_time
    arrival, before = stream.arrival, stream.labels_before
    error = _error_of(stream, config.threshold)
    answer, label_of = stream.answer, stream.label
    scores = stream.new_scores(n)
    prior = prior_scores(stream, 0, n)
    tick = _Throttle(progress, n)
    stride = _latency_sample(n, config.latency_samples)
    latency: list[int] = []
    size_points = set(schedule(stream, config.cadence()).tolist())
    learned = 0  # labels the model now serving has learned (0: no model yet)
    first_model = -1
    sizes = [0]
    pending: dict[int, dict] = {}
    resets: list[int] = []
    history = 0
    train_cpu = predict_cpu = 0.0
    pt, pc = time.process_time, time.perf_counter_ns
    k = 0
    for e in range(n):
        upto = int(before[e])
        if k < upto:
            audit.learned(int(times[e]), lt[arrival[k:upto]])
            c0 = pt()
            while k < upto:
                j = int(arrival[k])
                x = pending.pop(j)
                label = label_of(j)
                model.learn_one(x, label)
                learned += 1
                if adwin:
                    buffer.append((x, label))
                    detector.update(error(scores[j], j))
                    if detector.drift_detected:
                        model = build(seed=config.seed)
                        audit.reset()
                        warm = list(buffer)[-min(int(detector.width), len(buffer)):] if buffer else []
                        for wx, wy in warm:
                            model.learn_one(wx, wy)
                        learned = len(warm)
                        if warm:
                            audit.learned(int(times[e]), lt[arrival[k + 1 - len(warm):k + 1]])
                        resets.append(e)
                k += 1
            train_cpu += pt() - c0
            history = max(history, len(buffer))
        x = stream.row(e)
        audit.serve(int(times[e]))
        c0 = pt()
        t0 = pc()
        p = answer(model, x)
        t1 = pc()
        predict_cpu += pt() - c0
        if e % stride == 0:
            latency.append(t1 - t0)
        if learned:
            scores[e] = p
            if first_model < 0:
                first_model = e
        else:
            scores[e] = prior[e]
        if e & 1023 == 0:
            tick(e)
        if lt[e] != NO_TIME:
            pending[e] = x
        if e in size_points:
            sizes.append(_size(model))
    final = _size(model)
    costs = {"train_cpu_s": train_cpu, "predict_cpu_s": predict_cpu, "model_bytes": final,
             "model_bytes_max": max(*sizes, final), "history_rows_max": history, "n_retrains": len(resets),
             "n_learn": k, "first_model_event": first_model if first_model >= 0 else n}
    tick(n)
    return StrategyRun(spec.name, scores, np.array(latency, dtype=np.int64), costs, resets, audit)


# --------------------------------------------------------------------------- periodic / static


def retrain_points(stream: Stream, spec: StrategySpec, config: BenchConfig) -> np.ndarray:
    """Event indices at which a batch strategy fits (before serving that event)."""
    points = schedule(stream, config.cadence())
    if spec.mode == "static":
        if config.static_rows is not None:
            at = int(np.searchsorted(stream.labels_before, config.static_rows, side="left"))
            return np.array([at], dtype=np.int64) if 0 < at < stream.n_events else points[:1]
        return points[:1]
    return points[config.retrain_stride - 1::config.retrain_stride]


def run_batch(stream: Stream, spec: StrategySpec, config: BenchConfig, *, keep_rows: bool = False,
              progress: Progress | None = None) -> StrategyRun:
    """``periodic-sliding/L``, ``periodic-expanding/L`` or ``static/L`` (see module doc)."""
    c0 = time.process_time()
    learner = make_learner(stream, spec.learner, config.seed)
    prepare_cpu = time.process_time() - c0
    timed_inside = isinstance(learner, RiverBatchLearner)
    audit = LabelAudit(spec.name, keep_rows=keep_rows)
    n = stream.n_events
    points = retrain_points(stream, spec, config)
    tick = _Throttle(progress, n)
    first_model = n
    window = config.window() if spec.mode == "periodic-sliding" else None
    bounds = [0, *points.tolist(), n]
    scores = stream.new_scores(n)
    stride = _latency_sample(n, config.latency_samples)
    latency: list[int] = []
    sizes = [0]
    history = 0
    train_cpu = predict_cpu = 0.0
    model = None
    pt = time.process_time
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if lo >= hi:
            continue
        if lo > 0:
            rows = training_rows(stream, lo, window=window, max_rows=config.max_train_rows, audit=audit)
            history = max(history, len(rows))
            if len(rows):
                before = learner.cpu if timed_inside else 0.0
                c0 = pt()
                model = learner.fit(rows)
                fit_cpu = (learner.cpu - before) if timed_inside else pt() - c0
                train_cpu += fit_cpu
                audit.trainings[-1].cpu_s = fit_cpu
                sizes.append(_size(model))
        if model is None:
            scores[lo:hi] = prior_scores(stream, lo, hi)
            tick(hi)
            continue
        first_model = min(first_model, lo)
        audit.serve(int(stream.event_time[lo]), hi - lo)
        for a in range(lo, hi, _PREDICT_CHUNK):  # scored in chunks, as a batch scorer would: bounded memory
            b = min(hi, a + _PREDICT_CHUNK)
            before = learner.cpu if timed_inside else 0.0
            c0 = pt()
            scores[a:b] = learner.predict(model, a, b)
            predict_cpu += (learner.cpu - before) if timed_inside else pt() - c0
            tick(b)
        latency.extend(learner.latency_ns(model, e) for e in range(lo + (-lo) % stride, hi, stride))
    costs = {"train_cpu_s": train_cpu, "predict_cpu_s": predict_cpu, "prepare_cpu_s": prepare_cpu,
             "model_bytes": sizes[-1], "model_bytes_max": max(sizes), "history_rows_max": history,
             "n_retrains": len(audit.trainings), "n_learn": int(sum(t.n_rows for t in audit.trainings)),
             "first_model_event": first_model}
    tick(n)
    return StrategyRun(spec.name, scores, np.array(latency, dtype=np.int64), costs, [], audit)


def preload(spec: StrategySpec) -> None:
    """Import what the strategy needs, so imports count in neither its CPU time nor its memory."""
    import psutil  # noqa: F401
    import scipy.sparse  # noqa: F401

    if spec.learner in BATCH_LEARNERS:
        import sklearn.ensemble  # noqa: F401
        import sklearn.linear_model  # noqa: F401
        import sklearn.pipeline  # noqa: F401
        import sklearn.preprocessing  # noqa: F401
    else:
        import dataflows.models  # noqa: F401
        import monitoring.error_drift  # noqa: F401


def run_strategy(stream: Stream, spec: StrategySpec | str, config: BenchConfig, *,
                 keep_rows: bool = False, progress: Progress | None = None) -> StrategyRun:
    """Replay one strategy over ``stream``; adds ``wall_s`` and ``peak_rss_mb`` to its costs.

    Native thread pools (OpenMP, BLAS) are limited to ``config.threads`` (default 1, as River
    runs): CPU seconds then compare like for like, and on a busy 2-core machine OpenMP's
    spinning threads were measured to cost HistGradientBoosting 6 s of CPU where one thread
    needed 0.8 s.
    """
    from threadpoolctl import threadpool_limits

    if isinstance(spec, str):
        spec = StrategySpec.parse(spec, task=stream.task)
    fn = run_online if spec.mode in ("online", "adwin-reset") else run_batch
    preload(spec)
    started = time.perf_counter()
    with peak_rss() as mem, threadpool_limits(config.threads):
        run = fn(stream, spec, config, keep_rows=keep_rows, progress=progress)
    run.costs["wall_s"] = time.perf_counter() - started
    run.costs["peak_rss_mb"] = mem["peak_rss_mb"]
    return run


# --------------------------------------------------------------------------- isolation


def run_isolated(stream_dir: str | os.PathLike[str], spec: StrategySpec | str, config: BenchConfig, *,
                 out_dir: str | os.PathLike[str], progress: Progress | None = None) -> StrategyRun:
    """:func:`run_strategy` in a fresh Python process over a saved stream (clean timings and memory).

    The process reports its progress as ``@progress DONE TOTAL`` lines on stdout, handed to ``progress``.
    """
    import tempfile

    name = spec if isinstance(spec, str) else spec.name
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "flows.bench.strategies", "--stream", os.fspath(stream_dir), "--strategy", name,
           "--out", os.fspath(out), "--config", json.dumps(asdict(config))]
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            parts = line.split()
            if progress is not None and len(parts) == 3 and parts[0] == "@progress":
                progress(int(parts[1]), int(parts[2]))
        code = proc.wait()
        err.seek(0)
        stderr = err.read()
    if code != 0:
        raise RuntimeError(f"strategy {name} failed in its process (exit {code}):\n{stderr[-4000:]}")
    return load_run(out)


def save_run(run: StrategyRun, out: Path) -> None:
    np.save(out / "scores.npy", run.scores)
    np.save(out / "latency_ns.npy", run.latency_ns)
    trainings = [] if run.audit is None else [
        [t.at_event, t.at_time_us, t.n_rows, t.max_label_time_us, None, t.cpu_s] for t in run.audit.trainings]
    (out / "run.json").write_text(json.dumps({"name": run.name, "costs": run.costs, "resets": run.resets,
                                              "trainings": trainings}))


def load_run(out: Path) -> StrategyRun:
    from flows.bench.stream import Training

    meta = json.loads((out / "run.json").read_text())
    audit = LabelAudit(meta["name"])
    audit.trainings = [Training(*t) for t in meta["trainings"]]
    return StrategyRun(meta["name"], np.load(out / "scores.npy"), np.load(out / "latency_ns.npy"),
                       meta["costs"], meta["resets"], audit)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.bench.strategies", description=__doc__.split("\n")[0])
    parser.add_argument("--stream", required=True, help="folder written by Stream.save")
    parser.add_argument("--strategy", required=True, help="MODE/LEARNER, e.g. periodic-sliding/hgb")
    parser.add_argument("--out", required=True, help="folder for scores.npy, latency_ns.npy, run.json")
    parser.add_argument("--config", default="{}", help="BenchConfig as JSON")
    args = parser.parse_args(argv)
    config = BenchConfig(**json.loads(args.config))
    stream = Stream.load(args.stream)
    spec = StrategySpec.parse(args.strategy, task=stream.task)
    stream = Stream(**{k: np.array(getattr(stream, k)) for k in (
        "event_time", "y", "label_time", "arrival", "labels_before", "indptr", "indices", "values")},
        names=stream.names, info=stream.info)  # in memory before the baseline is taken

    def report(done: int, total: int) -> None:
        print(f"@progress {done} {total}", flush=True)

    run = run_strategy(stream, spec, config, progress=report)
    save_run(run, Path(args.out))
    return 0


if __name__ == "__main__":
    run_main(main)
