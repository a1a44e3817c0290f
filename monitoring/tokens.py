"""Summary drift signals of a text stream (URLs): new-token rate and token-frequency divergence.

A hashed, feature-evolving stream has millions of features: a drift report per
column is out of the question. :class:`TokenDriftMonitor` reduces each window of
``window`` texts to two numbers, in memory that does not grow with the vocabulary:

- ``new_token_rate``: share of the window's distinct tokens not seen in the recent
  past (a two-generation hashed bit set; each generation lives ``horizon`` windows).
  New campaigns and rotations mint tokens, so the rate jumps.
- ``token_js``: Jensen-Shannon divergence (bits, in [0, 1]) between the token
  frequencies of this window and of the previous one, each sketched as counts in
  ``n_buckets`` hash buckets. A campaign that takes a share of the traffic moves
  mass onto its tokens (lures, brand, kit paths) and the divergence jumps.

Each signal feeds drift detectors (``monitoring.detectors`` specs; the default
``spike`` alarms when a window is ``k`` standard deviations above the mean of the
windows before it). The third summary signal, the model's loss, comes from
:class:`monitoring.monitor.DriftMonitor` (``log_loss``); :func:`url_signals`
puts the three side by side per window for a replay in the lake.

>>> m = TokenDriftMonitor(window=3, n_buckets=64)
>>> w = m.update_many(["https://a.com/x", "https://a.com/y", "https://b.com/x"])
>>> w[0].position, w[0].n_distinct, round(w[0].new_token_rate, 2), w[0].token_js
(3, 6, 1.0, None)
>>> w = m.update_many(["https://a.com/x", "https://a.com/y", "https://b.com/x"])
>>> round(w[0].new_token_rate, 2), round(w[0].token_js, 6)
(0.0, 0.0)

Hashing uses polars' 64-bit hash with fixed seeds: stable for one polars
version (a resumed monitor under another version would see its past as new).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import polars as pl

from lake.entry import ArgumentParser, run_main
from lake.names import plain
from monitoring.detectors import DETECTORS, Detector, is_int, parse_spec

_TOKEN = r"[a-z0-9]+"
SIGNALS = ("new_token_rate", "token_js")


class TokenWindow(NamedTuple):
    """The summary of one closed window. ``position`` is 1-based: the item that closed it."""

    position: int
    n_tokens: int
    n_distinct: int
    new_token_rate: float
    token_js: float | None  # None for the first window (nothing to compare with)


class TokenAlarm(NamedTuple):
    detector: str
    signal: str
    position: int


def tokens_of(texts: Sequence[str] | pl.Series) -> pl.DataFrame:
    """``row`` (index of the text) and ``h`` (64-bit token hash) for every token, lowercase ``[a-z0-9]+``.

    >>> tokens_of(["https://A.com/x"]).height
    4
    """
    s = texts if isinstance(texts, pl.Series) else pl.Series("t", list(texts), dtype=pl.String)
    frame = pl.DataFrame({"tok": s.fill_null("").str.to_lowercase().str.extract_all(_TOKEN)})
    return (frame.with_row_index("row").explode("tok").drop_nulls("tok")
            .select(pl.col("row").cast(pl.Int64), h=pl.col("tok").hash(seed=0x5EED)))


class SpikeRule:
    """Alarms when a value exceeds the median of the last ``history`` values by ``k`` robust deviations.

    The spread is the median absolute deviation (scaled to a standard deviation, with a
    floor of ``min_std``): robust to the windows a campaign already lifted and to slow
    trends (the new-token rate settling after warm-up). Needs ``warmup`` values first;
    after an alarm, ``cooldown`` values cannot alarm (one step up, one alarm).

    >>> r = SpikeRule(k=3, warmup=3)
    >>> [r.update(v) for v in (0.1, 0.11, 0.09, 0.1, 0.5, 0.5)]
    [False, False, False, False, True, False]
    """

    __slots__ = ("k", "warmup", "history", "cooldown", "min_std", "label", "_values", "_quiet")

    def __init__(self, k: float = 3.0, warmup: int = 5, history: int = 20, cooldown: int = 3,
                 min_std: float = 0.005) -> None:
        if not k > 0:
            raise ValueError(f"k must be > 0, got {k!r}")
        if not is_int(warmup) or warmup < 2:
            raise ValueError(f"warmup must be an integer >= 2, got {warmup!r}")
        if not is_int(history) or history < warmup:
            raise ValueError(f"history must be an integer >= warmup ({warmup}), got {history!r}")
        if not is_int(cooldown) or cooldown < 0:
            raise ValueError(f"cooldown must be an integer >= 0, got {cooldown!r}")
        self.k, self.warmup, self.history, self.cooldown = float(k), warmup, history, cooldown
        self.min_std = float(min_std)
        self.label = f"spike(k={k:g})"
        self._values: deque[float] = deque(maxlen=history)
        self._quiet = 0

    def update(self, x: float) -> bool:
        values = self._values
        alarm = False
        if self._quiet:
            self._quiet -= 1
        elif len(values) >= self.warmup:
            med = float(np.median(values))
            mad = float(np.median(np.abs(np.asarray(values) - med)))
            if x > med + self.k * max(self.min_std, 1.4826 * mad):
                alarm = True
                self._quiet = self.cooldown
        values.append(x)
        return alarm


def _detector(spec: str) -> SpikeRule | Detector:
    name, params = parse_spec(spec)
    if name == "spike":
        return SpikeRule(**params)
    if name not in DETECTORS:
        raise ValueError(f"unknown drift detector {name!r}; known: spike, {', '.join(sorted(DETECTORS))}")
    return Detector(name, **params)


class TokenDriftMonitor:
    """New-token rate and token-frequency divergence per window of texts, with detectors on both.

    Parameters
    ----------
    window
        Texts per window.
    n_buckets
        Buckets of the frequency sketch compared between windows.
    seen_bits
        Size of each generation of the seen-token bit set (two hash probes per
        token; 2**23 keeps false "seen" under ~5% at a million tokens per generation).
    horizon
        Windows a generation lives: a token counts as new when it has not been
        seen in the last ``horizon`` to ``2 * horizon`` windows.
    detectors
        Detector specs run on each signal (``spike``, ``spike(k=5)``, or any of
        :mod:`monitoring.detectors`, e.g. ``page-hinkley(mode=up, threshold=0.5)``).
    """

    def __init__(self, *, window: int = 5_000, n_buckets: int = 4_096, seen_bits: int = 2**23,
                 horizon: int = 50, detectors: Sequence[str] = ("spike",)) -> None:
        for name, value, least in (("window", window, 1), ("n_buckets", n_buckets, 2), ("seen_bits", seen_bits, 64),
                                   ("horizon", horizon, 1)):
            if not is_int(value) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if isinstance(detectors, str):
            raise TypeError("detectors must be a collection of specs, not a string")
        self.window, self.n_buckets, self.seen_bits, self.horizon = window, n_buckets, seen_bits, horizon
        self.detector_specs = tuple(detectors)
        self.detectors = {s: [_detector(d) for d in self.detector_specs] for s in SIGNALS}
        self._seen = [np.zeros(seen_bits, dtype=bool), np.zeros(seen_bits, dtype=bool)]
        self._age = 0  # windows since the young generation was started
        self._prev: np.ndarray | None = None
        self._counts = np.zeros(n_buckets, dtype=np.int64)
        self._hashes: list[np.ndarray] = []
        self._n = 0  # texts in the open window
        self.n_seen = 0
        self.windows: list[TokenWindow] = []
        self.alarms: list[TokenAlarm] = []

    def update_many(self, texts: Sequence[str] | pl.Series) -> list[TokenWindow]:
        """Feed texts in stream order; returns the windows they closed (alarms go to :attr:`alarms`)."""
        toks = tokens_of(texts)
        rows = toks["row"].to_numpy()
        hashes = toks["h"].to_numpy()
        n = len(texts)
        out = []
        i = 0
        while i < n:
            take = min(self.window - self._n, n - i)
            lo, hi = np.searchsorted(rows, [i, i + take])
            self._add(hashes[lo:hi])
            self._n += take
            i += take
            if self._n >= self.window:
                out.append(self._close(self.n_seen + i))
        self.n_seen += n
        return out

    def _add(self, h: np.ndarray) -> None:
        if h.size:
            self._counts += np.bincount((h % np.uint64(self.n_buckets)).astype(np.int64), minlength=self.n_buckets)
            self._hashes.append(h)

    def _close(self, position: int) -> TokenWindow:
        h = np.unique(np.concatenate(self._hashes)) if self._hashes else np.zeros(0, np.uint64)
        bits = np.uint64(self.seen_bits)
        a = (h % bits).astype(np.int64)
        b = ((h >> np.uint64(32)) % bits).astype(np.int64)
        young, old = self._seen
        seen = (young[a] & young[b]) | (old[a] & old[b])
        rate = float((~seen).sum() / h.size) if h.size else 0.0
        young[a] = True
        young[b] = True
        self._age += 1
        if self._age >= self.horizon:  # the old generation is forgotten, the young one ages
            old[:] = False
            self._seen = [old, young]
            self._age = 0
        counts = self._counts
        js = None if self._prev is None else js_divergence(self._prev, counts)
        w = TokenWindow(position, int(counts.sum()), int(h.size), rate, js)
        self._prev = counts
        self._counts = np.zeros(self.n_buckets, dtype=np.int64)
        self._hashes = []
        self._n = 0
        self.windows.append(w)
        for signal, value in (("new_token_rate", rate), ("token_js", js)):
            if value is None:
                continue
            for det in self.detectors[signal]:
                if det.update(value):
                    self.alarms.append(TokenAlarm(det.label, signal, position))
        return w


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits between two count vectors (0: same shape, 1: disjoint).

    >>> js_divergence(np.array([1, 0]), np.array([0, 3])), js_divergence(np.array([2, 2]), np.array([1, 1]))
    (1.0, 0.0)
    """
    ps, qs = p.sum(), q.sum()
    if ps == 0 or qs == 0:
        return 0.0 if ps == qs else 1.0
    p = p / ps
    q = q / qs
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum()
    return float(min(1.0, max(0.0, 0.5 * (kl_p + kl_q))))


