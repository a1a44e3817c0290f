"""Drift detection quality: delay, missed drifts and false alarms against known drift positions.

Every detector is fed a model's 0/1 error (or log loss) stream of a replay, in
label-arrival order (:func:`label_stream`), and scored by :func:`score_alarms`
against the known drift positions (:func:`evaluate_known_drifts`), or its alarms
counted per month (:func:`alarms_per_month`). The command that replays a scenario
and prints the tables is ``python -m dataflows.bench.drift_quality``.

How alarms are scored (all counts in labels of the stream fed to the detector):
the *delay* of an alarm for a drift at event position ``p`` is the number of
labels of events at or after ``p`` the detector had seen when it alarmed. The
first alarm with a delay in ``[1, max_delay]`` detects the drift; a drift without
one is *missed*. Other alarms inside a drift's window ``[1, max_delay]`` are
*repeats* (the same drift again); every alarm outside all windows is a *false
alarm*, reported per 100k labels.

>>> q = score_alarms(alarms=[150, 160, 700], positions=range(1000), drifts=[100, 500], max_delay=100)
>>> q.delays, q.missed, q.repeats, q.false_alarms
([50], 1, 1, 1)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from monitoring.detectors import make_detector


@dataclass
class Quality:
    """How one detector's alarms match the known drifts of one stream."""

    detector: str
    signal: str
    n: int
    n_drifts: int
    delays: list[int] = field(default_factory=list)
    missed: int = 0
    repeats: int = 0
    false_alarms: int = 0
    alarms: int = 0
    seconds: float = 0.0
    model: str = ""

    @property
    def false_per_100k(self) -> float:
        return 1e5 * self.false_alarms / self.n if self.n else 0.0

    @property
    def us_per_item(self) -> float:
        return 1e6 * self.seconds / self.n if self.n else 0.0

    def row(self) -> dict[str, Any]:
        return {
            "model": self.model, "detector": self.detector, "signal": self.signal,
            "detected": f"{len(self.delays)}/{self.n_drifts}",
            "delays": ",".join(map(str, self.delays)) or "-", "max_delay": max(self.delays, default=None),
            "missed": self.missed, "false": self.false_alarms, "false_per_100k": round(self.false_per_100k, 2),
            "repeats": self.repeats, "alarms": self.alarms, "us_per_item": round(self.us_per_item, 2),
        }


def score_alarms(*, alarms: Iterable[int], positions: Sequence[int] | np.ndarray, drifts: Iterable[int],
                 max_delay: int = 1_000, detector: str = "", signal: str = "") -> Quality:
    """Score alarm positions (1-based, in the order items were fed) against known drifts.

    ``positions[i]`` is the event position (0-based) of the ``i``-th item fed (its
    label, in arrival order); ``drifts`` are the event positions where each new
    concept starts. See the module docstring for the definitions. Drifts closer than
    ``max_delay`` labels have overlapping windows: an alarm there counts for both.
    """
    if max_delay < 1:
        raise ValueError(f"max_delay must be >= 1, got {max_delay!r}")
    pos = np.asarray(positions, dtype=np.int64)
    n = int(pos.size)
    drifts = sorted(int(d) for d in drifts)
    alarms = sorted(int(a) for a in alarms)
    bad = [a for a in alarms if not 1 <= a <= n]
    if bad:
        raise ValueError(f"alarm positions must be in [1, {n}], got {bad[:5]}")
    q = Quality(detector=detector, signal=signal, n=n, n_drifts=len(drifts), alarms=len(alarms))
    in_window = np.zeros(len(alarms), dtype=bool)
    a_idx = np.asarray(alarms, dtype=np.int64) - 1
    for d in drifts:
        # delay of an alarm = labels of events at or after d seen up to and including it
        seen_after = np.cumsum(pos >= d)
        delay = seen_after[a_idx] if alarms else np.array([], dtype=np.int64)
        hit = (delay >= 1) & (delay <= max_delay)
        if hit.any():
            first = int(np.flatnonzero(hit)[0])
            q.delays.append(int(delay[first]))
            q.repeats += int(hit.sum()) - 1
        else:
            q.missed += 1
        in_window |= hit
    q.false_alarms = int((~in_window).sum())
    return q


