"""A tabular history as a Parquet file, for whole-process replays (a script, not a test).

    python -m dataflows.bench.history --kind numeric --events 1000000 --out /tmp/numeric.parquet
    python -m lake ingest --lake L --file /tmp/numeric.parquet --id-col event_id --time-col event_time \\
        --key-col key --label-col label --label-time-col label_time

- ``numeric``: 8 numeric features (``x0`` .. ``x7``), 3 keys, one event every 1-60 s;
- ``categorical``: ``amount``, ``age`` (20% null), ``items``, ``shop`` (400 values, 100 more from the
  middle on), ``country`` (15% null), ``channel``, ``online`` (a boolean), 4,000 keys.

Each label arrives 1 min to 1 h after its event; its probability follows a logistic model of the
features, so the model has something to learn. Columns are drawn with numpy, seeded.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from lake.entry import ArgumentParser, run_main

_T0 = 1_700_000_000_000_000  # µs


def history(kind: str, n: int, *, seed: int = 0) -> pl.DataFrame:
    """``n`` events with their labels (``event_id``, ``event_time``, ``key``, payload, ``label``,
    ``label_time``, times in µs as UTC datetimes)."""
    if kind not in ("numeric", "categorical"):
        raise ValueError(f"kind must be 'numeric' or 'categorical', got {kind!r}")
    if n < 1:
        raise ValueError(f"events must be >= 1, got {n!r}")
    rng = np.random.default_rng(seed)
    t = _T0 + np.cumsum(rng.integers(1_000_000, 60_000_000, n))
    cols: dict[str, object] = {"event_id": [f"e{i}" for i in range(n)]}
    if kind == "numeric":
        keys = np.array(["k0", "k1", "k2"])[rng.integers(0, 3, n)]
        xs = {f"x{j}": rng.normal(j, 1 + j, n) for j in range(8)}
        z = xs["x0"] - xs["x3"] / 4
        payload: dict[str, object] = xs
    else:
        keys = np.char.add("card", rng.integers(0, 4000, n).astype(str))
        amount = rng.lognormal(3, 1, n)
        shop_n = np.where(np.arange(n) < n // 2, 400, 500)
        channel = np.array(["web", "pos", "app"])[rng.integers(0, 3, n)]
        country = np.array(["FR", "DE", "US", "GB", "ES"])[rng.integers(0, 5, n)]
        payload = {
            "amount": amount,
            "age": pl.Series(rng.integers(18, 90, n).astype(np.float64)).set(pl.Series(rng.random(n) < 0.2), None),
            "items": rng.integers(1, 10, n),
            "shop": np.char.add("shop", (rng.random(n) * shop_n).astype(np.int64).astype(str)),
            "country": pl.Series(country).set(pl.Series(rng.random(n) < 0.15), None),
            "channel": channel,
            "online": rng.random(n) < 0.4,
        }
        z = (amount - 30) / 20 + np.where(channel == "web", 0.8, 0.0)
    label = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    label_t = t + rng.integers(60_000_000, 3_600_000_000, n)
    frame = pl.DataFrame({**cols, "event_time": t, "key": keys, **payload, "label": label, "label_time": label_t})
    return frame.with_columns(pl.col("event_time", "label_time").cast(pl.Datetime("us", "UTC")))


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m dataflows.bench.history", description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=["numeric", "categorical"], default="numeric")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the .parquet file to write")
    args = parser.parse_args(argv)
    history(args.kind, args.events, seed=args.seed).write_parquet(args.out)
    return 0


if __name__ == "__main__":
    run_main(main)

