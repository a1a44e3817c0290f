"""The online-learning dataflow: replay (or live) → validate → featurize → predict → learn → lake.

Run it with Bytewax::

    python -m bytewax.run dataflows.online:flow                       # settings from env
    python -m bytewax.run "dataflows.online:build_flow(lake='lakehouse', model='linear,tree')"

``flow`` reads its settings from environment variables (see :func:`defaults_from_env`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from dataflows.control import PromotionControl
from dataflows.defaults import AUTO, History, SettingsError, announce, choose
from dataflows.gc_tuning import tune_gc
from dataflows.items import Batch, Output
from dataflows.learner import RunConfig, ShardLearner, resume_learner, seal_learner
from dataflows.replay import pin_versions
from dataflows.sinks import URGENT_TABLES, DeltaSink
from dataflows.sources import ReplaySource
from dataflows.validate import validate_batch
from lake import integrity
from lake.durations import parse_duration_us
from lake.entry import ArgumentParser, run_main
from lake.runs import RunIdentity, record_run
from monitoring.detectors import split_specs
from monitoring.stream import MonitorConfig


def check_resumed(snapshot: RunConfig, config: RunConfig) -> None:
    """Refuse a recovery snapshot taken by a run with another run id or other settings.

    >>> check_resumed(RunConfig(run_id="a", seed=1), RunConfig(run_id="a", seed=2))
    Traceback (most recent call last):
    ...
    ValueError: the recovery snapshot was taken by run 'a' with other settings (snapshot -> now: seed 1 -> 2); ...
    """
    if snapshot == config:
        return
    diff = [f"{f.name} {getattr(snapshot, f.name)!r} -> {getattr(config, f.name)!r}" for f in fields(RunConfig)
            if getattr(snapshot, f.name) != getattr(config, f.name)]
    raise ValueError(f"the recovery snapshot was taken by run {snapshot.run_id!r} with other settings "
                     f"(snapshot -> now: {'; '.join(diff[:4])}); resume with the same settings, or start "
                     "another run id with its own recovery folder")


class LearnLogic(StatefulBatchLogic[Batch, Output, tuple[str, bytes]]):
    """Bytewax wrapper of :class:`ShardLearner`; its snapshot is the pickled learner, sealed with an HMAC."""

    def __init__(self, config: RunConfig, resume: tuple[str, bytes] | None,
                 control: PromotionControl | None = None) -> None:
        self.config = config
        self.control = control
        self.learner: ShardLearner | None = resume_learner(resume, config)
        if self.learner is not None:
            check_resumed(self.learner.config, config)

    def on_batch(self, values: list[Batch]) -> tuple[Iterable[Output], bool]:
        out = []
        for batch in values:
            if self.learner is None:
                self.learner = ShardLearner(self.config, shard=batch.shard)
            if self.control is not None:
                champion = self.control.poll()
                if champion is not None:
                    self.learner.set_champion(champion)
            out.append(self.learner.process(batch))
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Output], bool]:
        if self.learner is None:
            return [], StatefulBatchLogic.RETAIN
        return [self.learner.finish()], StatefulBatchLogic.RETAIN

    def snapshot(self) -> tuple[str, bytes]:
        return seal_learner(self.learner, self.config)


def make_flow(source: Source[Batch], sink: Sink[tuple[str, Output]], config: RunConfig,
              *, flow_id: str = "riverlake", control_lake: str | None = None,
              control_interval_s: float = 2.0, extra_sinks: Sequence[Sink[Output]] = (),
              colocate: bool = False) -> Dataflow:
    """The dataflow graph with its parts injected (production, replay and tests share it).

    With ``control_lake``, the predict/learn step follows champion promotions recorded
    for this run in that lake's ``promotions`` table. With ``colocate``, each partition of
    ``source`` (a fixed-partitioned source) runs its shard's predict/learn step itself
    (:mod:`dataflows.colocated`): give ``sink`` the source's partition names and no batch
    crosses workers.
    """
    tune_gc()  # the process that builds the flow runs it: fewer full walks of the learner's state
    flow = Dataflow(flow_id)
    if colocate:
        from dataflows.colocated import ColocatedSource

        outputs = op.input("source", flow, ColocatedSource(source, config, control_lake=control_lake,
                                                            control_interval_s=control_interval_s))
        out = op.key_on("shard", outputs, lambda o: str(o.shard))
        op.output("lake", out, sink)
        if extra_sinks:
            for i, extra in enumerate(extra_sinks):
                op.output(f"extra-{i}", outputs, extra)
        return flow
    batches = op.input("source", flow, source)
    keyed = op.key_on("shard", batches, lambda b: str(b.shard))
    valid = op.map_value("validate", keyed, validate_batch)
    def builder(resume: bytes | None) -> LearnLogic:
        control = (PromotionControl(control_lake, config.run_id, interval_s=control_interval_s)
                   if control_lake is not None else None)
        return LearnLogic(config, resume, control)

    out = op.stateful_batch("learn", valid, builder)
    op.output("lake", out, sink)
    if extra_sinks:
        plain = op.key_rm("outputs", out)
        for i, extra in enumerate(extra_sinks):
            op.output(f"extra-{i}", plain, extra)
    return flow


def _names(value: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


def _specs(value: str | Sequence[str]) -> tuple[str, ...]:
    """Detector specs, split at commas outside parentheses (the grammar of ``watch=``)."""
    return tuple(split_specs(value))


@dataclass(frozen=True)
class ReplayJob:
    """The parts of a replay dataflow, before they are wired together."""

    source: ReplaySource
    sink: DeltaSink
    config: RunConfig
    lake: str
    control_interval_s: float = 2.0
    colocate: bool = False

    @property
    def run_id(self) -> str:
        return self.config.run_id

    def flow(self) -> Dataflow:
        return make_flow(self.source, self.sink, self.config, flow_id="riverlake-replay",
                         control_lake=self.lake, control_interval_s=self.control_interval_s,
                         colocate=self.colocate)


def replay_job(
    lake: str = "lakehouse",
    model: str | Sequence[str] = "linear",
    *,
    run_id: str | None = None,
    events_version: int | None = None,
    labels_version: int | None = None,
    shards: int = 1,
    batch_size: int | None = None,
    seed: int = 42,
    checkpoint_every: int = 10_000,
    window: str | None = AUTO,
    grace: str | None = AUTO,
    threshold: float = 0.5,
    exclude: str | Sequence[str] = (),
    categorical: str | Sequence[str] = (),
    flush_rows: int = 25_000,
    flush_seconds: float = 5.0,
    rate: float | None = None,
    control_interval_s: float = 2.0,
    label_ttl: str | None = AUTO,
    hash_fields: str | Sequence[str] = (),
    n_buckets: int = 2**20,
    drift: str | Sequence[str] = "adwin",
    stats_window: str | None = AUTO,
    lateness: str = "0s",
    anomaly: str | None = "zscore",
    watch: str | None = None,
    drift_action: str = "none",
    action_window: int | str = AUTO,
    colocate: bool = False,
    per_key: bool = False,
    max_key_models: int = 100_000,
    balance: bool = False,
) -> ReplayJob:
    """Resolve the settings of a replay; see :func:`build_flow` for what they mean."""
    integrity.key(create=True, lake=lake)  # before any work: made now if new, refused inside the lake
    models = _names(model)
    pin = pin_versions(lake, events_version=events_version, labels_version=labels_version)
    featurizer: dict[str, Any] = {"exclude": sorted(_names(exclude)), "categorical": sorted(_names(categorical))}
    if hash_fields:
        featurizer.update(hash_fields=sorted(_names(hash_fields)), n_buckets=n_buckets)
    if per_key:
        featurizer["shared_prior"] = False  # a key's features from its own events: shard-independent
    # Time-scale settings not given: from the pinned history (dataflows.defaults), printed below.
    chosen = choose(History.read(lake, events_version=pin.events, labels_version=pin.labels),
                    label_ttl=label_ttl, window=window, grace=grace, stats_window=stats_window,
                    action_window=action_window if drift_action not in (None, "", "none") else None)
    window_us, grace_us, ttl_us = (chosen[k].us for k in ("window", "grace", "label_ttl"))
    stats_us = chosen["stats_window"].us
    monitor = MonitorConfig.from_settings(stats_window=None if stats_us is None else f"{stats_us}us", lateness=lateness,
                                          anomaly=anomaly, watch=watch, drift_action=drift_action,
                                          action_window=chosen["action_window"].us if "action_window" in chosen
                                          else 5_000)
    source = ReplaySource(lake, pin=pin, shards=shards, batch_size=batch_size, rate=rate, balance=balance)
    # Label expiry runs per batch, so the batch size is part of what the run computes.
    identity = RunIdentity(kind="replay", lake=os.fspath(lake), events_version=pin.events,
                           labels_version=pin.labels, batch_size=source.batch_size, settings={
        "models": models, "seed": seed,
        "checkpoint_every": checkpoint_every, "window_us": window_us, "grace_us": grace_us,
        "threshold": threshold, "featurizer": featurizer, "shards": shards, "label_ttl_us": ttl_us,
        "drift": list(_specs(drift)), "monitor": monitor.identity(),
        **({"per_key": True, "max_key_models": max_key_models} if per_key else {}),
        **({"balance": True} if balance and shards > 1 else {}),
    })
    run_id = identity.run_id() if run_id is None else run_id
    record_run(lake, run_id, identity)  # another identity under this id is refused here, before any work
    source.run_id = run_id  # named in the progress lines on stderr
    config = RunConfig(run_id=run_id, models=models, seed=seed, checkpoint_every=checkpoint_every,
                       window_us=window_us, grace_us=grace_us, threshold=threshold,
                       featurizer=featurizer, label_ttl_us=ttl_us, drift_detectors=_specs(drift),
                       monitor=monitor, per_key=per_key, max_key_models=max_key_models)
    announce(run_id, pin, chosen.values())
    sink = DeltaSink(lake, run_id=run_id, partitions=shards, flush_rows=flush_rows,
                     flush_seconds=flush_seconds, part_names=source.list_parts() if colocate else None)
    return ReplayJob(source, sink, config, os.fspath(lake), control_interval_s, colocate)


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
    (Delta commit sizing), ``rate`` (pace the replay at this many items per second,
    for demos and live-like runs), ``control_interval_s`` (how often the running
    flow looks for a new champion in the lake's ``promotions`` table), ``label_ttl``
    (give up waiting for a label this long after its event, e.g. ``"7d"``; the event
    is recorded in ``expired``; ``None`` waits forever), ``hash_fields``/``n_buckets``
    (text fields such as a URL split into tokens hashed into ``n_buckets``
    indicators: bounded memory on feature-evolving streams), ``drift`` (detectors run
    on every model's error stream, alarms in ``drift_events``; ``""`` for none).

    ``window``, ``grace``, ``label_ttl`` and ``stats_window`` default to ``"auto"``: chosen
    from the pinned history (:mod:`dataflows.defaults`) and printed on stderr with their
    reasons when the replay is built, with the run id; every shard prints progress lines
    (events and items done, rate, ETA) and, at the end, what did not reach learning
    (:mod:`dataflows.discards`, also a ``run_summaries`` row; a warning past the thresholds).

    Monitoring (:mod:`monitoring.stream`): ``stats_window`` (event-time tumbling windows
    of feature statistics in ``window_stats``, e.g. ``"15s"``; ``None`` for none) closed
    by a watermark ``lateness`` behind the latest event time (later events go to
    ``late_events``), ``anomaly`` (scorer spec, e.g. ``"zscore"`` or ``"hst"``: a score
    per prediction, events above its threshold in ``anomalies``; ``None`` for none),
    ``watch`` (detectors on the champion's label-free signals, e.g.
    ``"new_features=page-hinkley; feature:dep_delay=adwin"``), ``drift_action``
    (``"reset"`` or ``"retrain"`` a model when its error detector alarms, recorded in
    ``drift_actions``; at most once per ``action_window`` learns, retraining from the
    last ``action_window`` labelled events).

    ``colocate``: run each shard's predict/learn step inside its source partition, so a
    shard is read, learned and written on one worker (multi-worker and multi-process runs;
    same rows, see :mod:`dataflows.colocated`).

    ``per_key``: one model per entity key (per route, carrier, host; :mod:`dataflows.perkey`)
    instead of one per shard, at most ``max_key_models`` keys per shard and model (the keys
    that learned least recently are forgotten). A key's model and features then depend on
    its own events only, so any number of shards, workers or processes writes the same
    predictions and learn log (as long as no key is forgotten and no label expires: both
    are decided per shard). ``balance``: place keys on shards by their event counts in the
    replayed version (:func:`dataflows.replay.balanced_shards`) instead of by CRC-32, so the
    shards, and the processes holding them, get about the same work; with ``per_key`` it
    changes no prediction.
    """
    return replay_job(lake, model, **settings).flow()