def signal_values(frame: pl.DataFrame, signal: str, *, threshold: float = 0.5) -> np.ndarray:
    """The ``error`` (0/1) or ``log_loss`` stream of a ``learn_log`` slice (``label``, ``score``)."""
    y = frame["label"].to_numpy().astype(bool)
    p = frame["score"].to_numpy().astype(np.float64)
    if signal == "error":
        return ((p >= threshold) != y).astype(np.float64)
    if signal == "log_loss":
        return -np.log(np.clip(np.where(y, p, 1.0 - p), 1e-15, 1.0))
    raise ValueError(f"signal must be 'error' or 'log_loss', got {signal!r}")


def run_detector(spec: str, values: np.ndarray) -> tuple[list[int], float]:
    """1-based alarm positions of detector ``spec`` on ``values``, and the seconds it took."""
    det = make_detector(spec)
    started = time.perf_counter()
    hits = det.update_many(values)
    return [h + 1 for h in hits], time.perf_counter() - started


def label_stream(lake: str, *, run_id: str, model: str, shard: int = 0) -> pl.DataFrame:
    """``learn_log`` of one model in label-arrival order, with each event's ``offset`` (its position)."""
    from lake.table import read_table

    log = (read_table(lake, "learn_log", columns=["run_id", "shard", "model", "event_id", "event_time", "label",
                                                  "score", "learn_order"])
           .filter((pl.col("run_id") == run_id) & (pl.col("model") == model) & (pl.col("shard") == shard))
           .sort("learn_order"))
    if log.height == 0:
        raise ValueError(f"learn_log has no rows of run {run_id!r}, model {model!r}, shard {shard}")
    offsets = read_table(lake, "events", columns=["event_id", "offset"])
    return log.join(offsets, on="event_id", how="left", maintain_order="left")


def find_run(lake: str, model: str) -> str | None:
    """The run of ``model`` with the most labels learned, ``None`` when there is none."""
    from lake.table import exists, read_table

    if not exists(lake, "learn_log"):
        return None
    runs = (read_table(lake, "learn_log", columns=["run_id", "model"]).filter(pl.col("model") == model)
            .group_by("run_id").len().sort(["len", "run_id"], descending=[True, False]))
    return runs["run_id"][0] if runs.height else None


def evaluate_known_drifts(stream: pl.DataFrame, drifts: Sequence[int], detectors: Sequence[str],
                          signals: Sequence[str] = ("error",), *, max_delay: int = 1_000,
                          model: str = "") -> list[Quality]:
    """Score every detector on every signal of ``stream`` (see :func:`label_stream`).

    Detectors for 0/1 input run on ``error`` only.
    """
    positions = stream["offset"].to_numpy()
    out = []
    for signal in signals:
        values = signal_values(stream, signal)
        for spec in detectors:
            make_detector(spec)  # validate before the long runs
        for spec in detectors:
            if make_detector(spec).binary and signal != "error":
                continue  # 0/1 input only
            alarms, seconds = run_detector(spec, values)
            q = score_alarms(alarms=alarms, positions=positions, drifts=drifts, max_delay=max_delay,
                             detector=make_detector(spec).label, signal=signal)
            q.seconds = seconds
            q.model = model
            out.append(q)
    return out


def alarms_per_month(stream: pl.DataFrame, detectors: Sequence[str], signal: str = "error") -> pl.DataFrame:
    """Alarms of each detector per month of the alarming label's event time (UTC), one column per
    detector, beside the month's labels, positive rate and the signal's mean."""
    values = signal_values(stream, signal)
    months = stream["event_time"].dt.strftime("%Y-%m")
    counts = (stream.with_columns(month=months, value=pl.Series(values)).group_by("month")
              .agg(pl.len().alias("labels"), pl.col("label").mean().round(3).alias("positive_rate"),
                   pl.col("value").mean().round(3).alias(f"mean_{signal}"))
              .sort("month"))
    for spec in detectors:
        alarms, _ = run_detector(spec, values)
        hit = pl.DataFrame({"month": months.gather([a - 1 for a in alarms])}, schema={"month": pl.String})
        per = hit.group_by("month").agg(pl.len().alias(make_detector(spec).label))
        counts = counts.join(per, on="month", how="left").fill_null(0)
    return counts
