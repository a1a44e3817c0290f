"""The online-learning dataflow: replay (or live) → validate → featurize → predict → learn → lake.

Run it with Bytewax::

    python -m bytewax.run dataflows.online:flow                       # settings from env
    python -m bytewax.run "dataflows.online:build_flow(lake='lakehouse', model='linear,tree')"

``flow`` reads its settings from environment variables (see :func:`defaults_from_env`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from dataflows.items import Batch, Output
from dataflows.learner import RunConfig, ShardLearner
from dataflows.replay import pin_versions
from dataflows.sinks import DeltaSink
from dataflows.sources import ReplaySource
from dataflows.validate import validate_batch

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d|w)?\s*$")
_UNIT_US = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000,
            "d": 86_400_000_000, "w": 604_800_000_000}


def parse_duration_us(text: str | int | float) -> int:
    """Microseconds in ``"15m"``, ``"1h"``, ``"1d"``, ``"30s"`` or a number of seconds.

    >>> parse_duration_us("15m"), parse_duration_us(2)
    (900000000, 2000000)
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        return int(text * 1_000_000)
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"duration must look like '30s', '15m', '1h' or '1d', got {text!r}")
    return int(float(m.group(1)) * _UNIT_US[m.group(2) or "s"])


class LearnLogic(StatefulBatchLogic[Batch, Output, bytes]):
    """Bytewax wrapper of :class:`ShardLearner`; its snapshot is the pickled learner."""

    def __init__(self, config: RunConfig, resume: bytes | None) -> None:
        self.config = config
        self.learner: ShardLearner | None = pickle.loads(resume) if resume is not None else None

    def on_batch(self, values: list[Batch]) -> tuple[Iterable[Output], bool]:
        out = []
        for batch in values:
            if self.learner is None:
                self.learner = ShardLearner(self.config, shard=batch.shard)
            out.append(self.learner.process(batch))
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Output], bool]:
        if self.learner is None:
            return [], StatefulBatchLogic.RETAIN
        return [self.learner.finish()], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.learner, protocol=5)


def make_flow(source: Source[Batch], sink: Sink[tuple[str, Output]], config: RunConfig,
              *, flow_id: str = "riverlake") -> Dataflow:
    """The dataflow graph with its parts injected (production, replay and tests share it)."""
    flow = Dataflow(flow_id)
    batches = op.input("source", flow, source)
    keyed = op.key_on("shard", batches, lambda b: str(b.shard))
    valid = op.map_value("validate", keyed, validate_batch)
    out = op.stateful_batch("learn", valid, lambda resume: LearnLogic(config, resume))
    op.output("lake", out, sink)
    return flow