def recovery_dir(lake: str | os.PathLike[str], run_id: str) -> Path:
    """Where a run keeps its Bytewax recovery state, one folder per run: ``LAKE/_recovery/RUN_ID``.

    Bytewax needs a local folder, so for an object-store lake (``s3://...``) it is under
    ``$RIVERLAKE_STATE_DIR`` instead (see :func:`lake.storage.state_dir`).
    """
    from lake.storage import state_dir

    return state_dir(lake, "_recovery", run_id)


@contextmanager
def run_lock(db_dir: Path, run_id: str) -> Iterator[None]:
    """Hold ``DB_DIR.lock`` (beside the recovery folder, not in it) for the run; the OS drops it when the process
    ends, also by kill -9. A second process of the same run on this machine is refused before any work
    (:class:`~lake.errors.RunLockedError`); across machines, the writers' fencing stops it at commit time."""
    import fcntl

    from lake.errors import RunLockedError

    path = db_dir.parent / f"{db_dir.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(run_id, str(path)) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def run_replay(lake: str = "lakehouse", model: str | Sequence[str] = "linear", *, recovery: bool = True,
               snapshot_s: float = 10.0, **settings: Any) -> str:
    """Run a replay to the end in this process (one worker, on Bytewax's production runner ``cli_main``, as
    ``python -m bytewax.run`` runs it); returns its run id.

    With ``recovery`` (the default), Bytewax snapshots the source position, the
    models and the pending state every ``snapshot_s`` seconds into
    ``LAKE/_recovery/RUN_ID`` (created on first use). After a crash, the same call
    resumes where the last snapshot was taken; rows the crashed run had already
    committed are recognised by their ``seq`` and not written again. Before it
    resumes, every snapshot there is checked to be plain data (Bytewax unpickles
    them; :func:`lake.integrity.check_recovery`), and the learner state in them
    carries an HMAC with the riverlake key: state written by anyone without the
    key is refused, never unpickled.
    """
    from datetime import timedelta

    from bytewax.recovery import RecoveryConfig, init_db_dir
    from bytewax.run import cli_main  # Bytewax's production runner, as under python -m bytewax.run

    if snapshot_s <= 0:
        raise ValueError(f"snapshot_s must be > 0, got {snapshot_s!r}")
    job = replay_job(lake, model, **settings)
    config = None
    with ExitStack() as held:
        if recovery:
            db_dir = recovery_dir(lake, job.run_id)
            # one process per run and recovery folder: a second one would corrupt the snapshots both resume from
            held.enter_context(run_lock(db_dir, job.run_id))
            if not db_dir.exists():
                db_dir.mkdir(parents=True)
                init_db_dir(db_dir, 1)
            integrity.check_recovery(db_dir)
            config = RecoveryConfig(str(db_dir))
        cli_main(job.flow(), workers_per_process=1, epoch_interval=timedelta(seconds=snapshot_s),
                 recovery_config=config)
    return job.run_id


