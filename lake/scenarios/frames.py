"""The shape every scenario returns."""

from __future__ import annotations

from typing import NamedTuple

import polars as pl


class ScenarioFrames(NamedTuple):
    """A scenario's rows in the lake's layout.

    ``events``: ``event_id``, ``event_time`` (UTC), ``key``, then the payload, in
    ingest order (``offset`` is assigned by the ingest). ``labels``: ``event_id``,
    ``label`` (0/1, a class or a value), ``label_time``. ``drifts``: rows of ``scenario_drifts`` for
    scenarios with known concept drifts, else ``None``. ``task``: the learning task of
    the labels (:mod:`lake.tasks`), ``None`` to infer it as for a user's file.
    """

    events: pl.DataFrame
    labels: pl.DataFrame
    drifts: pl.DataFrame | None = None
    task: str | None = None