def _names(value: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


def run_id_for(identity: dict[str, Any]) -> str:
    """A run id that is the same exactly when the replay's inputs and settings are."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return f"replay-{digest}"


@dataclass(frozen=True)
class ReplayJob:
    """The parts of a replay dataflow, before they are wired together."""

    source: ReplaySource
    sink: DeltaSink
    config: RunConfig

    @property
    def run_id(self) -> str:
        return self.config.run_id

    def flow(self) -> Dataflow:
        return make_flow(self.source, self.sink, self.config, flow_id="riverlake-replay")


def replay_job(
    lake: str = "lakehouse",
    model: str | Sequence[str] = "linear",
    *,
    run_id: str | None = None,
    events_version: int | None = None,
    labels_version: int | None = None,
    shards: int = 1,
    batch_size: int = 2_000,
    seed: int = 42,
    checkpoint_every: int = 10_000,
    window: str = "1d",
    grace: str = "1d",
    threshold: float = 0.5,
    exclude: str | Sequence[str] = (),
    categorical: str | Sequence[str] = (),
    flush_rows: int = 25_000,
    flush_seconds: float = 5.0,
) -> ReplayJob:
    """Resolve the settings of a replay; see :func:`build_flow` for what they mean."""
    models = _names(model)
    pin = pin_versions(lake, events_version=events_version, labels_version=labels_version)
    featurizer = {"exclude": sorted(_names(exclude)), "categorical": sorted(_names(categorical))}
    window_us, grace_us = parse_duration_us(window), parse_duration_us(grace)
    if run_id is None:
        run_id = run_id_for({
            "events": pin.events, "labels": pin.labels, "models": models, "seed": seed,
            "checkpoint_every": checkpoint_every, "window_us": window_us, "grace_us": grace_us,
            "threshold": threshold, "featurizer": featurizer, "shards": shards,
        })
    config = RunConfig(run_id=run_id, models=models, seed=seed, checkpoint_every=checkpoint_every,
                       window_us=window_us, grace_us=grace_us, threshold=threshold,
                       featurizer=featurizer)
    source = ReplaySource(lake, pin=pin, shards=shards, batch_size=batch_size)
    sink = DeltaSink(lake, run_id=run_id, partitions=shards, flush_rows=flush_rows,
                     flush_seconds=flush_seconds)
    return ReplayJob(source, sink, config)


def build_flow(lake: str = "lakehouse", model: str | Sequence[str] = "linear", **settings: Any) -> Dataflow:
    """Replay the lake's ``events`` + ``labels`` through the models named in ``model``.

    ``model`` is one spec name or several separated by commas; the first is the
    champion, the others are challengers that predict and learn in shadow. The
    replay reads ``events_version``/``labels_version`` (latest when omitted). With
    no ``run_id``, one is derived from the versions and settings, so running the
    same replay twice writes nothing the second time.

    Other settings: ``shards`` (independent model copies, keyed by a stable hash
    of the entity key; spread over workers), ``batch_size`` (items per source
    batch), ``seed``, ``checkpoint_every`` (learns between model checkpoints),
    ``window``/``grace`` (prequential metric windows and how long after a
    window's end late labels still count, e.g. ``"1d"``), ``threshold``
    (decision threshold on the score), ``exclude``/``categorical`` (payload
    fields to drop / to one-hot even when numeric), ``flush_rows``/``flush_seconds``
    (Delta commit sizing).
    """
    return replay_job(lake, model, **settings).flow()


def run_replay(lake: str = "lakehouse", model: str | Sequence[str] = "linear", **settings: Any) -> str:
    """Run a replay to the end in this process (one worker); returns its run id."""
    from bytewax.testing import run_main

    job = replay_job(lake, model, **settings)
    run_main(job.flow())
    return job.run_id


ENV = {
    "RIVERLAKE_LAKE": ("lake", str, "lakehouse"),
    "RIVERLAKE_MODELS": ("model", str, "linear"),
    "RIVERLAKE_RUN_ID": ("run_id", str, None),
    "RIVERLAKE_EVENTS_VERSION": ("events_version", int, None),
    "RIVERLAKE_LABELS_VERSION": ("labels_version", int, None),
    "RIVERLAKE_SHARDS": ("shards", int, 1),
    "RIVERLAKE_BATCH_SIZE": ("batch_size", int, 2_000),
    "RIVERLAKE_SEED": ("seed", int, 42),
    "RIVERLAKE_CHECKPOINT_EVERY": ("checkpoint_every", int, 10_000),
    "RIVERLAKE_WINDOW": ("window", str, "1d"),
    "RIVERLAKE_GRACE": ("grace", str, "1d"),
    "RIVERLAKE_EXCLUDE": ("exclude", str, ""),
}
"""Environment variable → (``build_flow`` argument, type, default)."""


def defaults_from_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``build_flow`` keyword arguments from ``RIVERLAKE_*`` variables (see :data:`ENV`)."""
    environ = os.environ if environ is None else environ
    kwargs: dict[str, Any] = {}
    for var, (arg, type_, default) in ENV.items():
        raw = environ.get(var)
        if raw is None or raw == "":
            if default is not None:
                kwargs[arg] = default
            continue
        try:
            kwargs[arg] = type_(raw)
        except ValueError:
            raise ValueError(f"{var} must be {type_.__name__}, got {raw!r}") from None
    return kwargs


def __getattr__(name: str) -> Any:
    # `python -m bytewax.run dataflows.online:flow` builds the flow on first access, not at import.
    if name == "flow":
        return build_flow(**defaults_from_env())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