def main(argv: list[str] | None = None) -> int:
    """``python -m dataflows.online``: replay a lake with recovery on (see :func:`run_replay`)."""
    import logging

    parser = ArgumentParser(prog="python -m dataflows.online", description=run_replay.__doc__.split("\n")[0])
    parser.add_argument("--lake", default=os.environ.get("RIVERLAKE_LAKE", "lakehouse"))
    parser.add_argument("--model", default="linear", help="model specs, champion first (default linear)")
    parser.add_argument("--run-id", default=None,
                        help="default: derived from the lake, the versions read and the settings")
    parser.add_argument("--events-version", type=int, default=None, help="Delta version of events (default latest)")
    parser.add_argument("--labels-version", type=int, default=None, help="Delta version of labels (default latest)")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="items per replay batch (default 10,000; 2,000 when paced with --rate)")
    parser.add_argument("--checkpoint-every", type=int, default=10_000)
    parser.add_argument("--window", default=AUTO,
                        help="prequential metric windows, e.g. 1d (default: from the data, printed at the start)")
    parser.add_argument("--grace", default=AUTO,
                        help="how long late labels still count (default: the longest observed label delay)")
    parser.add_argument("--label-ttl", default=AUTO,
                        help="give up waiting for a label this long after its event; 'none': wait forever "
                             "(default: the 99.9th percentile of the observed label delays)")
    parser.add_argument("--exclude", default="")
    parser.add_argument("--hash-fields", default="", help="text fields to tokenize and hash (e.g. url)")
    parser.add_argument("--n-buckets", type=int, default=2**20,
                        help="hash space of --hash-fields tokens: bounds the model's weights (default 2^20)")
    parser.add_argument("--rate", type=float, default=None, help="pace the replay (items per second)")
    parser.add_argument("--snapshot-s", type=float, default=10.0, help="seconds between recovery snapshots")
    parser.add_argument("--no-recovery", action="store_true", help="do not keep recovery state")
    parser.add_argument("--drift", default="adwin", help="detectors on every model's error stream ('' for none)")
    parser.add_argument("--watch", default=None,
                        help="label-free detectors on the champion, e.g. 'feature:x=adwin; new_features=adwin'")
    parser.add_argument("--stats-window", default=AUTO,
                        help="window statistics' tumbling window ('none': off; default: from the data)")
    parser.add_argument("--lateness", default="0s", help="watermark lag behind the latest event time")
    parser.add_argument("--anomaly", default="zscore", help="anomaly scorer spec: zscore, hst, ... ('none': off)")
    parser.add_argument("--drift-action", default="none", choices=["none", "reset", "retrain"],
                        help="what to do with a model whose error detector alarmed")
    parser.add_argument("--action-window", default=AUTO,
                        help="recent labelled events to retrain from; least learns between two actions "
                             "(default: a tenth of the labels, 100..5,000)")
    parser.add_argument("--colocate", action="store_true",
                        help="learn each shard inside its source partition (multi-worker runs: nothing crosses)")
    parser.add_argument("--per-key", action="store_true",
                        help="one model per event key (route, carrier, host) instead of one per shard")
    parser.add_argument("--balance", action="store_true",
                        help="place keys on shards by event counts (even shards), not CRC-32")
    parser.add_argument("--max-key-models", type=int, default=100_000,
                        help="--per-key: keys with a model kept per shard and model (default 100,000)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from lake.errors import RunIdentityError

    try:
        run_id = run_replay(args.lake, args.model, recovery=not args.no_recovery, snapshot_s=args.snapshot_s,
                            run_id=args.run_id, events_version=args.events_version, labels_version=args.labels_version,
                            shards=args.shards, batch_size=args.batch_size,
                            checkpoint_every=args.checkpoint_every, window=args.window, grace=args.grace,
                            label_ttl=args.label_ttl, exclude=args.exclude,
                            rate=args.rate, hash_fields=args.hash_fields, n_buckets=args.n_buckets,
                            drift=args.drift, watch=args.watch,
                            stats_window=args.stats_window, lateness=args.lateness, anomaly=args.anomaly,
                            drift_action=args.drift_action, action_window=args.action_window,
                            colocate=args.colocate, per_key=args.per_key, max_key_models=args.max_key_models,
                            balance=args.balance)
    except (RunIdentityError, SettingsError) as ex:  # refused before any work: one line
        print(f"error: {ex}", file=sys.stderr)
        return 2
    print(run_id)
    return 0


LIVE_SWITCH_INTERVAL_S = 0.0005
"""The interpreter's thread switch interval in a live run (Python's default is 5 ms)."""


def build_live_flow(
    lake: str = "lakehouse",
    model: str | Sequence[str] = "linear",
    *,
    brokers: str,
    topic: str,
    predictions_topic: str | None = None,
    run_id: str | None = None,
    stop_at_end: bool = False,
    record: bool = True,
    kafka_config: dict[str, Any] | None = None,
    batch_size: int = 1_000,
    seed: int = 42,
    checkpoint_every: int = 10_000,
    window: str = "1d",
    grace: str = "1d",
    exclude: str | Sequence[str] = (),
    hash_fields: str | Sequence[str] = (),
    drift: str | Sequence[str] = "adwin",
    label_ttl: str | None = "7d",
    flush_rows: int = 25_000,
    flush_seconds: float = 5.0,
    stats_window: str | None = "1m",
    lateness: str = "0s",
    anomaly: str | None = "zscore",
    watch: str | None = None,
    drift_action: str = "none",
    action_window: int = 5_000,
    per_key: bool = False,
    max_key_models: int = 100_000,
    colocate: bool = False,
    trace: str | None = None,
) -> Dataflow:
    """The same dataflow fed live from Kafka (see :mod:`dataflows.kafka`).

    Events and labels come from ``topic`` (one shard per partition); everything the
    dataflow decides goes to the lake, and served predictions also to
    ``predictions_topic`` when given. With ``record`` (the default) the events and
    labels received are appended to the lake's ``events``/``labels``, exactly once per
    Kafka offset, so the live stream can be replayed later. ``kafka_config`` holds extra
    confluent-kafka settings (SASL, TLS, ...) for the consumer and the producer. With
    ``colocate``, each Kafka partition's predict/learn step runs beside its consumer (and
    its lake writer), so on a cluster no batch crosses workers (:mod:`dataflows.colocated`).
    With no ``run_id``, one is derived from the lake, the topic and its partitions and the
    settings (``live-...``), so two topics written into one lake never share positions; an
    explicit ``run_id`` first used with another topic or settings is refused (:mod:`lake.runs`).
    ``trace`` (a file prefix) records when each batch was consumed, recorded, scored and
    sent (:mod:`dataflows.trace`, read by ``python -m dataflows.bench_live``).
    Run it with recovery so a restart resumes at the stored offsets::

        python -m bytewax.run "dataflows.online:build_live_flow(lake='lakehouse', \\
            brokers='localhost:9092', topic='events', predictions_topic='predictions')" \\
            -r lakehouse/_recovery/live -s 10 -b 0
    """
    from dataflows.kafka import KafkaPredictionsSink, KafkaSource

    integrity.key(create=True, lake=lake)  # before any work: made now if new, refused inside the lake
    # The lake's commit threads hold the GIL in turns of the switch interval; each time the
    # prediction path releases it (a poll, a produce) it may wait a whole turn: 5 ms by default.
    sys.setswitchinterval(min(sys.getswitchinterval(), LIVE_SWITCH_INTERVAL_S))
    source = KafkaSource(brokers, topic, batch_size=batch_size, stop_at_end=stop_at_end,
                         lake=os.fspath(lake) if record else None, flush_rows=flush_rows,
                         flush_seconds=flush_seconds, config=kafka_config, trace=trace)
    shards = len(source.partitions())
    featurizer: dict[str, Any] = {"exclude": sorted(_names(exclude))}
    if hash_fields:
        featurizer["hash_fields"] = sorted(_names(hash_fields))
    if per_key:
        featurizer["shared_prior"] = False
    ttl_us = None if label_ttl in (None, "", "none") else parse_duration_us(label_ttl)
    window_us, grace_us = parse_duration_us(window), parse_duration_us(grace)
    monitor = MonitorConfig.from_settings(stats_window=stats_window, lateness=lateness, anomaly=anomaly,
                                          watch=watch, drift_action=drift_action, action_window=action_window)
    identity = RunIdentity(kind="live", lake=os.fspath(lake), topic=topic, partitions=tuple(source.partitions()),
                           batch_size=batch_size, settings={
        "models": _names(model), "seed": seed, "checkpoint_every": checkpoint_every, "window_us": window_us,
        "grace_us": grace_us, "featurizer": featurizer, "label_ttl_us": ttl_us, "drift": list(_specs(drift)),
        "monitor": monitor.identity(), **({"per_key": True, "max_key_models": max_key_models} if per_key else {}),
    })
    run_id = identity.run_id() if run_id is None else run_id
    record_run(lake, run_id, identity)
    config = RunConfig(run_id=run_id, models=_names(model), seed=seed, checkpoint_every=checkpoint_every,
                       window_us=window_us, grace_us=grace_us,
                       featurizer=featurizer, label_ttl_us=ttl_us, drift_detectors=_specs(drift),
                       monitor=monitor, per_key=per_key, max_key_models=max_key_models)
    sink = DeltaSink(lake, run_id=run_id, partitions=shards, flush_rows=flush_rows, flush_seconds=flush_seconds,
                     urgent_tables=URGENT_TABLES, part_names=source.list_parts() if colocate else None,
                     snapshot_rows=True)
    extra = ([KafkaPredictionsSink(brokers, predictions_topic, config=kafka_config, trace=trace)]
             if predictions_topic else [])
    return make_flow(source, sink, config, flow_id="riverlake-live", control_lake=os.fspath(lake),
                     extra_sinks=extra, colocate=colocate)


def _flag(text: str) -> bool:
    """A boolean environment setting: 1/true/yes/on or 0/false/no/off."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected one of 1/true/yes/on or 0/false/no/off, got {text!r}")


ENV = {
    "RIVERLAKE_LAKE": ("lake", str, "lakehouse"),
    "RIVERLAKE_MODELS": ("model", str, "linear"),
    "RIVERLAKE_RUN_ID": ("run_id", str, None),
    "RIVERLAKE_EVENTS_VERSION": ("events_version", int, None),
    "RIVERLAKE_LABELS_VERSION": ("labels_version", int, None),
    "RIVERLAKE_SHARDS": ("shards", int, 1),
    "RIVERLAKE_BATCH_SIZE": ("batch_size", int, None),
    "RIVERLAKE_SEED": ("seed", int, 42),
    "RIVERLAKE_CHECKPOINT_EVERY": ("checkpoint_every", int, 10_000),
    "RIVERLAKE_WINDOW": ("window", str, AUTO),
    "RIVERLAKE_GRACE": ("grace", str, AUTO),
    "RIVERLAKE_LABEL_TTL": ("label_ttl", str, AUTO),
    "RIVERLAKE_STATS_WINDOW": ("stats_window", str, AUTO),
    "RIVERLAKE_EXCLUDE": ("exclude", str, ""),
    "RIVERLAKE_HASH_FIELDS": ("hash_fields", str, ""),
    "RIVERLAKE_PER_KEY": ("per_key", _flag, False),
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
            kind = "a boolean (1/0, true/false, yes/no, on/off)" if type_ is _flag else type_.__name__
            raise ValueError(f"{var} must be {kind}, got {raw!r}") from None
    return kwargs


def __getattr__(name: str) -> Any:
    # `python -m bytewax.run dataflows.online:flow` builds the flow on first access, not at import.
    if name == "flow":
        return build_flow(**defaults_from_env())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    run_main(main)
