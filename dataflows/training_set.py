"""Point-in-time training sets: each entity row joined to its key's features as they were at its time.

    python -m lake training-set --lake L --entities FILE --as-of-col COL [--key-col key] --out OUT

For a row ``(key, T)`` the features are the per-key state the online featurizer
(:class:`dataflows.features.KeyedFeaturizer`, the state the feature store holds) had
at ``T``, computed by running the lake's history through a featurizer in the
dataflow's order: events by ``(event_time, offset)``, each label at its
``label_time``, events first at equal times, then the entity rows of that time.
So a row sees the events with ``event_time <= T`` and the labels with
``label_time <= T`` of events it has seen, nothing later: an event or a label that
arrives after ``T`` cannot leak into the row (an as-of join on event and label time).

Columns added: ``key_n``, ``key_gap``, ``key_rate``, ``key_recent`` (the features
served for an event of that key at ``T``), and the raw ``key_events`` and
``key_labels`` counts they come from.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import polars as pl

from dataflows.features import KeyedFeaturizer
from lake.errors import LakeError
from lake.table import exists, open_table, table_uri

FEATURE_COLUMNS = ("key_n", "key_gap", "key_rate", "key_recent", "key_events", "key_labels")


def _utc_us(frame: pl.DataFrame, col: str, *, what: str) -> np.ndarray:
    s = frame.get_column(col)
    if s.dtype == pl.String:
        try:
            s = s.str.to_datetime(time_zone="UTC")
        except pl.exceptions.PolarsError as ex:
            raise LakeError(f"{what}: column {col!r} holds values that are not times ({ex})") from None
    if not isinstance(s.dtype, pl.Datetime):
        raise LakeError(f"{what}: column {col!r} must hold times, got {s.dtype}")
    if s.dtype.time_zone is None:
        s = s.dt.replace_time_zone("UTC")
    if s.null_count():
        raise LakeError(f"{what}: column {col!r} has {s.null_count()} empty value(s)")
    return s.dt.convert_time_zone("UTC").dt.cast_time_unit("us").dt.epoch("us").to_numpy()


def training_set(lake: str | os.PathLike[str], entities: pl.DataFrame, *, as_of_col: str, key_col: str = "key",
                 featurizer: dict[str, Any] | None = None, events_version: int | None = None,
                 labels_version: int | None = None) -> pl.DataFrame:
    """``entities`` with each row's per-key features as of its ``as_of_col`` time (see the module doc).

    ``featurizer`` holds :class:`KeyedFeaturizer` settings (``smoothing``, ``recent_alpha``,
    ``shared_prior``); the versions pin ``events`` and ``labels`` (default: latest).
    """
    for col in (as_of_col, key_col):
        if col not in entities.columns:
            raise LakeError(f"entities: no column {col!r} (columns: {', '.join(entities.columns)})")
    clash = [c for c in FEATURE_COLUMNS if c in entities.columns]
    if clash:
        raise LakeError(f"entities: column(s) {clash} would be overwritten by the features")
    for table in ("events", "labels"):
        if not exists(lake, table):
            raise LakeError(f"lake {os.fspath(lake)!r} has no {table} table ({table_uri(lake, table)})")
    as_of = _utc_us(entities, as_of_col, what="entities")
    keys = entities.get_column(key_col).cast(pl.String).to_list()
    ev_dt = open_table(lake, "events", version=events_version)
    lb_dt = open_table(lake, "labels", version=labels_version)
    events = (pl.from_arrow(ev_dt.to_pyarrow_table(columns=["event_id", "event_time", "key", "offset"]))
              .sort(["event_time", "offset"]))
    labels = pl.from_arrow(lb_dt.to_pyarrow_table(columns=["event_id", "label", "label_time"]))
    labels = labels.join(events.select("event_id", "key", "event_time"), on="event_id", how="inner")
    n_ev, n_lb, n_q = events.height, labels.height, len(keys)
    times = np.concatenate([
        events["event_time"].dt.epoch("us").to_numpy(), labels["label_time"].dt.epoch("us").to_numpy(), as_of])
    kinds = np.concatenate([np.zeros(n_ev, np.int8), np.ones(n_lb, np.int8), np.full(n_q, 2, np.int8)])
    # Events keep their (event_time, offset) order; labels by time, then as they are stored.
    order = np.lexsort((np.arange(times.size), kinds, times))
    f = KeyedFeaturizer(**{**(featurizer or {}), "time_features": False, "max_keys": 2**62})
    ev_keys, ev_t, ev_ids = events["key"].to_list(), events["event_time"].dt.epoch("us").to_list(), \
        events["event_id"].to_list()
    lb_keys, lb_y, lb_ids = labels["key"].to_list(), labels["label"].to_list(), labels["event_id"].to_list()
    seen: set[str] = set()
    learned: set[str] = set()
    rows: list[dict[str, float] | None] = [None] * n_q
    raw: list[tuple[int, int]] = [(0, 0)] * n_q
    for i in order.tolist():
        if i < n_ev:
            f.learn_one({}, key=ev_keys[i], event_time_us=ev_t[i])
            seen.add(ev_ids[i])
        elif i < n_ev + n_lb:
            j = i - n_ev
            eid = lb_ids[j]
            if eid in seen and eid not in learned:  # the dataflow learns a label once, after its event
                learned.add(eid)
                f.learn_label(key=lb_keys[j], y=lb_y[j] == 1)
        else:
            q = i - n_ev - n_lb
            rows[q] = f.transform_one({}, key=keys[q], event_time_us=int(as_of[q]))
            state = f.key_state(keys[q])
            raw[q] = (0, 0) if state is None else (state[0], state[2])
    feats = {name: [r[name] for r in rows] for name in FEATURE_COLUMNS[:4]}  # type: ignore[index]
    return entities.with_columns(
        *(pl.Series(name, values, pl.Float64) for name, values in feats.items()),
        pl.Series("key_events", [r[0] for r in raw], pl.Int64),
        pl.Series("key_labels", [r[1] for r in raw], pl.Int64),
    )


def read_entities(path: str | os.PathLike[str]) -> pl.DataFrame:
    """A CSV or Parquet file of entity rows."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise LakeError(f"entities file {p!r} does not exist")
    if p.endswith((".parquet", ".pq")):
        return pl.read_parquet(p)
    return pl.read_csv(p, try_parse_dates=True)


def write_frame(frame: pl.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write ``frame`` as Parquet, or CSV when ``path`` ends in ``.csv``."""
    p = os.fspath(path)
    if p.endswith(".csv"):
        frame.write_csv(p)
    else:
        frame.write_parquet(p)