def windows_frame(monitor: TokenDriftMonitor) -> pl.DataFrame:
    """The monitor's windows as a frame (one row per window)."""
    return pl.DataFrame([w._asdict() for w in monitor.windows],
                        schema={"position": pl.Int64, "n_tokens": pl.Int64, "n_distinct": pl.Int64,
                                "new_token_rate": pl.Float64, "token_js": pl.Float64})


def url_signals(lake: str, *, field: str = "url", window: int = 5_000, run_id: str | None = None,
                model: str | None = None, detectors: Sequence[str] = ("spike",),
                chunk: int = 200_000) -> tuple[pl.DataFrame, list[TokenAlarm]]:
    """Per window of the lake's ``events`` (replay order): token signals and, for a replay, the loss.

    With ``run_id``, ``log_loss`` is the mean log loss of ``model`` (default: the run's
    first) over the labels of the window's events, from ``learn_log``; the loss has no
    alarm here (the dataflow's ADWIN on the error stream writes ``drift_events``).
    """
    from lake.table import read_table

    # The dataflow's order: by event time, then ingest offset (Delta returns files in any order).
    events = read_table(lake, "events", columns=["event_id", "event_time", "offset", field]).sort(
        "event_time", "offset")
    mon = TokenDriftMonitor(window=window, detectors=detectors)
    for start in range(0, events.height, chunk):
        mon.update_many(plain(events.get_column(field)).slice(start, chunk))
    frame = windows_frame(mon)
    if run_id is not None and frame.height:
        log = read_table(lake, "learn_log").filter(pl.col("run_id") == run_id)
        if model is None and log.height:
            model = log.sort("learn_order")["model"][0]
        log = log.filter(pl.col("model") == model)
        idx = events.select("event_id").with_row_index("i")
        eps = 1e-15
        loss = (log.join(idx, on="event_id").with_columns(
            w=(pl.col("i") // window), p=pl.col("score").clip(eps, 1 - eps))
            .group_by("w").agg(log_loss=(-pl.when(pl.col("label") == 1).then(pl.col("p").log())
                                         .otherwise((1 - pl.col("p")).log())).mean()))
        frame = (frame.with_columns(w=(pl.col("position") - 1) // window).join(loss, on="w", how="left")
                 .drop("w"))
    return frame, list(mon.alarms)


def main(argv: list[str] | None = None) -> int:
    """``python -m monitoring.tokens --lake L [--run-id R]``: print the signals and the alarms."""
    parser = ArgumentParser(prog="python -m monitoring.tokens", description=url_signals.__doc__.split("\n")[0])
    parser.add_argument("--lake", default="lakehouse")
    parser.add_argument("--field", default="url")
    parser.add_argument("--window", type=int, default=5_000)
    parser.add_argument("--run-id", default=None, help="a replay of the lake: add its log loss per window")
    parser.add_argument("--model", default=None)
    parser.add_argument("--detector", default="spike", help="detector spec on each token signal (default spike)")
    args = parser.parse_args(argv)
    frame, alarms = url_signals(args.lake, field=args.field, window=args.window, run_id=args.run_id,
                                model=args.model, detectors=[args.detector])
    with pl.Config(tbl_rows=60, tbl_cols=10):
        print(frame)
    for a in alarms:
        print(f"alarm: {a.detector} on {a.signal} at event {a.position:,}")
    return 0


if __name__ == "__main__":
    run_main(main)
